//! At every log level, trace included, no session token, cookie, QR token, database password or
//! JWT secret reaches the API's logs: every line of a run of every route, captured.

use end_to_end::{config_with, CapturedLogs, TestDb, JWT_SECRET};
use http_api::qr_reads::QrReader;
use http_api::Api;
use shared::storage::Storage;

use crate::support::*;

const DB_PASSWORD: &str = "Pg-Pa55word-never-logged";

#[tokio::test]
async fn no_secret_reaches_the_apis_logs_even_at_trace() {
    let logs = CapturedLogs::install("trace");
    let mut world = World::new().await;
    // The same database through a URL that carries a password (trust auth ignores it).
    let mut url = url::Url::parse(&TestDb::url_of(&world.db.name, "prefer")).unwrap();
    url.set_password(Some(DB_PASSWORD)).unwrap();
    let config = config_with(
        &world.db,
        world.api.reader.cache(),
        &[
            ("NEON_DATABASE_URL", url.to_string()),
            ("IMPORT_BUCKET", world.bucket.clone()),
            ("LOG_LEVEL", "trace".into()),
        ],
    );
    let reader = QrReader::new(
        shared::db::Database::new(config.database.clone()),
        world.api.reader.cache().clone(),
        config.qr,
    );
    world.api = Api::new(config, reader, Storage::with_client(world.s3.clone())).unwrap();

    let admin = admin();
    let (student_id, student_qr) = world.student(1).await;
    let student = session(&student_id, "STUDENT");
    let stall: (String, String) = {
        let row = world
            .db
            .client()
            .await
            .query_one("SELECT id::text, qr_code_token FROM stalls LIMIT 1", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let cookie = format!("token={student}");
    let forged = session_with(
        &student_id,
        "ADMIN",
        chrono::Utc::now().timestamp() + 60,
        jsonwebtoken::Algorithm::HS256,
        "not-the-secret",
    );

    assert_eq!(
        world
            .get(&format!("/qr/students/{student_id}"), &admin)
            .await
            .status(),
        200
    );
    let response = world
        .call(
            "GET",
            &format!("/qr/stalls/{}", stall.0),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let response = world.get("/students/me/qr", &student).await;
    assert_eq!(response.status(), 200);
    let rotating = body_json(&response)["data"]["qr_code_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(world.get("/cache/stats", &admin).await.status(), 200);
    assert_eq!(world.call("GET", "/health", &[], None).await.status(), 200);
    let created = world
        .post(
            "/imports",
            &admin,
            r#"{"kind":"students","filename":"list.xlsx","size":100}"#,
        )
        .await;
    assert_eq!(created.status(), 201);
    let import_id = body_json(&created)["import_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let presigned = body_json(&created)["upload"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        world
            .get(&format!("/imports/{import_id}"), &admin)
            .await
            .status(),
        200
    );
    // Refusals log their reason, never the token refused.
    assert_eq!(world.get("/cache/stats", &forged).await.status(), 401);
    assert_eq!(world.get("/cache/stats", &student).await.status(), 403);

    // What lambda_runtime itself writes at trace for every invocation: the raw event, with its
    // headers and cookies. A plain LOG_LEVEL=trace keeps dependencies at info, so it never shows;
    // this project's own trace lines do.
    tracing::trace!(
        target: "lambda_runtime::layers::api_response",
        body = %format!(r#"{{"headers":{{"authorization":"Bearer {admin}","cookie":"{cookie}"}}}}"#),
        "raw JSON event received from Lambda"
    );
    tracing::trace!(target: "http_api::routes", "this project's own trace line");

    let text = logs.text();
    assert!(
        text.contains("this project's own trace line"),
        "{text:.300}"
    );
    assert!(
        text.contains(r#""level":"DEBUG""#),
        "captured at trace: {text:.300}"
    );
    assert!(text.contains(r#""message":"request""#), "{text:.300}");
    let signature = |token: &str| token.rsplit('.').next().unwrap().to_owned();
    logs.assert_free_of(&[
        ("the admin's session token", admin.clone()),
        ("the student's session token", student.clone()),
        ("the session token's signature", signature(&student)),
        ("the forged token", forged.clone()),
        ("the cookie", cookie.clone()),
        ("the student's QR token", student_qr),
        ("the stall's QR token", stall.1),
        ("the rotating QR token", rotating.clone()),
        ("the rotating token's signature", signature(&rotating)),
        (
            "the presigned URL's signature",
            presigned
                .split("X-Amz-Signature=")
                .nth(1)
                .unwrap_or("")
                .to_owned(),
        ),
        ("the database password", DB_PASSWORD.to_owned()),
        ("the JWT secret", JWT_SECRET.to_owned()),
    ]);
}
