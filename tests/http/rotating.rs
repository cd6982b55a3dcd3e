//! The rotating student QR through the API: the app's `getQRCode` envelope read from the
//! entries the warmer prepared, misses rendered and stored, window boundaries, and the role
//! table route by route.

use end_to_end::{app_verifies_rotating, data_url_png, decode_data_url, decode_png, png_size};
use redis::AsyncCommands;
use serde_json::json;
use shared::cache::ReadCounter;
use warm_qr_cache::rotating::{self, RotatingRequest};

use crate::support::*;

async fn prewarm(world: &World) {
    rotating::prepare(
        world.api.reader.db(),
        world.api.reader.cache(),
        &world.api.rotating,
        &RotatingRequest::from_payload(json!({})).unwrap(),
        chrono::Utc::now().timestamp(),
    )
    .await
    .unwrap();
}

fn rotating_key(world: &World, registration_no: &str, window: i64) -> String {
    format!(
        "{}qr:rotating:{registration_no}:{window}",
        world.api.reader.cache().settings().key_prefix
    )
}

#[tokio::test]
async fn a_student_gets_the_apps_envelope_from_what_the_warmer_prepared() {
    let world = World::new().await;
    prewarm(&world).await;
    let (id, _) = world.student(1).await;
    let registration_no = tools::seed::registration_no(1);
    let student = session(&id, "STUDENT");

    let response = world.get("/students/me/qr", &student).await;
    let now = chrono::Utc::now().timestamp();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-cache"), Some("hit"));
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    let body = body_json(&response);
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "Success");
    let timestamp = body["timestamp"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok() && timestamp.ends_with('Z'));
    let data = &body["data"];
    let mut fields: Vec<&String> = data.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "qr_code",
            "qr_code_token",
            "registration_no",
            "rotation_info"
        ]
    );
    assert_eq!(data["registration_no"], registration_no.as_str());
    let left = data["rotation_info"]["expires_in_seconds"]
        .as_i64()
        .unwrap();
    assert!((1..=30).contains(&left), "{left}");
    assert_eq!(data["rotation_info"]["rotation_interval"], 30);
    assert_eq!(data["rotation_info"]["grace_period_seconds"], 60);
    // The image is the prepared entry, and its code is the token beside it.
    let qr_code = data["qr_code"].as_str().unwrap();
    let token = data["qr_code_token"].as_str().unwrap();
    assert_eq!(decode_data_url(qr_code), token);
    assert_eq!(png_size(&data_url_png(qr_code)), (300, 300));
    assert_eq!(
        app_verifies_rotating(token, now),
        Ok(registration_no.clone())
    );
    let window = end_to_end::qr_token_claims(token)["w"].as_i64().unwrap();
    let mut redis = end_to_end::redis_connection(&end_to_end::redis_url()).await;
    let cached: String = redis
        .get(rotating_key(&world, &registration_no, window))
        .await
        .unwrap();
    assert_eq!(cached, qr_code);

    // The PNG, when asked for an image.
    let response = world
        .call(
            "GET",
            "/students/me/qr",
            &[
                ("authorization", &format!("Bearer {student}")),
                ("accept", "image/png"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("image/png"));
    assert_eq!(
        app_verifies_rotating(&decode_png(&body_bytes(&response)), now),
        Ok(registration_no.clone())
    );

    // The same through the id route, for the student and for an admin.
    for caller in [student.clone(), admin(), session("1", "SUPER_ADMIN")] {
        let response = world
            .get(&format!("/qr/students/{id}/rotating"), &caller)
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            body_json(&response)["data"]["registration_no"],
            registration_no.as_str()
        );
    }
}

#[tokio::test]
async fn a_miss_is_rendered_stored_until_its_grace_ends_and_counted() {
    let world = World::new().await;
    let (id, _) = world.student(2).await;
    let registration_no = tools::seed::registration_no(2);
    let student = session(&id, "STUDENT");
    let before = chrono::Utc::now().timestamp();
    let first = world.get("/students/me/qr", &student).await;
    assert_eq!(header(&first, "x-cache"), Some("miss"));
    let token = body_json(&first)["data"]["qr_code_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let window = end_to_end::qr_token_claims(&token)["w"].as_i64().unwrap();
    let key = rotating_key(&world, &registration_no, window);
    let mut redis = end_to_end::redis_connection(&end_to_end::redis_url()).await;
    let ttl: i64 = redis.ttl(&key).await.unwrap();
    let grace_ends = (window + 3) * 30;
    assert!(
        (grace_ends - before - 62..=grace_ends - before).contains(&ttl),
        "{ttl}"
    );
    let second = world.get("/students/me/qr", &student).await;
    let second_token = body_json(&second)["data"]["qr_code_token"]
        .as_str()
        .unwrap()
        .to_owned();
    if end_to_end::qr_token_claims(&second_token)["w"] == window {
        assert_eq!(header(&second, "x-cache"), Some("hit"));
        assert_eq!(second_token, token, "one token per window");
    }
    let counts = world
        .api
        .reader
        .api_counts(ReadCounter::Rotating)
        .await
        .unwrap();
    assert_eq!(counts.0 + counts.1, 2);
    assert!(counts.1 >= 1);
    // The rotating read never renews: the entry dies with its grace.
    let ttl_after: i64 = redis.ttl(&key).await.unwrap();
    assert!(ttl_after <= ttl, "{ttl_after} > {ttl}");
}

#[tokio::test]
async fn the_window_served_at_second_29_still_scans_through_its_grace() {
    let world = World::new().await;
    let (id, _) = world.student(3).await;
    let id = uuid::Uuid::parse_str(&id).unwrap();
    let registration_no = tools::seed::registration_no(3);
    let window = chrono::Utc::now().timestamp() / 30;
    let at_29 = world
        .api
        .reader
        .rotating(&world.api.rotating, id, window * 30 + 29)
        .await
        .unwrap();
    assert_eq!(at_29.window, window);
    assert_eq!(decode_data_url(&at_29.image.data_url), at_29.token);
    let scans = |now: i64| app_verifies_rotating(&at_29.token, now);
    assert_eq!(scans(window * 30 + 29), Ok(registration_no.clone()));
    // The volunteer's scanner accepts it for the two windows after, then not.
    assert_eq!(scans((window + 1) * 30), Ok(registration_no.clone()));
    assert_eq!(scans((window + 2) * 30 + 29), Ok(registration_no.clone()));
    assert_eq!(scans((window + 3) * 30), Err("jwt expired"));
    // Before its window it is not yet current.
    assert_eq!(scans(window * 30 - 1), Err("window out of grace"));
    // One second on, the next window.
    let at_30 = world
        .api
        .reader
        .rotating(&world.api.rotating, id, window * 30 + 30)
        .await
        .unwrap();
    assert_eq!(at_30.window, window + 1);
    assert_ne!(at_30.token, at_29.token);
}

#[tokio::test]
async fn refusals_name_their_reason() {
    let world = World::new().await;
    let (own, _) = world.student(1).await;
    let (other, _) = world.student(2).await;
    let student = session(&own, "STUDENT");
    let forbidden = json!({"error": "forbidden", "message": "your account may not do this"});

    let response = world
        .get(&format!("/qr/students/{other}/rotating"), &student)
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(body_json(&response), forbidden);
    let response = world.get("/students/me/qr", &admin()).await;
    assert_eq!(response.status(), 403);
    assert_eq!(body_json(&response), forbidden);
    let response = world
        .get(
            "/qr/students/00000000-0000-4000-8000-000000000000/rotating",
            &admin(),
        )
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        body_json(&response),
        json!({"error": "not_found", "message": "no student with this id"})
    );
    let response = world
        .get("/qr/students/not-a-uuid/rotating", &admin())
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        body_json(&response),
        json!({"error": "bad_request", "message": "the id is not a valid UUID"})
    );
    // A student token whose id is not a UUID: nobody to show.
    let response = world
        .get("/students/me/qr", &session("42", "STUDENT"))
        .await;
    assert_eq!(response.status(), 400);
    let response = world.call("POST", "/students/me/qr", &[], None).await;
    assert_eq!(response.status(), 405);
    assert_eq!(header(&response, "allow"), Some("GET"));
}

/// Every route, every role: exactly who the app lets read the same data (README's table).
#[tokio::test]
async fn the_role_table_route_by_route() {
    let world = World::new().await;
    let (student_a, _) = world.student(1).await;
    let stall: String = world
        .db
        .client()
        .await
        .query_one("SELECT id::text FROM stalls LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let someone = "5b0c0b4e-2f7f-4f8a-9d53-5d9a3c1f0b12";
    let callers = [
        ("ADMIN", session(someone, "ADMIN")),
        ("SUPER_ADMIN", session(someone, "SUPER_ADMIN")),
        ("STUDENT (own)", session(&student_a, "STUDENT")),
        ("STUDENT (another)", session(someone, "STUDENT")),
        ("VOLUNTEER", session(someone, "VOLUNTEER")),
        ("EVENT_MANAGER", session(someone, "EVENT_MANAGER")),
    ];
    // Statuses for ADMIN, SUPER_ADMIN, own student, another student, volunteer, event manager.
    let table: Vec<(String, [u16; 6])> = vec![
        (
            format!("/qr/stalls/{stall}"),
            [200, 200, 200, 200, 200, 200],
        ),
        (
            format!("/qr/students/{student_a}"),
            [200, 200, 200, 403, 403, 403],
        ),
        (
            format!("/qr/students/{student_a}/rotating"),
            [200, 200, 200, 403, 403, 403],
        ),
        ("/students/me/qr".into(), [403, 403, 200, 404, 403, 403]),
        ("/cache/stats".into(), [200, 200, 403, 403, 403, 403]),
        (
            "/imports/template/stalls".into(),
            [200, 200, 403, 403, 403, 403],
        ),
        (
            format!("/imports/{someone}"),
            [404, 404, 403, 403, 403, 403],
        ),
    ];
    for (path, statuses) in &table {
        for ((role, token), expected) in callers.iter().zip(statuses) {
            let response = world.get(path, token).await;
            assert_eq!(
                response.status().as_u16(),
                *expected,
                "GET {path} as {role}"
            );
            if *expected == 403 {
                assert_eq!(
                    body_json(&response)["error"],
                    "forbidden",
                    "GET {path} as {role}"
                );
            }
        }
    }
    // Posting routes: admins get past the role check to the body's validation.
    for path in ["/imports", "/imports/validate"] {
        for ((role, token), admin) in callers.iter().zip([true, true, false, false, false, false]) {
            let response = world.post(path, token, "{}").await;
            let expected = if admin { 400 } else { 403 };
            assert_eq!(
                response.status().as_u16(),
                expected,
                "POST {path} as {role}"
            );
        }
    }
}
