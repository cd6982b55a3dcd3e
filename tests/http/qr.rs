//! QR images: read through the cache with TTL renewal, rendered once on a miss, served as PNG
//! or as the app's JSON, with ETags; Redis down still serves, Postgres down is a 503.

use redis::AsyncCommands;
use shared::db::{Database, DatabaseSettings};

use crate::support::*;

#[tokio::test]
async fn admins_get_the_png_first_rendered_then_from_the_cache() {
    let world = World::new().await;
    let (id, token) = world.student(1).await;
    let path = format!("/qr/students/{id}");
    let first = world.get(&path, &admin()).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "content-type"), Some("image/png"));
    assert_eq!(header(&first, "x-cache"), Some("miss"));
    assert_eq!(
        header(&first, "cache-control"),
        Some("private, max-age=300")
    );
    assert_eq!(end_to_end::decode_png(&body_bytes(&first)), token);

    let cache = world.api.reader.cache();
    let key = cache.settings().key(&token);
    let mut redis = cache.connection();
    let _: () = redis.expire(&key, 10).await.unwrap();
    let second = world.get(&path, &admin()).await;
    assert_eq!(header(&second, "x-cache"), Some("hit"));
    assert_eq!(body_bytes(&second), body_bytes(&first));
    let ttl: i64 = redis.ttl(&key).await.unwrap();
    assert!(ttl > 3500, "TTL renewed on read, got {ttl}");

    let etag = header(&second, "etag").unwrap().to_string();
    let not_modified = world
        .call(
            "GET",
            &path,
            &[
                ("authorization", &format!("Bearer {}", admin())),
                ("if-none-match", &etag),
            ],
            None,
        )
        .await;
    assert_eq!(not_modified.status(), 304);

    let json = world
        .call(
            "GET",
            &path,
            &[
                ("authorization", &format!("Bearer {}", admin())),
                ("accept", "application/json"),
            ],
            None,
        )
        .await;
    let data_url = body_json(&json)["qr_image"].as_str().unwrap().to_string();
    assert_eq!(end_to_end::decode_data_url(&data_url), token);

    let (stall_id, stall_token) = {
        let row = world
            .db
            .client()
            .await
            .query_one("SELECT id::text, qr_code_token FROM stalls LIMIT 1", &[])
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, String>(1))
    };
    let stall = world.get(&format!("/qr/stalls/{stall_id}"), &admin()).await;
    assert_eq!(end_to_end::decode_png(&body_bytes(&stall)), stall_token);
}

#[tokio::test]
async fn a_student_reads_only_their_own_qr() {
    let world = World::new().await;
    let (own, token) = world.student(2).await;
    let (other, _) = world.student(3).await;
    let student = session(&own, "STUDENT");
    let response = world.get(&format!("/qr/students/{own}"), &student).await;
    assert_eq!(response.status(), 200);
    assert_eq!(end_to_end::decode_png(&body_bytes(&response)), token);
    assert_eq!(
        world
            .get(&format!("/qr/students/{other}"), &student)
            .await
            .status(),
        403
    );
    // Any signed-in user reads a stall's QR, as in the app (`GET /api/stall/:id/qr-code`).
    let (stall_id, stall_token): (String, String) = {
        let row = world
            .db
            .client()
            .await
            .query_one("SELECT id::text, qr_code_token FROM stalls LIMIT 1", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let response = world.get(&format!("/qr/stalls/{stall_id}"), &student).await;
    assert_eq!(response.status(), 200);
    assert_eq!(end_to_end::decode_png(&body_bytes(&response)), stall_token);
}

#[tokio::test]
async fn unknown_ids_are_404_and_rows_without_tokens_get_one_as_in_the_app() {
    let world = World::new().await;
    let response = world
        .get(
            "/qr/students/00000000-0000-4000-8000-000000000000",
            &admin(),
        )
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        body_json(&response),
        serde_json::json!({"error": "not_found", "message": "no student with this id"})
    );
    let client = world.db.client().await;
    let (id, _) = world.student(4).await;
    client
        .execute(
            "UPDATE students SET qr_code_token = NULL WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let response = world.get(&format!("/qr/students/{id}"), &admin()).await;
    assert_eq!(response.status(), 200);
    let shown = end_to_end::decode_png(&body_bytes(&response));
    let stored = world.stored_token(&id).await;
    assert_eq!(shown, stored, "the minted token is stored and shown");
    let claims = end_to_end::qr_token_claims(&stored);
    assert_eq!(
        (claims["t"].as_str(), claims["r"].as_str()),
        (Some("S"), Some(tools::seed::registration_no(4).as_str()))
    );
    // Viewed again: the same token, now from the cache.
    let again = world.get(&format!("/qr/students/{id}"), &admin()).await;
    assert_eq!(header(&again, "x-cache"), Some("hit"));
    assert_eq!(end_to_end::decode_png(&body_bytes(&again)), stored);

    // A stall whose token is empty gets the short keyed form.
    let (stall_id, number): (String, String) = {
        let row = client
            .query_one(
                "UPDATE stalls SET qr_code_token = '' WHERE stall_number = $1 RETURNING id::text, stall_number",
                &[&tools::seed::stall_number(0)],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let response = world.get(&format!("/qr/stalls/{stall_id}"), &admin()).await;
    assert_eq!(response.status(), 200);
    let shown = end_to_end::decode_png(&body_bytes(&response));
    assert!(shown.starts_with(&format!("STALL_{number}_")), "{shown}");
    assert_eq!(shown.len(), format!("STALL_{number}_").len() + 12);
}

#[tokio::test]
async fn concurrent_misses_of_one_image_render_it_once() {
    let world = World::new().await;
    let (_, token) = world.student(0).await;
    let reader = &world.api.reader;
    let reads = (0..16).map(|_| reader.image_of_token(&token));
    let images = futures_util::future::join_all(reads).await;
    assert!(images
        .iter()
        .all(|image| image.as_ref().unwrap().data_url == images[0].as_ref().unwrap().data_url));
    assert_eq!(
        reader.renders(),
        1,
        "one render for sixteen concurrent misses"
    );
}

#[tokio::test]
async fn redis_down_still_serves_by_rendering_and_says_so() {
    let mut world = World::new().await;
    let (id, token) = world.student(0).await;
    world.with(
        None,
        Some(end_to_end::test_cache_at("redis://127.0.0.1:1", 60)),
    );
    let response = world.get(&format!("/qr/students/{id}"), &admin()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-cache"), Some("bypass"));
    assert_eq!(end_to_end::decode_png(&body_bytes(&response)), token);
}

#[tokio::test]
async fn postgres_down_is_a_503_without_details() {
    let mut world = World::new().await;
    let (id, _) = world.student(0).await;
    let dead = Database::new(
        DatabaseSettings::parse(
            "postgres://postgres@127.0.0.1:1/gone?sslmode=disable&connect_timeout=1",
        )
        .unwrap(),
    );
    world.with(Some(dead), None);
    let response = world.get(&format!("/qr/students/{id}"), &admin()).await;
    assert_eq!(response.status(), 503);
    let body = body_json(&response);
    assert_eq!(body["error"], "unavailable");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
}
