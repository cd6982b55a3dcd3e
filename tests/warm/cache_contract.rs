//! What the app reads: the key, the exact value, the TTL, renewal on read and on re-warm.

use end_to_end::{decode_data_url, test_cache, warm_everything, TestDb};
use redis::AsyncCommands;
use shared::kind::Kind;
use shared::qr::QrSettings;
use shared::warm::{warm, WarmRequest};

async fn tokens(db: &TestDb, kind: Kind) -> Vec<(String, String)> {
    let client = db.client().await;
    let sql = format!(
        "SELECT id::text, qr_code_token FROM {} WHERE qr_code_token IS NOT NULL ORDER BY 1",
        kind.table()
    );
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn every_row_gets_the_apps_key_and_a_png_that_decodes_to_its_token() {
    let db = TestDb::create().await;
    db.seed(40, 12).await;
    // A row without a token gets one in the app's format, then its image.
    db.client()
        .await
        .batch_execute(
            "UPDATE students SET qr_code_token = NULL WHERE registration_no = '2021000000'",
        )
        .await
        .unwrap();
    let cache = test_cache(3600);

    let summary = warm_everything(&db, &cache).await;
    assert_eq!(summary.kinds[0].minted, 1);
    assert_eq!(summary.kinds[0].total, 40);
    assert_eq!(summary.kinds[0].rendered, 40);
    assert_eq!(summary.kinds[1].cached, 12);
    assert_eq!(summary.failed(), 0);

    let mut redis = cache.connection();
    for kind in Kind::ALL {
        for (_, token) in tokens(&db, kind).await {
            let key = cache.settings().key(&token);
            let value: String = redis.get(&key).await.unwrap();
            assert_eq!(decode_data_url(&value), token, "{key}");
            let ttl: i64 = redis.ttl(&key).await.unwrap();
            assert!((3590..=3600).contains(&ttl), "{key} TTL {ttl}");
        }
    }
    assert_eq!(cache.count_entries().await.unwrap(), 52);
}

#[tokio::test]
async fn reads_renew_the_ttl_with_getex() {
    let db = TestDb::create().await;
    db.seed(3, 0).await;
    let cache = test_cache(1000);
    warm_everything(&db, &cache).await;
    let (_, token) = tokens(&db, Kind::Students).await.remove(0);
    let key = cache.settings().key(&token);
    let mut redis = cache.connection();
    let _: () = redis.expire(&key, 5).await.unwrap();

    let value = cache.get_renewing(&key).await.unwrap().expect("cached");
    assert_eq!(decode_data_url(&value), token);
    let ttl: i64 = redis.ttl(&key).await.unwrap();
    assert!(ttl > 990, "TTL renewed to {ttl}");
    assert_eq!(cache.get_renewing("no-such-key").await.unwrap(), None);
}

#[tokio::test]
async fn a_rewarm_renews_unchanged_entries_without_rendering_and_renders_changed_tokens() {
    let db = TestDb::create().await;
    db.seed(20, 4).await;
    let cache = test_cache(1000);
    let request = WarmRequest::default();
    warm(
        &db.database(),
        &cache,
        &QrSettings::default(),
        None,
        &request,
        &(),
    )
    .await
    .unwrap();

    let students = tokens(&db, Kind::Students).await;
    let mut redis = cache.connection();
    // A stand-in value proves the re-warm neither re-renders nor re-sends what is cached.
    let marked = cache.settings().key(&students[1].1);
    let _: () = redis.set_ex(&marked, "marker", 30).await.unwrap();
    let (changed_id, old_token) = students[0].clone();
    let new_token = format!("{old_token}x");
    db.client()
        .await
        .execute(
            "UPDATE students SET qr_code_token = $1 WHERE id = $2::text::uuid",
            &[&new_token, &changed_id],
        )
        .await
        .unwrap();

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
    assert_eq!((summary.rendered(), summary.renewed()), (1, 23));
    let value: String = redis.get(cache.settings().key(&new_token)).await.unwrap();
    assert_eq!(decode_data_url(&value), new_token);
    // The old entry is left to expire, never deleted.
    let old: Option<String> = redis.get(cache.settings().key(&old_token)).await.unwrap();
    assert!(old.is_some());
    let marker: String = redis.get(&marked).await.unwrap();
    assert_eq!(marker, "marker");
    let ttl: i64 = redis.ttl(&marked).await.unwrap();
    assert!(ttl > 990, "renewed to the configured TTL, got {ttl}");

    let forced = WarmRequest {
        force: true,
        ..WarmRequest::default()
    };
    let summary = warm(
        &db.database(),
        &cache,
        &QrSettings::default(),
        None,
        &forced,
        &(),
    )
    .await
    .unwrap();
    assert_eq!((summary.rendered(), summary.renewed()), (24, 0));
    let value: String = redis.get(&marked).await.unwrap();
    assert_eq!(decode_data_url(&value), students[1].1);
}

#[tokio::test]
async fn ids_and_kinds_limit_an_on_demand_warm() {
    let db = TestDb::create().await;
    db.seed(10, 3).await;
    let cache = test_cache(1000);
    let students = tokens(&db, Kind::Students).await;
    let payload = serde_json::json!({"kinds": ["students"], "ids": [students[2].0, students[5].0]});
    let request = WarmRequest::from_event(&payload).unwrap();
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
    assert_eq!(summary.kinds.len(), 1);
    assert_eq!(summary.kinds[0].rendered, 2);
    assert_eq!(cache.count_entries().await.unwrap(), 2);
    let value: Option<String> = cache
        .connection()
        .get(cache.settings().key(&students[5].1))
        .await
        .unwrap();
    assert_eq!(decode_data_url(&value.unwrap()), students[5].1);
}

#[tokio::test]
async fn a_token_no_qr_code_can_hold_is_reported_and_the_rest_are_cached() {
    let db = TestDb::create().await;
    db.seed(5, 0).await;
    let huge = "x".repeat(4000);
    db.client()
        .await
        .execute(
            "UPDATE students SET qr_code_token = $1 WHERE registration_no = '2022000001'",
            &[&huge],
        )
        .await
        .unwrap();
    let cache = test_cache(1000);
    let failed = warm(
        &db.database(),
        &cache,
        &QrSettings::default(),
        None,
        &WarmRequest::default(),
        &(),
    )
    .await
    .unwrap_err();
    assert_eq!(failed.summary.kinds[0].cached, 4);
    assert_eq!(failed.summary.failed(), 1);
    assert!(
        failed.summary.kinds[0].failures[0]
            .reason
            .contains("too long"),
        "{:?}",
        failed.summary.kinds[0].failures
    );
    assert!(
        failed
            .to_string()
            .contains("1 QR images could not be cached"),
        "{failed}"
    );
    assert_eq!(cache.count_entries().await.unwrap(), 4);
}
