//! Sharded runs split the rows so that together they cover each exactly once.

use end_to_end::{test_cache, TestDb};
use shared::db::Shard;
use shared::qr::QrSettings;
use shared::warm::{warm, WarmRequest};

#[tokio::test]
async fn shards_cover_every_row_exactly_once() {
    let db = TestDb::create().await;
    db.seed(150, 20).await;
    let cache = test_cache(1000);
    let mut total = 0;
    for index in 0..3 {
        let mut request = WarmRequest::default();
        request.filter.shard = Some(Shard::new(index, 3).unwrap());
        let summary = warm(
            &db.database(),
            &cache,
            &QrSettings::default(),
            None,
            &request,
            &(),
        )
        .await
        .unwrap();
        // A row seen by an earlier shard would show up here as renewed.
        assert_eq!(
            summary.renewed(),
            0,
            "shard {index} overlaps an earlier one"
        );
        assert!(
            summary.rendered() > 20,
            "shard {index} got {} rows",
            summary.rendered()
        );
        total += summary.rendered();
    }
    assert_eq!(total, 170);
    assert_eq!(cache.count_entries().await.unwrap(), 170);
}
