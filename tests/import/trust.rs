//! Imports beside the live app: re-imports never destroy data, the preview is the import,
//! stalls belong to events, rejected rows come back ready to fix, every row is numbered as the
//! file shows it, values only Postgres refuses stay in their row, and a run that dies leaves
//! nothing stuck.

use end_to_end::download;
use shared::import::claim;
use shared::import::event::ImportTarget;
use shared::import::{ImportOptions, Importer};

use crate::fixtures::*;

const CIVIL: &str = "School of Civil Engineering";

fn csv(lines: &[&str]) -> Vec<u8> {
    lines.join("\r\n").into_bytes()
}

impl World {
    fn importer(&self) -> Importer<'_> {
        Importer {
            db: &self.clients.db,
            cache: &self.clients.cache,
            storage: &self.clients.storage,
            settings: &self.clients.config.import,
            qr: &self.clients.config.qr,
            jwt_secret: &self.clients.jwt_secret,
        }
    }

    /// What `POST /imports` stores before the upload: the key awaiting its file, with options.
    async fn announce(&self, key: &str, blank_cells: &str, event: Option<uuid::Uuid>) {
        let kind = if key.starts_with("imports/stalls/") {
            "stalls"
        } else {
            "students"
        };
        self.db
            .client()
            .await
            .execute(
                "INSERT INTO imports (kind, bucket, object_key, status, blank_cells, event_id)
                 VALUES ($1, $2, $3, 'awaiting_upload', $4, $5)",
                &[&kind, &self.bucket, &key, &blank_cells, &event],
            )
            .await
            .unwrap();
    }

    async fn student(&self, registration_no: &str) -> Vec<Option<String>> {
        let row = self
            .db
            .client()
            .await
            .query_one(
                "SELECT full_name, phone, email, address FROM students WHERE registration_no = $1",
                &[&registration_no],
            )
            .await
            .unwrap();
        (0..4).map(|i| row.get(i)).collect()
    }

    /// A rule of the app's database that validation does not know: no student named
    /// "Refused Here" (rows already stored are not checked).
    async fn refuse_the_name_refused_here(&self) {
        self.db
            .client()
            .await
            .batch_execute(
                "ALTER TABLE students ADD CONSTRAINT chk_test_name CHECK (full_name <> 'Refused Here') NOT VALID",
            )
            .await
            .unwrap();
    }

    async fn event(&self, code: &str) -> uuid::Uuid {
        self.db
            .client()
            .await
            .query_one(
                "INSERT INTO events (event_name, event_code, start_date, end_date,
                                     registration_start_date, registration_end_date, status)
                 VALUES ($1, $1, now() + interval '2 days', now() + interval '3 days',
                         now() - interval '1 day', now() + interval '1 day', 'APPROVED')
                 RETURNING id",
                &[&code],
            )
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test]
async fn re_imports_keep_absent_columns_and_blank_cells_and_list_every_change() {
    let world = World::new().await;
    let first = csv(&[
        "Registration No,Full Name,School,DOB,Pincode,Phone,Email,Address",
        &format!("2024001,Asha Rao,{CIVIL},2004-03-09,110001,9876543210,asha@x.in,12 MG Road"),
    ]);
    imported(
        world
            .upload_and_import("imports/students/first.csv", first)
            .await,
    );
    // The student edits their own name in the app.
    world
        .db
        .client()
        .await
        .execute("UPDATE students SET full_name = 'Asha R. Rao'", &[])
        .await
        .unwrap();

    // A sheet without the address column and with blank phone and email cells.
    let second = csv(&[
        "Registration No,Full Name,School,DOB,Pincode,Phone,Email",
        &format!("2024001,Asha Rao,{CIVIL},2004-03-09,110001,,"),
    ]);
    let report = imported(
        world
            .upload_and_import("imports/students/second.csv", second)
            .await,
    );
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.updated, 1);
    assert_eq!(
        world.student("2024001").await,
        [
            Some("Asha Rao".into()),
            Some("9876543210".into()),
            Some("asha@x.in".into()),
            Some("12 MG Road".into())
        ],
        "blank cells and an absent column keep what is stored"
    );
    // The overwrite of what the student typed is listed, never silent.
    let changes = &report.changes[0];
    assert_eq!((changes.row, changes.key.as_str()), (2, "2024001"));
    assert_eq!(
        changes
            .changes
            .iter()
            .map(|c| (c.field.as_str(), c.old.as_deref(), c.new.as_deref()))
            .collect::<Vec<_>>(),
        [("full_name", Some("Asha R. Rao"), Some("Asha Rao"))]
    );

    // The admin asks for blanks to clear: the blank cells clear, the absent column stays.
    let key = "imports/students/third.csv";
    world.announce(key, "clear", None).await;
    let third = csv(&[
        "Registration No,Full Name,School,DOB,Pincode,Phone,Email",
        &format!("2024001,Asha Rao,{CIVIL},2004-03-09,110001,,"),
    ]);
    let report = imported(world.upload_and_import(key, third).await);
    assert_eq!(
        report.options.blank_cells,
        shared::import::BlankCells::Clear
    );
    assert_eq!(
        world.student("2024001").await,
        [
            Some("Asha Rao".into()),
            None,
            None,
            Some("12 MG Road".into())
        ]
    );
    let fields: Vec<&str> = report.changes[0]
        .changes
        .iter()
        .map(|c| c.field.as_str())
        .collect();
    assert_eq!(fields, ["email", "phone"]);
}

#[tokio::test]
async fn the_preview_is_what_the_import_then_does() {
    let world = World::new().await;
    imported(
        world
            .upload_and_import(
                "imports/students/base.csv",
                csv(&[
                    "Registration No,Full Name,School,DOB,Pincode",
                    &format!("2024001,Asha,{CIVIL},2004-03-09,110001"),
                    &format!("2024002,Ravi,{CIVIL},2004-03-09,110001"),
                ]),
            )
            .await,
    );
    let key = "imports/students/next.csv";
    let body = csv(&[
        "Registration No,Full Name,School,DOB,Pincode",
        &format!("2024001,Asha,{CIVIL},2004-03-09,110001"),
        &format!("2024002,Ravi Kumar,{CIVIL},2004-03-09,110002"),
        &format!("2024003,New,{CIVIL},2004-03-09,110001"),
        "2024004,Nowhere,School of Magic,2004-03-09,110001",
    ]);
    let event = end_to_end::upload(&world.s3, &world.bucket, key, body).await;
    let preview = world
        .importer()
        .dry_run(&world.bucket, key, ImportOptions::default())
        .await
        .unwrap();
    let actions: Vec<(u32, &str)> = preview.rows.iter().map(|r| (r.row, r.action)).collect();
    assert_eq!(
        actions,
        [
            (2, "unchanged"),
            (3, "update"),
            (4, "insert"),
            (5, "rejected")
        ]
    );
    assert_eq!(
        preview.rows[3].reason.as_deref(),
        Some("school: unknown school \"School of Magic\"")
    );
    assert_eq!(
        world.count("SELECT count(*) FROM students").await,
        2,
        "nothing written"
    );

    let report = imported(world.deliver(event).await.unwrap());
    assert_eq!(report.counts, preview.counts);
    assert_eq!(report.changes, preview.changes);
    assert_eq!(report.rejected, preview.rejected);
    assert_eq!(world.count("SELECT count(*) FROM students").await, 3);
}

#[tokio::test]
async fn stalls_take_their_event_from_the_row_or_the_upload_and_keep_it_on_re_import() {
    let world = World::new().await;
    let fest = world.event("TECH-FEST-2026").await;
    let expo = world.event("EXPO-2026").await;
    let report = imported(
        world
            .upload_and_import(
                "imports/stalls/a.csv",
                csv(&[
                    "Stall Number,Stall Name,School,Event",
                    &format!("S-001,Robots,{CIVIL},tech-fest-2026"),
                    &format!("S-002,Drones,{CIVIL},{expo}"),
                    &format!("S-003,Lost,{CIVIL},NO-SUCH-EVENT"),
                    &format!("S-004,Homeless,{CIVIL},"),
                ]),
            )
            .await,
    );
    assert_eq!((report.counts.inserted, report.counts.rejected), (2, 2));
    let reasons: Vec<(u32, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (4, "unknown event \"NO-SUCH-EVENT\""),
            (5, "no event: add an event column or choose the upload's event; the app cannot scan a stall that belongs to no event")
        ]
    );
    // The upload's event serves rows without one; a stall that has one keeps it.
    let key = "imports/stalls/b.csv";
    world.announce(key, "keep", Some(expo)).await;
    let report = imported(
        world
            .upload_and_import(
                key,
                csv(&[
                    "Stall Number,Stall Name,School",
                    &format!("S-001,Robots,{CIVIL}"),
                    &format!("S-004,Homeless,{CIVIL}"),
                ]),
            )
            .await,
    );
    assert_eq!(report.status, "succeeded", "{report:?}");
    let client = world.db.client().await;
    let events: Vec<(String, uuid::Uuid, String)> = client
        .query(
            "SELECT stall_number, event_id, qr_code_token FROM stalls ORDER BY stall_number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        events
            .iter()
            .map(|(n, e, _)| (n.as_str(), *e))
            .collect::<Vec<_>>(),
        [("S-001", fest), ("S-002", expo), ("S-004", expo)]
    );
    // The app's scanner takes tokens with the STALL_ prefix and finds the stall by the token.
    for (number, _, token) in &events {
        assert!(token.starts_with(&format!("STALL_{number}_")), "{token}");
        let found: String = client
            .query_one(
                "SELECT stall_number FROM stalls WHERE qr_code_token = $1",
                &[token],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(&found, number);
    }
}

#[tokio::test]
async fn rejected_rows_come_back_with_their_cells_and_import_once_fixed() {
    let world = World::new().await;
    let report = imported(
        world
            .upload_and_import(
                "imports/students/list.csv",
                csv(&[
                    "Registration No,Full Name,School,DOB,Pincode,Phone,Notes",
                    &format!("2024001,Asha,{CIVIL},2004-03-09,110001,+91 98765 43210,ok"),
                    &format!("2024002,=Ravi,{CIVIL},1989-12-31,11000,+91 98765 43211,born early"),
                ]),
            )
            .await,
    );
    assert_eq!(report.counts.rejected, 1);
    let key = report.rejected_key.clone().expect("a rejected-rows file");
    assert!(key.ends_with("-rejected.csv"), "{key}");
    let file = String::from_utf8(download(&world.s3, &world.bucket, &key).await.unwrap()).unwrap();
    let mut lines = file.lines();
    assert_eq!(
        lines.next(),
        Some("Registration No,Full Name,School,DOB,Pincode,Phone,Notes,Rejected row,Rejection reason")
    );
    let line = lines.next().unwrap();
    assert!(
        line.starts_with(&format!(
            "2024002,'=Ravi,{CIVIL},1989-12-31,11000,'+91 98765 43211,born early,3,"
        )),
        "{line}"
    );
    assert!(line.contains("before 1990-01-01"), "{line}");
    assert!(line.contains("not a 6-digit pincode"), "{line}");

    // The admin fixes the two cells and uploads the same file again.
    let fixed = file
        .replace("1989-12-31", "1999-12-31")
        .replace(",11000,", ",110001,");
    let report = imported(
        world
            .upload_and_import("imports/students/fixed.csv", fixed.into_bytes())
            .await,
    );
    assert_eq!(
        (report.status.as_str(), report.counts.inserted),
        ("succeeded", 1),
        "{report:?}"
    );
    assert_eq!(
        world.student("2024002").await[..2],
        [Some("=Ravi".to_owned()), Some("9876543211".to_owned())]
    );
}

#[tokio::test]
async fn a_spreadsheet_upload_gets_its_rejected_rows_as_xlsx() {
    let world = World::new().await;
    let rows = vec![vec![
        Text("2024009"),
        Empty,
        Text("Young"),
        Text(CIVIL),
        Date(2020, 1, 1),
        Text("110001"),
    ]];
    let report = imported(
        world
            .upload_and_import(
                "imports/students/list.xlsx",
                template_xlsx(&STUDENT_HEADERS, &rows),
            )
            .await,
    );
    let key = report.rejected_key.clone().unwrap();
    assert!(key.ends_with("-rejected.xlsx"), "{key}");
    let bytes = download(&world.s3, &world.bucket, &key).await.unwrap();
    let parsed = shared::spreadsheet::read_records(
        &bytes,
        shared::spreadsheet::Format::Xlsx,
        shared::kind::Kind::Students,
        &Default::default(),
        chrono::Utc::now().date_naive(),
    )
    .unwrap();
    // Re-read as an upload: the same row, the same refusal, the added columns ignored.
    assert_eq!(parsed.ignored_columns, ["Rejected row", "Rejection reason"]);
    assert_eq!(parsed.rejected.len(), 1);
    assert!(parsed.rejected[0]
        .reason
        .contains("students must be at least 15"));
}

#[tokio::test]
async fn csv_rows_are_numbered_as_a_spreadsheet_shows_them() {
    let world = World::new().await;
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(csv(&[
        "\"Registration No\",\"Full Name\",School,DOB,Pincode,Address",
        &format!("2024001,Asha,{CIVIL},2004-03-09,110001,\"Flat 2"),
        "MG Road",
        "Delhi\"",
        "",
        &format!("2024003,Bad,{CIVIL},2004-03-09,1100"),
    ]));
    // Row 2 is one record over three lines (its address spans them); row 3 is the blank line;
    // row 4 is the bad one, as Excel and LibreOffice number it.
    let report = imported(
        world
            .upload_and_import("imports/students/excel.csv", body)
            .await,
    );
    let rows: Vec<u32> = report.rejected.iter().map(|r| r.row).collect();
    assert_eq!(rows, [4], "{report:?}");
    assert_eq!(report.header_row, Some(1));
}

#[tokio::test]
async fn control_characters_and_values_only_postgres_refuses_reject_their_row_only() {
    let world = World::new().await;
    world.refuse_the_name_refused_here().await;
    let report = imported(
        world
            .upload_and_import(
                "imports/students/odd.csv",
                csv(&[
                    "Registration No,Full Name,School,DOB,Pincode",
                    &format!("2024001,Asha,{CIVIL},2004-03-09,110001"),
                    &format!("2024002,Nul\u{0}Name,{CIVIL},2004-03-09,110001"),
                    &format!("2024003,Refused Here,{CIVIL},2004-03-09,110001"),
                    &format!("2024004,Ravi,{CIVIL},2004-03-09,110001"),
                ]),
            )
            .await,
    );
    assert_eq!(report.status, "partially_succeeded", "{report:?}");
    assert_eq!((report.counts.inserted, report.counts.rejected), (2, 2));
    assert_eq!(
        report.rejected[0].reason,
        "holds the control character U+0000: retype the value"
    );
    assert_eq!(report.rejected[1].row, 4);
    assert!(
        report.rejected[1]
            .reason
            .contains("violates check constraint \"chk_test_name\""),
        "{:?}",
        report.rejected
    );
    assert_eq!(world.count("SELECT count(*) FROM students").await, 2);
    // Both come back with their cells: the one the reader refused as it read it (NUL, which no
    // store can hold, shown as U+FFFD), the one the database refused read again from the file.
    let lines: Vec<(u32, Vec<&str>)> = report
        .rejected_file
        .rows
        .iter()
        .map(|line| (line.row, line.cells.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        lines,
        [
            (
                3,
                vec!["2024002", "Nul\u{FFFD}Name", CIVIL, "2004-03-09", "110001"]
            ),
            (
                4,
                vec!["2024003", "Refused Here", CIVIL, "2004-03-09", "110001"]
            ),
        ]
    );
}

#[tokio::test]
async fn an_update_only_postgres_refuses_rejects_its_row_while_the_others_load() {
    let world = World::new().await;
    imported(
        world
            .upload_and_import(
                "imports/students/first.csv",
                csv(&[
                    "Registration No,Full Name,School,DOB,Pincode",
                    &format!("2024001,Asha,{CIVIL},2004-03-09,110001"),
                    &format!("2024002,Ravi,{CIVIL},2004-03-09,110001"),
                    &format!("2024003,Meera,{CIVIL},2004-03-09,110001"),
                ]),
            )
            .await,
    );
    world.refuse_the_name_refused_here().await;
    // Two updates and one insert in one chunk: the second update breaks the app's rule.
    let report = imported(
        world
            .upload_and_import(
                "imports/students/second.csv",
                csv(&[
                    "Registration No,Full Name,School,DOB,Pincode",
                    &format!("2024001,Asha Rao,{CIVIL},2004-03-09,110001"),
                    &format!("2024002,Refused Here,{CIVIL},2004-03-09,110001"),
                    &format!("2024003,Meera,{CIVIL},2004-03-09,110001"),
                    &format!("2024004,Kiran,{CIVIL},2004-03-09,110001"),
                ]),
            )
            .await,
    );
    assert_eq!(report.status, "partially_succeeded", "{report:?}");
    let c = &report.counts;
    assert_eq!(
        (c.inserted, c.updated, c.unchanged, c.rejected),
        (1, 1, 1, 1),
        "{report:?}"
    );
    let rejected: Vec<(u32, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.column.as_str()))
        .collect();
    assert_eq!(rejected, [(3, "registration_no")]);
    assert!(
        report.rejected[0]
            .reason
            .contains("violates check constraint \"chk_test_name\""),
        "{:?}",
        report.rejected
    );
    // The refused update is not listed as a change; the one that loaded is.
    let changed: Vec<&str> = report.changes.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(changed, ["2024001"]);
    assert_eq!(
        world.student("2024001").await[0].as_deref(),
        Some("Asha Rao")
    );
    assert_eq!(world.student("2024002").await[0].as_deref(), Some("Ravi"));
    assert_eq!(world.count("SELECT count(*) FROM students").await, 4);
}

#[tokio::test]
async fn the_apps_rules_for_students_are_applied_at_validation() {
    let world = World::new().await;
    let report = imported(
        world
            .upload_and_import(
                "imports/students/rules.csv",
                csv(&[
                    "Registration No,Full Name,School,DOB,Pincode",
                    &format!("2024001,Old,{CIVIL},1989-12-31,110001"),
                    &format!("2024003,Fine,{CIVIL},1990-01-01,110001"),
                ]),
            )
            .await,
    );
    let reasons: Vec<(u32, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (2, "1989-12-31 is before 1990-01-01: the app's first-login reset refuses earlier dates of birth, so the student could never log in"),
        ]
    );
    // The imported student can be scanned and checked in by the app: its counters start at 0.
    let row = world
        .db
        .client()
        .await
        .query_one(
            "SELECT role, is_inside_event, total_scan_count, password_reset_required, length(password_hash)
               FROM students WHERE registration_no = '2024003'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, bool>(1),
            row.get::<_, i32>(2),
            row.get::<_, bool>(3),
            row.get::<_, i32>(4)
        ),
        ("STUDENT".into(), false, 0, true, 60)
    );
}

fn target(world: &World, key: &str, version: &str) -> ImportTarget {
    ImportTarget {
        bucket: world.bucket.clone(),
        key: key.into(),
        version: version.into(),
        version_id: None,
        kind: shared::kind::Kind::Students,
        format: shared::spreadsheet::Format::Csv,
    }
}

#[tokio::test]
async fn a_killed_run_releases_its_claim_at_once_and_cannot_commit_after_a_takeover() {
    let world = World::new().await;
    let key = "imports/students/killed.csv";
    let event = end_to_end::upload(
        &world.s3,
        &world.bucket,
        key,
        csv(&[
            "Registration No,Full Name,School,DOB,Pincode",
            &format!("2024001,Asha,{CIVIL},2004-03-09,110001"),
        ]),
    )
    .await;
    let e_tag = event["Records"][0]["s3"]["object"]["eTag"]
        .as_str()
        .unwrap()
        .to_owned();
    // A run takes the claim in its transaction, then its process dies.
    let doomed = world.db.client().await;
    let id = claim::register(&doomed, &target(&world, key, &e_tag))
        .await
        .unwrap();
    doomed.batch_execute("BEGIN").await.unwrap();
    let claim::Claim::Claimed(held) = claim::take(&doomed, id).await.unwrap() else {
        panic!("the first run claims it")
    };
    assert_eq!(held.attempt, 1);
    drop(doomed);

    // The retry takes over at once: no lease to wait out.
    let started = std::time::Instant::now();
    let report = imported(world.deliver(event).await.unwrap());
    assert_eq!(
        (report.status.as_str(), report.counts.inserted),
        ("succeeded", 1)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The dead run's transaction, its bump of `attempts` included, rolled back.
    let record = claim::find(&world.db.client().await, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.attempts, 1);

    // The first run, had it lived on, could not record its outcome: its claim is gone.
    let late = world.db.client().await;
    late.batch_execute("BEGIN").await.unwrap();
    let counts = claim::Counts::default();
    let refused = claim::finish(
        &late,
        &held,
        &claim::Outcome {
            status: claim::ImportStatus::Failed,
            counts: &counts,
            reasons: &serde_json::json!([]),
            report: &serde_json::json!({}),
            qr_pending: &[],
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!("import {id} was taken over by another run (attempt 1 is no longer current); this run's work is discarded")
    );
}

#[tokio::test]
async fn a_redelivery_completes_the_report_and_caching_a_finished_import_lacks() {
    let world = World::new().await;
    let key = "imports/students/unfinished.csv";
    let event = end_to_end::upload(
        &world.s3,
        &world.bucket,
        key,
        csv(&[
            "Registration No,Full Name,School,DOB,Pincode",
            &format!("2024001,Asha,{CIVIL},2004-03-09,110001"),
            &format!("2024002,Young,{CIVIL},2020-03-09,110001"),
        ]),
    )
    .await;
    let first = imported(world.deliver(event.clone()).await.unwrap());
    // As if the run died right after its commit: no report files, no cached images.
    let client = world.db.client().await;
    client
        .execute(
            "UPDATE imports SET report_written_at = NULL, report_key = NULL, rejected_key = NULL,
                    qr_pending = ARRAY(SELECT id FROM students)
              WHERE id = $1",
            &[&first.import_id],
        )
        .await
        .unwrap();
    let report_key = first.report_key.clone().unwrap();
    world
        .s3
        .delete_object()
        .bucket(&world.bucket)
        .key(&report_key)
        .send()
        .await
        .unwrap();
    let mut redis = end_to_end::redis_connection(&end_to_end::redis_url()).await;
    let prefix = world.clients.config.cache.key_prefix.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap();

    let again = imported(world.deliver(event).await.unwrap());
    assert!(again.redelivered);
    assert_eq!(again.qr_cached, 1);
    assert!(download(&world.s3, &world.bucket, &report_key)
        .await
        .is_some());
    let record = claim::find(&client, first.import_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.report_key.as_deref(), Some(report_key.as_str()));
    assert!(record.rejected_key.is_some());
    let pending: Option<Vec<uuid::Uuid>> = client
        .query_one(
            "SELECT qr_pending FROM imports WHERE id = $1",
            &[&first.import_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, None);
}
