//! Files that are not what they claim get a clear refusal, and change nothing.

use end_to_end::download;
use import_spreadsheet::RecordOutcome;

use crate::fixtures::*;

#[tokio::test]
async fn unreadable_files_fail_with_a_reason_and_change_nothing() {
    let world = World::new().await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "imports/students/random.xlsx",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            "",
        ),
        ("imports/students/empty.csv", Vec::new(), ""),
        (
            "imports/students/locked.xlsx",
            [
                &[0xD0u8, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1][..],
                &[0u8; 1024][..],
            ]
            .concat(),
            "password",
        ),
        (
            "imports/students/latin1.csv",
            b"registration_no,full_name\n2021001,Jos\xe9\n".to_vec(),
            "UTF-8",
        ),
        (
            "imports/students/no-columns.csv",
            b"name,age\nAsha,20\n".to_vec(),
            "registration_no",
        ),
        (
            "imports/students/truncated.xlsx",
            template_xlsx(&STUDENT_HEADERS, &[])[..600].to_vec(),
            "",
        ),
    ];
    for (key, body, expected) in cases {
        let report = imported(world.upload_and_import(key, body).await);
        assert_eq!(report.status, "failed", "{key}");
        let error = report.error.clone().unwrap_or_default();
        assert!(
            !error.is_empty() && error.contains(expected),
            "{key}: {error}"
        );
        let json = download(
            &world.s3,
            &world.bucket,
            report.report_key.as_deref().unwrap(),
        )
        .await
        .unwrap();
        assert!(
            String::from_utf8_lossy(&json).contains("\"failed\""),
            "{key}: report written"
        );
    }
    assert_eq!(world.count("SELECT count(*) FROM students").await, 0);
    assert_eq!(
        world
            .count("SELECT count(*) FROM imports WHERE status = 'failed'")
            .await,
        6
    );
}

#[tokio::test]
async fn a_file_over_the_size_limit_is_refused_before_it_is_read() {
    let mut world = World::new().await;
    world.clients.config.import.limits.max_bytes = 1000;
    let report = imported(
        world
            .upload_and_import("imports/stalls/big.csv", vec![b'a'; 5000])
            .await,
    );
    assert_eq!(report.status, "failed");
    assert!(report.error.unwrap().contains("over the 1000-byte limit"));
}

#[tokio::test]
async fn objects_that_are_not_imports_are_skipped() {
    let world = World::new().await;
    for key in [
        "reports/x.json",
        "imports/students/",
        "imports/students/photo.png",
        "imports/teachers/t.xlsx",
    ] {
        let outcomes = world.upload_and_import(key, b"x".to_vec()).await;
        assert!(
            matches!(&outcomes[0], RecordOutcome::Skipped { .. }),
            "{key}: {outcomes:?}"
        );
    }
    assert_eq!(world.count("SELECT count(*) FROM imports").await, 0);
}

#[tokio::test]
async fn a_malformed_event_is_an_error_not_a_crash() {
    let world = World::new().await;
    let error = world
        .deliver(serde_json::json!({"Records": "none"}))
        .await
        .unwrap_err();
    assert!(error.starts_with("not an S3 event"), "{error}");
    // A record without a bucket or key is skipped with its reason.
    let mut event = end_to_end::s3_put_event("b", "imports/students/x.csv", "etag", 1);
    event["Records"][0]["s3"]["bucket"] = serde_json::json!({});
    event["Records"][0]["s3"]["object"] = serde_json::json!({});
    let outcomes = world.deliver(event).await.unwrap();
    assert!(
        matches!(&outcomes[0], RecordOutcome::Skipped { .. }),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn a_file_that_takes_longer_than_the_time_limit_is_refused() {
    let mut world = World::new().await;
    world.clients.config.import.time_limit = std::time::Duration::ZERO;
    let body = template_xlsx(&STUDENT_HEADERS, &[]);
    let report = imported(
        world
            .upload_and_import("imports/students/slow.xlsx", body)
            .await,
    );
    assert_eq!(report.status, "failed");
    assert!(report.error.unwrap().contains("took longer than 0 s"));
    assert_eq!(world.count("SELECT count(*) FROM students").await, 0);
}
