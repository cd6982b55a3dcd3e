//! The app keeps writing while an import runs. The importer decides which of a file's rows are
//! new when it starts; a row the app inserts or deletes meanwhile fails the import, nothing of
//! it written, and the retry Lambda makes gets that row right.

use crate::fixtures::*;

const HEADER: &str = "registration_no,full_name,school,date_of_birth,pincode\n";

fn csv(rows: &[(&str, &str)]) -> Vec<u8> {
    let mut text = HEADER.to_owned();
    for (registration_no, name) in rows {
        text.push_str(&format!(
            "{registration_no},{name},School of Civil Engineering,09/03/2004,110001\n"
        ));
    }
    text.into_bytes()
}

/// Runs `delivery` while the app's transaction holds its change uncommitted, and commits that
/// change once the import waits on it.
async fn with_app_committing_midway<T>(
    world: &World,
    app: &tokio_postgres::Client,
    delivery: impl std::future::Future<Output = T>,
) -> T {
    let commit_when_blocked = async {
        let watcher = world.db.client().await;
        for _ in 0..500 {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        app.batch_execute("COMMIT").await.unwrap();
    };
    tokio::join!(delivery, commit_when_blocked).0
}

async fn name_of(world: &World, registration_no: &str) -> Option<String> {
    world
        .db
        .client()
        .await
        .query_opt(
            "SELECT full_name FROM students WHERE registration_no = $1",
            &[&registration_no],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test]
async fn a_row_the_app_deletes_midway_is_inserted_again_as_the_file_says() {
    let world = World::new().await;
    imported(
        world
            .upload_and_import("imports/students/first.csv", csv(&[("X1", "Before")]))
            .await,
    );
    let app = world.db.client().await;
    app.batch_execute("BEGIN; DELETE FROM students WHERE registration_no = 'X1'")
        .await
        .unwrap();
    let event = end_to_end::upload(
        &world.s3,
        &world.bucket,
        "imports/students/second.csv",
        csv(&[("N1", "New"), ("X1", "After")]),
    )
    .await;

    // The import reads the existing rows it updates under a lock, so it waits for the app's
    // delete and then finds the row gone: the file's row is inserted, not lost or miscounted.
    let report = imported(
        with_app_committing_midway(&world, &app, world.deliver(event))
            .await
            .unwrap(),
    );
    assert_eq!(report.status, "succeeded");
    assert_eq!((report.counts.inserted, report.counts.updated), (2, 0));
    assert_eq!(name_of(&world, "X1").await.as_deref(), Some("After"));
}

#[tokio::test]
async fn a_row_the_app_inserts_midway_fails_the_import_and_the_retry_updates_it() {
    let world = World::new().await;
    let app = world.db.client().await;
    app.batch_execute(
        "BEGIN;
         INSERT INTO students (registration_no, password_hash, full_name, school_id, date_of_birth, pincode)
         SELECT 'Y1', '!', 'From The App', id, '2004-03-09', '110001' FROM schools LIMIT 1",
    )
    .await
    .unwrap();
    let event = end_to_end::upload(
        &world.s3,
        &world.bucket,
        "imports/students/list.csv",
        csv(&[("Y1", "From The File")]),
    )
    .await;

    let failed = with_app_committing_midway(&world, &app, world.deliver(event.clone())).await;
    let error = failed.expect_err("the import must fail, to be retried");
    assert!(error.contains("duplicate key"), "{error}");

    let retried = imported(world.deliver(event).await.unwrap());
    assert_eq!(retried.status, "succeeded");
    assert_eq!((retried.counts.inserted, retried.counts.updated), (0, 1));
    assert_eq!(
        name_of(&world, "Y1").await.as_deref(),
        Some("From The File")
    );
    assert_eq!(world.count("SELECT count(*) FROM students").await, 1);
}
