//! Files larger than one chunk: the importer loads rows while it is still reading the file, so
//! these check that a file spanning many chunks counts, rejects and caches as a small one
//! does, and that a file refused after some chunks were written leaves nothing behind.

use crate::fixtures::*;

/// More than two of the importer's 10,000-row chunks.
const ROWS: usize = 25_000;

/// A students CSV whose row `i` (sheet row `i + 2`) is `line(i)`, or a generated student.
fn students_csv(rows: usize, line: impl Fn(usize) -> Option<String>) -> Vec<u8> {
    let mut csv = String::from(
        "registration_no,email,full_name,school,date_of_birth,pincode,phone,address,program_name,batch\n",
    );
    for i in 0..rows {
        let row = line(i).unwrap_or_else(|| {
            student_line(
                &format!("R{i:06}"),
                &format!("s{i}@campus.in"),
                &format!("Student {i}"),
            )
        });
        csv.push_str(&row);
        csv.push('\n');
    }
    csv.into_bytes()
}

fn student_line(registration_no: &str, email: &str, name: &str) -> String {
    format!("{registration_no},{email},{name},School of Civil Engineering,09/03/2004,110001,9876543210,,B.Tech CSE,2022")
}

async fn name_of(world: &World, registration_no: &str) -> String {
    world
        .db
        .client()
        .await
        .query_one(
            "SELECT full_name FROM students WHERE registration_no = $1",
            &[&registration_no],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_file_refused_after_rows_were_loaded_leaves_nothing_behind() {
    let mut world = World::new().await;
    let before = students_csv(1, |_| {
        Some(student_line("R000005", "old@campus.in", "Original Name"))
    });
    imported(
        world
            .upload_and_import("imports/students/first.csv", before)
            .await,
    );

    // The row cap is passed only after two chunks have been written, one of them updating
    // the student imported above.
    world.clients.config.import.limits.max_rows = 24_000;
    let body = students_csv(ROWS, |i| {
        (i == 5).then(|| student_line("R000005", "old@campus.in", "Changed Name"))
    });
    let report = imported(
        world
            .upload_and_import("imports/students/big.csv", body)
            .await,
    );

    assert_eq!(report.status, "failed");
    let error = report.error.unwrap_or_default();
    assert!(error.contains("more than 24000 rows"), "{error}");
    assert_eq!(world.count("SELECT count(*) FROM students").await, 1);
    assert_eq!(name_of(&world, "R000005").await, "Original Name");
    assert_eq!(
        world
            .count("SELECT count(*) FROM imports WHERE status = 'failed' AND rows_inserted = 0")
            .await,
        1
    );
}

#[tokio::test]
async fn a_file_of_many_chunks_counts_rejects_and_caches_every_row() {
    let world = World::new().await;
    let before = [
        student_line("R000001", "s1@campus.in", "Student 1"),
        student_line("R000002", "s2@campus.in", "Student 2"),
        student_line("OTHER01", "other@campus.in", "Someone Else"),
    ];
    let first = students_csv(before.len(), |i| Some(before[i].clone()));
    imported(
        world
            .upload_and_import("imports/students/first.csv", first)
            .await,
    );
    // An email the app stored with capitals belongs to that student, whatever its case.
    world
        .db
        .client()
        .await
        .batch_execute(
            "INSERT INTO students (registration_no, email, password_hash, full_name, school_id, date_of_birth, pincode)
             SELECT 'APP0001', 'Mixed.Case@Campus.in', '!', 'App Student', id, '2004-03-09', '110001' FROM schools LIMIT 1",
        )
        .await
        .unwrap();

    // Row R000001 is unchanged, R000002 renamed; the rows below each sit in a later chunk than
    // the row they clash with.
    let body = students_csv(ROWS, |i| match i {
        2 => Some(student_line("R000002", "s2@campus.in", "Student Two")),
        12_000 => Some(student_line("R000007", "dup@campus.in", "Second R000007")),
        21_000 => Some(student_line("R021000", "other@campus.in", "Email Thief")),
        22_000 => Some(student_line(
            "R022000",
            "mixed.case@campus.in",
            "Case Thief",
        )),
        23_000 => Some(student_line(
            "R023000",
            "s3@campus.in",
            "Same Email As Row 5",
        )),
        _ => None,
    });
    let report = imported(
        world
            .upload_and_import("imports/students/big.csv", body)
            .await,
    );

    assert_eq!(report.status, "partially_succeeded");
    let counts = &report.counts;
    assert_eq!(
        (
            counts.rows,
            counts.inserted,
            counts.updated,
            counts.unchanged,
            counts.rejected
        ),
        (ROWS as i32, ROWS as i32 - 6, 1, 1, 4)
    );
    let reasons: Vec<(u32, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (12_002, "duplicate of row 9"),
            (21_002, "already belongs to student OTHER01"),
            (22_002, "already belongs to student APP0001"),
            (23_002, "duplicate of row 5"),
        ]
    );
    assert_eq!(
        world.count("SELECT count(*) FROM students").await,
        3 + 1 + ROWS as i64 - 6
    );
    assert_eq!(name_of(&world, "R000002").await, "Student Two");
    assert_eq!(name_of(&world, "R000007").await, "Student 7");
    assert_eq!(report.qr_cached, ROWS as u64 - 6 + 1);
    assert_eq!(
        world
            .count("SELECT count(DISTINCT qr_code_token) FROM students WHERE registration_no LIKE 'R%'")
            .await,
        ROWS as i64 - 4
    );
}
