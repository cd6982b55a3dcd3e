//! Who may call what: every way a token can be wrong is a 401, a wrong role a 403; unknown
//! routes, wrong methods and oversized bodies have their own statuses; nothing internal leaks.

use base64::Engine as _;
use jsonwebtoken::Algorithm;

use crate::support::*;

fn b64(value: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401_and_a_generic_message() {
    let world = World::new().await;
    let now = chrono::Utc::now().timestamp();
    let id = "7a0c0b4e-2f7f-4f8a-9d53-5d9a3c1f0b11";
    let claims = serde_json::json!({"id": id, "role": "ADMIN", "exp": now + 3600});
    let valid = admin();
    let signature = valid.rsplit('.').next().unwrap().to_string();
    let cases = [
        ("missing", None),
        ("malformed", Some("not-a-jwt".to_string())),
        ("garbage parts", Some("a.b.c".to_string())),
        (
            "expired",
            Some(session_with(
                id,
                "ADMIN",
                now - 3600,
                Algorithm::HS256,
                end_to_end::JWT_SECRET,
            )),
        ),
        (
            "wrong secret",
            Some(session_with(
                id,
                "ADMIN",
                now + 3600,
                Algorithm::HS256,
                "another-secret",
            )),
        ),
        (
            "HS512",
            Some(session_with(
                id,
                "ADMIN",
                now + 3600,
                Algorithm::HS512,
                end_to_end::JWT_SECRET,
            )),
        ),
        (
            "alg none",
            Some(format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
                b64(&claims)
            )),
        ),
        (
            "RS256 header",
            Some(format!(
                "{}.{}.{signature}",
                b64(&serde_json::json!({"alg": "RS256", "typ": "JWT"})),
                b64(&claims)
            )),
        ),
        (
            "no exp",
            Some(
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::default(),
                    &serde_json::json!({"id": id, "role": "ADMIN"}),
                    &jsonwebtoken::EncodingKey::from_secret(end_to_end::JWT_SECRET.as_bytes()),
                )
                .unwrap(),
            ),
        ),
    ];
    for (name, token) in cases {
        let headers: Vec<(&str, String)> = token
            .iter()
            .map(|t| ("authorization", format!("Bearer {t}")))
            .collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = world.call("GET", "/cache/stats", &headers, None).await;
        assert_eq!(response.status(), 401, "{name}");
        let body = body_json(&response);
        assert_eq!(body["error"], "unauthorized", "{name}");
        assert_eq!(
            header(&response, "www-authenticate"),
            Some("Bearer"),
            "{name}"
        );
        let text = body.to_string();
        assert!(
            !text.contains("expired") && !text.contains("signature") && !text.contains("alg"),
            "{name}: reason echoed: {text}"
        );
    }
    let response = world.get("/cache/stats", &valid).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_apps_cookie_works_and_roles_are_enforced() {
    let world = World::new().await;
    let cookie = format!("theme=dark; token={}", admin());
    let response = world
        .call("GET", "/cache/stats", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(response.status(), 200, "{:?}", body_bytes(&response));
    let super_admin = session("1", "SUPER_ADMIN");
    assert_eq!(world.get("/cache/stats", &super_admin).await.status(), 200);
    for role in ["STUDENT", "VOLUNTEER", "STALL", "EVENT_MANAGER"] {
        let response = world.get("/cache/stats", &session("1", role)).await;
        assert_eq!(response.status(), 403, "{role}");
        assert_eq!(body_json(&response)["error"], "forbidden");
    }
    let response = world
        .get("/imports/template/students", &session("1", "STUDENT"))
        .await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_big_bodies_have_their_statuses() {
    let world = World::new().await;
    let token = admin();
    let response = world.get("/nothing/here", &token).await;
    assert_eq!(
        (
            response.status().as_u16(),
            body_json(&response)["error"].as_str()
        ),
        (404, Some("not_found"))
    );
    let response = world
        .call(
            "DELETE",
            "/cache/stats",
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await;
    assert_eq!(response.status(), 405);
    assert_eq!(header(&response, "allow"), Some("GET"));
    let big = format!(
        "{{\"kind\": \"students\", \"filename\": \"{}\"}}",
        "a".repeat(70_000)
    );
    let response = world.post("/imports", &token, &big).await;
    assert_eq!(response.status(), 413);
    let response = world.get("/qr/students/not-a-uuid", &token).await;
    assert_eq!(
        (
            response.status().as_u16(),
            body_json(&response)["error"].as_str()
        ),
        (400, Some("bad_request"))
    );
    let response = world
        .get("/qr/teachers/7a0c0b4e-2f7f-4f8a-9d53-5d9a3c1f0b11", &token)
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn state_changing_routes_take_only_json_and_headers_are_capped() {
    let world = World::new().await;
    let cookie = format!("token={}", admin());
    let body = r#"{"kind":"students","filename":"a.xlsx","size":10}"#;
    // What a cross-site form can send with the app's cookie: refused before anything runs.
    for content_type in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain",
    ] {
        let response = world
            .call(
                "POST",
                "/imports",
                &[("cookie", &cookie), ("content-type", content_type)],
                Some(body),
            )
            .await;
        assert_eq!(response.status(), 415, "{content_type}");
        assert_eq!(
            body_json(&response),
            serde_json::json!({"error": "unsupported_media_type", "message": "send the body as application/json"})
        );
    }
    let response = world
        .call(
            "POST",
            "/imports/validate",
            &[("cookie", &cookie)],
            Some("{}"),
        )
        .await;
    assert_eq!(response.status(), 415);
    let response = world
        .call(
            "POST",
            "/imports",
            &[
                ("cookie", &cookie),
                ("content-type", "application/json; charset=utf-8"),
            ],
            Some(body),
        )
        .await;
    assert_eq!(response.status(), 201);
    // A file named in Devanagari keeps its extension, under a key of safe characters.
    let response = world
        .post(
            "/imports",
            &admin(),
            r#"{"kind":"students","filename":"छात्र सूची 2024.xlsx","size":10}"#,
        )
        .await;
    assert_eq!(response.status(), 201);
    let key = body_json(&response)["key"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("imports/students/") && key.ends_with("/2024.xlsx"),
        "{key}"
    );
    assert!(key.is_ascii());

    let big = "x".repeat(http_api::MAX_HEADER_BYTES);
    let response = world
        .call(
            "GET",
            "/cache/stats",
            &[("cookie", &cookie), ("x-padding", &big)],
            None,
        )
        .await;
    assert_eq!(response.status(), 431);
    assert_eq!(
        body_json(&response),
        serde_json::json!({"error": "headers_too_large", "message": "request headers are limited to 16384 bytes"})
    );
}

#[tokio::test]
async fn health_says_ok_or_unavailable_and_nothing_more() {
    let mut world = World::new().await;
    let response = world.call("GET", "/health", &[], None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(&response), serde_json::json!({"status": "ok"}));
    let dead_redis = end_to_end::test_cache_at("redis://127.0.0.1:1", 60);
    world.with(None, Some(dead_redis));
    // A flood of checks is answered from the last result for a few seconds: had any of them
    // asked the (now unreachable) Redis, it would have answered 503.
    for _ in 0..50 {
        let response = world.call("GET", "/health", &[], None).await;
        assert_eq!(response.status(), 200);
    }
    tokio::time::sleep(http_api::HEALTH_CACHED_FOR).await;
    let response = world.call("GET", "/health", &[], None).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        body_json(&response),
        serde_json::json!({"status": "unavailable"})
    );
}

#[tokio::test]
async fn cache_stats_count_images_and_the_apis_own_reads() {
    let world = World::new().await;
    let token = admin();
    let (id, _) = world.student(0).await;
    world.get(&format!("/qr/students/{id}"), &token).await;
    world.get(&format!("/qr/students/{id}"), &token).await;
    let stats = body_json(&world.get("/cache/stats", &token).await);
    assert_eq!(stats["cached_qr_images"], 1);
    assert_eq!(
        (stats["api_hits"].as_u64(), stats["api_misses"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(stats["api_hit_rate"], 0.5);
    assert!(stats["redis_used_memory_bytes"].as_u64().unwrap() > 0);
    assert!(stats["server_hits"].as_u64().is_some());
}

/// The sample events in `events/` answer as their names say, with a real token put in.
#[tokio::test]
async fn every_sample_api_event_gets_its_answer() {
    let world = World::new().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let token = admin();
    let (student_id, _) = world.student(1).await;
    let student = session(&student_id, "STUDENT");
    for (file, status) in [
        ("api-health.json", 200),
        ("api-cache-stats.json", 200),
        ("api-qr-student.json", 404),
        ("api-qr-json.json", 404),
        ("api-create-import.json", 201),
        ("api-validate-import.json", 200),
        ("api-import-status.json", 404),
        ("api-template.json", 200),
        ("api-rotating-qr.json", 200),
    ] {
        // The student's own screen takes a student's token; the rest, an admin's.
        let caller = if file == "api-rotating-qr.json" {
            &student
        } else {
            &token
        };
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap()
            .replace("REPLACE_WITH_SESSION_TOKEN", caller);
        let request =
            lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let response = http_api::handle(&world.api, request).await;
        assert_eq!(
            response.status(),
            status,
            "{file}: {:?}",
            String::from_utf8_lossy(&body_bytes(&response))
        );
    }
}
