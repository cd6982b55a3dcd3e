//! Through a PgBouncer pooler in transaction mode, which cannot keep named prepared statements
//! across transactions: the warmer must use none.

use end_to_end::{test_cache, PgBouncer, TestDb};
use shared::db::{Database, DatabaseSettings};
use shared::qr::QrSettings;
use shared::warm::{warm, WarmRequest};

#[tokio::test]
async fn the_warmer_runs_through_pgbouncer_in_transaction_mode() {
    let db = TestDb::create().await;
    db.seed(600, 10).await;
    let bouncer = PgBouncer::start();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        bouncer.port, db.name
    );
    let database = Database::new(DatabaseSettings::parse(&url).unwrap());
    // The pooler forgets prepared statements between transactions, as a busy one does.
    let client = database.client().await.unwrap();
    let statement = client.prepare("SELECT 1").await.unwrap();
    assert!(
        client.query(&statement, &[]).await.is_err(),
        "a named prepared statement must not survive here"
    );
    drop(client);

    let cache = test_cache(600);
    // Twice: the second run reuses the kept connection, whose server side has changed hands.
    for expected_rendered in [610, 0] {
        let summary = warm(
            &database,
            &cache,
            &QrSettings::default(),
            None,
            &WarmRequest::default(),
            &(),
        )
        .await
        .unwrap();
        assert_eq!(summary.cached(), 610);
        assert_eq!(summary.rendered(), expected_rendered);
    }
}
