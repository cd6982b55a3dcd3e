//! Good and bad rows of real sheets: what lands, what is refused, what is cached.

use end_to_end::{decode_data_url, download};
use redis::AsyncCommands;

use crate::fixtures::*;

fn student(reg: &'static str, email: Cell, name: &'static str, school: &'static str) -> Vec<Cell> {
    vec![
        Text(reg),
        email,
        Text(name),
        Text(school),
        Date(2004, 3, 9),
        Number(110001.0),
        Text("+91 98765-43210"),
        Empty,
        Text("B.Tech CSE"),
        Number(2022.0),
    ]
}

#[tokio::test]
async fn a_students_template_with_good_and_bad_rows_partially_succeeds() {
    let world = World::new().await;
    let rows = vec![
        student(
            "2021001",
            Text("Asha@Example.COM"),
            "Asha Rao",
            "school of computer science and engineering",
        ),
        student(
            "2021002",
            Empty,
            "Ravi Kumar",
            "School of Civil Engineering",
        ),
        student("2021003", Empty, "Nobody", "School of Magic"),
        vec![
            Text("2021004"),
            Empty,
            Text("Too Young"),
            Text("School of Civil Engineering"),
            Date(2020, 1, 1),
            Text("110001"),
        ],
        student(
            "2021001",
            Empty,
            "Asha Again",
            "School of Civil Engineering",
        ),
    ];
    let report = imported(
        world
            .upload_and_import(
                "imports/students/batch 2024.xlsx",
                template_xlsx(&STUDENT_HEADERS, &rows),
            )
            .await,
    );

    assert_eq!(report.status, "partially_succeeded", "{report:?}");
    assert_eq!(
        (
            report.counts.rows,
            report.counts.inserted,
            report.counts.updated,
            report.counts.rejected
        ),
        (5, 2, 0, 3)
    );
    assert_eq!(report.sheet.as_deref(), Some("Students"));
    assert_eq!(report.header_row, Some(2));
    // Getting the file is its own stage, not counted in the load.
    let t = &report.timings;
    assert!(
        t.download_ms > 0.0 && t.parse_ms > 0.0 && t.load_ms >= 0.0,
        "{t:?}"
    );
    let reasons: Vec<(u32, String)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.reason.clone()))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(row, reason)| *row == 5 && reason.contains("unknown school")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(row, _)| *row == 6),
        "too young: {reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(row, reason)| *row == 7 && reason.contains("row 3")),
        "duplicate: {reasons:?}"
    );

    let client = world.db.client().await;
    let row = client
        .query_one(
            "SELECT email, phone, pincode, date_of_birth::text, batch, address, password_reset_required, password_hash, qr_code_token
               FROM students WHERE registration_no = '2021001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("asha@example.com")
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("9876543210")
    );
    assert_eq!(row.get::<_, String>(2), "110001");
    assert_eq!(row.get::<_, String>(3), "2004-03-09");
    assert_eq!(row.get::<_, Option<i32>>(4), Some(2022));
    assert_eq!(
        row.get::<_, Option<String>>(5),
        None,
        "an empty optional cell is NULL"
    );
    assert!(row.get::<_, bool>(6));
    assert!(row.get::<_, String>(7).starts_with("$2"), "a bcrypt hash");
    let token: String = row.get(8);

    // The token is what the app's scanner verifies: HS256 with the app's secret, claims n, t, r, iat.
    let claims = end_to_end::qr_token_claims(&token);
    assert_eq!(claims["t"], "S");
    assert_eq!(claims["r"], "2021001");
    assert_eq!(claims["n"].as_str().unwrap().len(), 4);
    assert_eq!(claims.as_object().unwrap().len(), 4, "{claims}");

    // The new student's QR is cached already, and decodes to the new token.
    assert_eq!(report.qr_cached, 2);
    let mut redis = world.clients.cache.connection();
    let value: String = redis
        .get(world.clients.cache.settings().key(&token))
        .await
        .unwrap();
    assert_eq!(decode_data_url(&value), token);

    // The report and the rejected rows are in the bucket; the imports row records the outcome.
    let key = report.report_key.clone().unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&download(&world.s3, &world.bucket, &key).await.unwrap()).unwrap();
    assert_eq!(json["status"], "partially_succeeded");
    assert_eq!(json["rejected"].as_array().unwrap().len(), reasons.len());
    // A spreadsheet upload's rejected rows come back as a spreadsheet.
    let rejected_key = format!("reports/{}-rejected.xlsx", report.import_id);
    assert_eq!(report.rejected_key.as_deref(), Some(rejected_key.as_str()));
    let xlsx = download(&world.s3, &world.bucket, &rejected_key)
        .await
        .unwrap();
    assert!(xlsx.starts_with(b"PK"), "an .xlsx (zip) file");
    let status: String = client
        .query_one(
            "SELECT status FROM imports WHERE id = $1",
            &[&report.import_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "partially_succeeded");
}

#[tokio::test]
async fn a_reupload_updates_details_but_never_id_token_or_password() {
    let world = World::new().await;
    let school = "School of Civil Engineering";
    let first = vec![
        student("2021001", Empty, "Asha Rao", school),
        student("2021002", Empty, "Ravi", school),
    ];
    imported(
        world
            .upload_and_import(
                "imports/students/a.xlsx",
                template_xlsx(&STUDENT_HEADERS, &first),
            )
            .await,
    );
    let client = world.db.client().await;
    let before = client.query_one("SELECT id, qr_code_token, password_hash FROM students WHERE registration_no = '2021001'", &[]).await.unwrap();

    let second = vec![
        student("2021001", Empty, "Asha R. Rao", school),
        student("2021002", Empty, "Ravi", school),
        student("2021003", Empty, "New", school),
    ];
    let report = imported(
        world
            .upload_and_import(
                "imports/students/b.xlsx",
                template_xlsx(&STUDENT_HEADERS, &second),
            )
            .await,
    );
    assert_eq!(report.status, "succeeded");
    assert_eq!(
        (
            report.counts.inserted,
            report.counts.updated,
            report.counts.unchanged
        ),
        (1, 1, 1)
    );
    let after = client
        .query_one("SELECT id, qr_code_token, password_hash, full_name FROM students WHERE registration_no = '2021001'", &[])
        .await
        .unwrap();
    assert_eq!(
        after.get::<_, uuid::Uuid>(0),
        before.get::<_, uuid::Uuid>(0)
    );
    assert_eq!(after.get::<_, String>(1), before.get::<_, String>(1));
    assert_eq!(after.get::<_, String>(2), before.get::<_, String>(2));
    assert_eq!(after.get::<_, String>(3), "Asha R. Rao");
}

#[tokio::test]
async fn an_email_of_another_student_is_refused() {
    let world = World::new().await;
    let school = "School of Civil Engineering";
    imported(
        world
            .upload_and_import(
                "imports/students/a.xlsx",
                template_xlsx(
                    &STUDENT_HEADERS,
                    &[student("2021001", Text("a@x.in"), "A", school)],
                ),
            )
            .await,
    );
    let report = imported(
        world
            .upload_and_import(
                "imports/students/b.xlsx",
                template_xlsx(
                    &STUDENT_HEADERS,
                    &[student("2021009", Text("A@x.in"), "B", school)],
                ),
            )
            .await,
    );
    assert_eq!(report.status, "failed");
    assert!(
        report.rejected[0]
            .reason
            .contains("already belongs to student 2021001"),
        "{:?}",
        report.rejected
    );
    assert_eq!(world.count("SELECT count(*) FROM students").await, 1);
}

#[tokio::test]
async fn a_stalls_csv_with_a_bom_is_imported_with_keyed_tokens_the_app_scans() {
    let world = World::new().await;
    world
        .db
        .client()
        .await
        .batch_execute(
            "INSERT INTO events (event_name, event_code, start_date, end_date,
                                 registration_start_date, registration_end_date)
             VALUES ('Fest', 'FEST-1', now(), now(), now(), now())",
        )
        .await
        .unwrap();
    let csv = "\u{feff}Stall No,Stall Name,School Name,Location,Event Code\nA-1,Robotics,School of Civil Engineering,Block A,fest-1\nA-2,Drones,school of civil engineering,,FEST-1\n";
    let report = imported(
        world
            .upload_and_import("imports/stalls/stalls.csv", csv.as_bytes().to_vec())
            .await,
    );
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.inserted, 2);
    let client = world.db.client().await;
    let row = client
        .query_one(
            "SELECT qr_code_token, location FROM stalls WHERE stall_number = 'A-2'",
            &[],
        )
        .await
        .unwrap();
    let token: String = row.get(0);
    let secret = secrecy::SecretString::from(end_to_end::JWT_SECRET);
    assert_eq!(token, shared::token::stall_token(&secret, "A-2").unwrap());
    assert!(
        token.starts_with("STALL_A-2_"),
        "the app's scanner wants the prefix: {token}"
    );
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(report.qr_cached, 2);
}

/// Files saved by LibreOffice (see shared/src/spreadsheet/fixtures/README.md): a title row, a
/// school by id and one by name, a registration number with leading zeros, a blank row, and a
/// row breaking five rules.
#[tokio::test]
async fn sheets_saved_by_an_office_suite_import_alike_in_every_format() {
    for file in ["students.xlsx", "students.xls", "students.ods"] {
        let world = World::new().await;
        world
            .db
            .client()
            .await
            .batch_execute(
                "INSERT INTO schools (id, school_name) VALUES ('123e4567-e89b-12d3-a456-426614174000', 'School of Engineering'), (gen_random_uuid(), 'School of Law')",
            )
            .await
            .unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/src/spreadsheet/fixtures")
            .join(file);
        let report = imported(
            world
                .upload_and_import(
                    &format!("imports/students/{file}"),
                    std::fs::read(path).unwrap(),
                )
                .await,
        );
        assert_eq!(report.status, "partially_succeeded", "{file}: {report:?}");
        assert_eq!(
            (report.counts.inserted, report.counts.rejected),
            (2, 1),
            "{file}"
        );
        assert!(
            report.rejected.iter().all(|r| r.row == 6),
            "{file}: {:?}",
            report.rejected
        );
        let client = world.db.client().await;
        let row = client
            .query_one("SELECT email, phone, date_of_birth::text FROM students WHERE registration_no = '007'", &[])
            .await
            .unwrap_or_else(|e| panic!("{file}: 007 kept its zeros: {e}"));
        assert_eq!(
            row.get::<_, Option<String>>(0).as_deref(),
            Some("asha.verma@example.com"),
            "{file}"
        );
        assert_eq!(
            row.get::<_, Option<String>>(1).as_deref(),
            Some("9876543210"),
            "{file}"
        );
        assert_eq!(row.get::<_, String>(2), "2005-05-15", "{file}");
    }
}

#[tokio::test]
async fn the_apps_own_template_with_instructions_first_imports() {
    let world = World::new().await;
    world
        .db
        .client()
        .await
        .batch_execute("INSERT INTO schools (id, school_name) VALUES ('123e4567-e89b-12d3-a456-426614174000', 'School of Engineering')")
        .await
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/src/spreadsheet/fixtures/template.xls");
    let report = imported(
        world
            .upload_and_import(
                "imports/students/template.xls",
                std::fs::read(path).unwrap(),
            )
            .await,
    );
    assert_eq!(report.sheet.as_deref(), Some("Students"), "{report:?}");
    assert!(report.counts.inserted >= 1, "{report:?}");
    assert!(
        report
            .rejected
            .iter()
            .any(|r| r.reason.contains("duplicate")),
        "{report:?}"
    );
}

#[tokio::test]
async fn the_legacy_password_setting_gives_new_students_the_apps_old_password() {
    let mut world = World::new().await;
    world.clients.config.import.password = shared::import::PasswordPolicy::LegacyDateOfBirthPincode;
    let rows = vec![student(
        "2021001",
        Empty,
        "Asha Rao",
        "School of Civil Engineering",
    )];
    let report = imported(
        world
            .upload_and_import(
                "imports/students/legacy.xlsx",
                template_xlsx(&STUDENT_HEADERS, &rows),
            )
            .await,
    );
    assert_eq!(report.counts.inserted, 1);
    let hash: String = world
        .db
        .client()
        .await
        .query_one("SELECT password_hash FROM students", &[])
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$2b$12$"), "bcrypt cost 12: {hash}");
    assert!(
        bcrypt::verify("20040309110001", &hash).unwrap(),
        "YYYYMMDD of the birth date, then the pincode"
    );
}
