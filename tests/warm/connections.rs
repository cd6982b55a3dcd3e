//! Connections: TLS as sslmode asks, and recovery after the server drops them.

use end_to_end::{test_cache, TestDb};
use shared::db::{Database, DatabaseSettings};

#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    let db = TestDb::create().await;
    let settings = DatabaseSettings::parse(&TestDb::url_of(&db.name, "require")).unwrap();
    let client = settings
        .connect()
        .await
        .expect("TLS connection (is ssl on in postgresql.conf?)");
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "connection is encrypted");

    let settings = DatabaseSettings::parse(&TestDb::url_of(&db.name, "disable")).unwrap();
    let client = settings.connect().await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "sslmode=disable stays plain");
}

#[tokio::test]
async fn sslmode_verify_full_refuses_a_certificate_it_cannot_trust() {
    let db = TestDb::create().await;
    // The local server's certificate is self-signed, so full verification must refuse it.
    let settings = DatabaseSettings::parse(&TestDb::url_of(&db.name, "verify-full")).unwrap();
    let error = settings.connect().await.unwrap_err().to_string();
    assert!(error.starts_with("Postgres: connecting"), "{error}");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test]
async fn the_kept_postgres_connection_is_replaced_after_the_server_closes_it() {
    let db = TestDb::create().await;
    let database: Database = db.database();
    let first = database.client().await.unwrap();
    let pid: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    db.client()
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    // The server's notice arrives on its own time; a connection used within the last second
    // is trusted without a check (the API's retry covers that window, tests/http).
    for _ in 0..200 {
        if first.is_closed() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let second = database.client().await.expect("reconnects");
    let new_pid: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(pid, new_pid);
    let again = database.client().await.unwrap();
    let same_pid: i32 = again
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(new_pid, same_pid, "a live connection is kept");
}

#[tokio::test]
async fn the_redis_connection_comes_back_after_the_server_drops_it() {
    let cache = test_cache(100);
    cache.ping().await.unwrap();
    let mut connection = cache.connection();
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut admin = end_to_end::redis_connection(&end_to_end::redis_url()).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);

    // The command in flight when the drop is noticed may fail; the next ones succeed.
    let _ = cache.ping().await;
    cache.ping().await.expect("reconnected");
    let renewed = cache.renew(&["absent".to_string()]).await.unwrap();
    assert_eq!(renewed, vec![false]);
}
