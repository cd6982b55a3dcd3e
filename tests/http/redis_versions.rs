//! The API on the Redis versions it meets: 6.2 (the oldest with GETEX, and what many managed
//! caches still run) and 7. Every route that reads Redis answers the same on both.

use end_to_end::{test_cache_at, RedisServer, REDIS_6_2_SERVER};

use crate::support::*;

async fn server_version(server: &RedisServer) -> String {
    let mut connection = end_to_end::redis_connection(&server.url()).await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn routes_answer_on(binary: &str, version: &str) {
    let server = RedisServer::start_binary(binary, &[]);
    assert!(server_version(&server).await.starts_with(version));
    let mut world = World::new().await;
    world.with(None, Some(test_cache_at(&server.url(), 3600)));
    let token = admin();
    let (id, qr_token) = world.student(1).await;
    let path = format!("/qr/students/{id}");

    let miss = world.get(&path, &token).await;
    assert_eq!(
        (miss.status().as_u16(), header(&miss, "x-cache")),
        (200, Some("miss"))
    );
    let hit = world.get(&path, &token).await;
    assert_eq!(
        (hit.status().as_u16(), header(&hit, "x-cache")),
        (200, Some("hit"))
    );
    assert_eq!(end_to_end::decode_png(&body_bytes(&hit)), qr_token);

    let student = session(&id, "STUDENT");
    let rotating = world.get("/students/me/qr", &student).await;
    assert_eq!(rotating.status(), 200);
    assert_eq!(body_json(&rotating)["success"], true);

    let stats = world.get("/cache/stats", &token).await;
    assert_eq!(stats.status(), 200, "{:?}", body_json(&stats));
    let stats = body_json(&stats);
    assert_eq!(stats["cached_qr_images"], 1);
    assert_eq!(
        (stats["api_hits"].as_u64(), stats["api_misses"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(stats["redis_used_memory_bytes"].as_u64().unwrap() > 0);
    assert!(stats["server_hits"].as_u64().unwrap() >= 1);

    assert_eq!(world.get("/health", "").await.status(), 200);
}

#[tokio::test]
async fn every_route_answers_on_redis_6_2() {
    routes_answer_on(REDIS_6_2_SERVER, "6.2.").await;
}

#[tokio::test]
async fn every_route_answers_on_redis_7() {
    routes_answer_on("redis-server", "7.").await;
}
