//! The admin's side of imports: a presigned upload used for real, the import it starts, its
//! status and report, a dry run that writes nothing, and the template.

use std::process::Command;

use shared::kind::Kind;
use shared::spreadsheet::{self, Format, Limits};

use crate::support::*;

const CSV: &str = "registration_no,full_name,school,date_of_birth,pincode\n2031001,Asha Rao,School of Civil Engineering,2004-03-09,110001\n2031002,Ravi,Nowhere School,2004-03-09,110001\n";

/// PUTs `body` to a presigned URL as a browser would; returns the HTTP status.
fn put(url: &str, content_type: &str, body: &[u8]) -> u16 {
    let path = std::env::temp_dir().join(format!("upload-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, body).unwrap();
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "-H",
        ])
        .arg(format!("Content-Type: {content_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", path.display()))
        .arg(url)
        .output()
        .expect("curl on PATH");
    let _ = std::fs::remove_file(path);
    String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
}

#[tokio::test]
async fn a_presigned_upload_becomes_an_import_whose_status_and_report_the_admin_reads() {
    let world = World::new().await;
    let token = admin();
    let request =
        serde_json::json!({"kind": "students", "filename": "../CSE batch.csv", "size": CSV.len()})
            .to_string();
    let response = world.post("/imports", &token, &request).await;
    assert_eq!(response.status(), 201, "{:?}", body_json(&response));
    let created = body_json(&response);
    let import_id = created["import_id"].as_str().unwrap().to_string();
    let key = created["key"].as_str().unwrap().to_string();
    assert_eq!(key, format!("imports/students/{import_id}/CSE-batch.csv"));
    let url = created["upload"]["url"].as_str().unwrap().to_string();
    let content_type = created["upload"]["headers"]["Content-Type"]
        .as_str()
        .unwrap()
        .to_string();

    assert_eq!(put(&url, &content_type, CSV.as_bytes()), 200);
    let stored = end_to_end::download(&world.s3, &world.bucket, &key)
        .await
        .expect("uploaded");
    assert_eq!(stored, CSV.as_bytes());

    let status = body_json(&world.get(&format!("/imports/{import_id}"), &token).await);
    assert_eq!(status["status"], "awaiting_upload");

    // S3 now tells the importer; the upload's row is the one that records the outcome.
    let head = world
        .s3
        .head_object()
        .bucket(&world.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let event = end_to_end::s3_put_event(
        &world.bucket,
        &key,
        head.e_tag().unwrap().trim_matches('"'),
        CSV.len(),
    );
    let clients = import_spreadsheet::Clients {
        db: world.db.database(),
        cache: world.api.reader.cache().clone(),
        storage: shared::storage::Storage::with_client(world.s3.clone()),
        config: world.api.config.clone(),
        jwt_secret: world.api.jwt_secret.clone(),
    };
    let event = serde_json::from_value(event).unwrap();
    import_spreadsheet::handle(
        lambda_http::lambda_runtime::LambdaEvent::new(event, Default::default()),
        &clients,
    )
    .await
    .unwrap();

    let status = body_json(&world.get(&format!("/imports/{import_id}"), &token).await);
    assert_eq!(status["status"], "partially_succeeded", "{status}");
    assert_eq!(
        (
            status["rows_inserted"].as_i64(),
            status["rows_rejected"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert!(
        status["reasons"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown school"),
        "{status}"
    );
    let report_url = status["report_url"].as_str().unwrap();
    let report = Command::new("curl")
        .args(["-s", report_url])
        .output()
        .unwrap()
        .stdout;
    let report: serde_json::Value =
        serde_json::from_slice(&report).expect("the report downloads through its URL");
    assert_eq!(report["import_id"].as_str(), Some(import_id.as_str()));
    // The rejected row comes back through its own URL, cells as uploaded, ready to fix.
    let rejected_url = status["rejected_url"].as_str().unwrap();
    let rejected = Command::new("curl")
        .args(["-s", rejected_url])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(
        String::from_utf8(rejected).unwrap(),
        "registration_no,full_name,school,date_of_birth,pincode,Rejected row,Rejection reason\n\
         2031002,Ravi,Nowhere School,2004-03-09,110001,3,\"school: unknown school \"\"Nowhere School\"\"\"\n"
    );

    assert_eq!(
        world
            .get("/imports/00000000-0000-4000-8000-000000000000", &token)
            .await
            .status(),
        404
    );
    assert_eq!(world.get("/imports/nope", &token).await.status(), 400);
}

#[tokio::test]
async fn a_presigned_url_takes_exactly_its_file_and_nothing_else() {
    let mut world = World::new().await;
    // An S3 that checks signatures, as AWS does, behind the API.
    let s3 = end_to_end::SigningS3::start();
    s3.client
        .create_bucket()
        .bucket(&world.bucket)
        .send()
        .await
        .unwrap();
    world.api.storage = shared::storage::Storage::with_client(s3.client.clone());
    let token = admin();
    let request =
        serde_json::json!({"kind": "stalls", "filename": "stalls.csv", "size": 10}).to_string();
    let created = body_json(&world.post("/imports", &token, &request).await);
    let url = created["upload"]["url"].as_str().unwrap().to_string();
    let key = created["key"].as_str().unwrap().to_string();

    assert_ne!(
        put(&url, "text/csv", &[b'a'; 5000]),
        200,
        "a bigger body is refused"
    );
    assert_ne!(
        put(
            &url.replace("stalls.csv", "other.csv"),
            "text/csv",
            &[b'a'; 10]
        ),
        200,
        "another key is refused"
    );
    assert_ne!(
        put(&url, "application/pdf", &[b'a'; 10]),
        200,
        "another content type is refused"
    );
    assert!(
        end_to_end::download(&s3.client, &world.bucket, &key)
            .await
            .is_none(),
        "nothing was stored"
    );
    assert_eq!(
        put(&url, "text/csv", &[b'a'; 10]),
        200,
        "the file it was made for is taken"
    );
    assert_eq!(
        end_to_end::download(&s3.client, &world.bucket, &key)
            .await
            .unwrap(),
        vec![b'a'; 10]
    );
}

#[tokio::test]
async fn bad_import_requests_are_400_or_413() {
    let world = World::new().await;
    let token = admin();
    for (body, status) in [
        (
            serde_json::json!({"kind": "teachers", "filename": "a.csv", "size": 10}),
            400,
        ),
        (
            serde_json::json!({"kind": "students", "filename": "a.pdf", "size": 10}),
            400,
        ),
        (
            serde_json::json!({"kind": "students", "filename": "a.csv"}),
            400,
        ),
        (
            serde_json::json!({"kind": "students", "filename": "a.csv", "size": 1_000_000_000u64}),
            413,
        ),
    ] {
        assert_eq!(
            world
                .post("/imports", &token, &body.to_string())
                .await
                .status(),
            status,
            "{body}"
        );
    }
    assert_eq!(
        world.post("/imports", &token, "{not json").await.status(),
        400
    );
}

#[tokio::test]
async fn an_upload_carries_its_event_and_blank_cell_choice_to_the_import_and_the_dry_run() {
    let world = World::new().await;
    let token = admin();
    let client = world.db.client().await;
    let event: uuid::Uuid = client
        .query_one(
            "INSERT INTO events (event_name, event_code, start_date, end_date,
                                 registration_start_date, registration_end_date)
             VALUES ('Fest', 'FEST-2026', now(), now(), now(), now()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let request = serde_json::json!({
        "kind": "stalls", "filename": "stalls.csv", "size": 10,
        "event": "fest-2026", "blank_cells": "clear",
    });
    let response = world.post("/imports", &token, &request.to_string()).await;
    assert_eq!(response.status(), 201, "{:?}", body_json(&response));
    let import_id = body_json(&response)["import_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = body_json(&world.get(&format!("/imports/{import_id}"), &token).await);
    assert_eq!(
        (status["blank_cells"].as_str(), status["event_id"].as_str()),
        (Some("clear"), Some(event.to_string().as_str()))
    );

    // The dry run of that upload plans with the same choices.
    let key = body_json(&response)["key"].as_str().unwrap().to_owned();
    world
        .s3
        .put_object()
        .bucket(&world.bucket)
        .key(&key)
        .body(
            b"stall_number,stall_name,school\nS-1,Robots,School of Civil Engineering\n"
                .to_vec()
                .into(),
        )
        .send()
        .await
        .unwrap();
    client.batch_execute("INSERT INTO schools (school_name) VALUES ('School of Civil Engineering') ON CONFLICT DO NOTHING").await.unwrap();
    let dry = body_json(
        &world
            .post(
                "/imports/validate",
                &token,
                &serde_json::json!({"import_id": import_id}).to_string(),
            )
            .await,
    );
    assert_eq!(dry["options"]["blank_cells"], "clear", "{dry}");
    assert_eq!(dry["options"]["event"], event.to_string());
    assert_eq!(dry["rows"][0]["action"], "insert", "{dry}");

    // Refusals name what is wrong.
    for (body, status, code, message) in [
        (
            serde_json::json!({"kind": "stalls", "filename": "a.csv", "size": 10, "event": "NOPE"}),
            422,
            "unknown_event",
            "no event has the code or id `NOPE`",
        ),
        (
            serde_json::json!({"kind": "students", "filename": "a.csv", "size": 10, "event": "FEST-2026"}),
            400,
            "bad_request",
            "`event` applies to stalls imports only",
        ),
        (
            serde_json::json!({"kind": "stalls", "filename": "a.csv", "size": 10, "blank_cells": "erase"}),
            400,
            "bad_request",
            "the JSON body is not valid: unknown variant `erase`, expected `keep` or `clear` at line 1 column 22",
        ),
    ] {
        let response = world.post("/imports", &token, &body.to_string()).await;
        assert_eq!(response.status(), status, "{body}");
        let refusal = body_json(&response);
        assert_eq!(
            (refusal["error"].as_str(), refusal["message"].as_str()),
            (Some(code), Some(message)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_dry_run_reports_what_an_import_would_do_and_writes_nothing() {
    let world = World::new().await;
    let token = admin();
    world.db.client().await.batch_execute("INSERT INTO schools (school_name) VALUES ('School of Civil Engineering') ON CONFLICT DO NOTHING").await.unwrap();
    let key = "imports/students/check.csv";
    world
        .s3
        .put_object()
        .bucket(&world.bucket)
        .key(key)
        .body(CSV.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let students_before = world
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM students", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);

    let response = world
        .post(
            "/imports/validate",
            &token,
            &serde_json::json!({"key": key}).to_string(),
        )
        .await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    let dry = body_json(&response);
    assert_eq!(dry["status"], "partially_valid");
    assert_eq!(
        (dry["valid_rows"].as_u64(), dry["rejected_rows"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(dry["rejected"][0]["row"], 3);

    let client = world.db.client().await;
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM students", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        students_before
    );
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM imports", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );

    let response = world
        .post(
            "/imports/validate",
            &token,
            &serde_json::json!({"key": "reports/x.json"}).to_string(),
        )
        .await;
    assert_eq!(response.status(), 400);
    let missing = body_json(
        &world
            .post(
                "/imports/validate",
                &token,
                &serde_json::json!({"key": "imports/students/gone.csv"}).to_string(),
            )
            .await,
    );
    assert_eq!(missing["status"], "invalid");
    assert!(
        missing["error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{missing}"
    );
}

#[tokio::test]
async fn the_template_is_an_xlsx_whose_first_sheet_the_importer_reads() {
    let world = World::new().await;
    for kind in [Kind::Students, Kind::Stalls] {
        let response = world
            .get(&format!("/imports/template/{}", kind.table()), &admin())
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "content-type"),
            Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        );
        let bytes = body_bytes(&response);
        let parsed = spreadsheet::read_records(
            &bytes,
            Format::Xlsx,
            kind,
            &Limits::default(),
            chrono::Utc::now().date_naive(),
        );
        match parsed {
            Ok(parsed) => {
                assert_eq!(parsed.rows_seen, 0);
                assert!(
                    parsed.ignored_columns.is_empty(),
                    "{:?}",
                    parsed.ignored_columns
                );
            }
            Err(error) => panic!("{kind}: the template's headers are not the importer's: {error}"),
        }
    }
}
