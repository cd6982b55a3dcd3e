//! S3 delivers at least once: the same object version imported twice, or twice at once, has
//! the effect of once; a run that dies releases its claim with its connection, and the next
//! delivery takes over at once.

use end_to_end::s3_put_event;
use import_spreadsheet::{handle, Clients};
use lambda_runtime::{Context, LambdaEvent};
use shared::storage::Storage;

use crate::fixtures::*;

fn rows() -> Vec<Vec<Cell>> {
    (0..50)
        .map(|i| {
            let reg: &'static str = Box::leak(format!("2021{i:03}").into_boxed_str());
            vec![
                Text(reg),
                Empty,
                Text("Student"),
                Text("School of Civil Engineering"),
                Date(2003, 1, 1),
                Text("560001"),
            ]
        })
        .collect()
}

/// Uploads the students list of these tests; returns S3's event for it.
async fn upload_list(world: &World) -> serde_json::Value {
    end_to_end::upload(
        &world.s3,
        &world.bucket,
        "imports/students/list.xlsx",
        template_xlsx(&STUDENT_HEADERS, &rows()),
    )
    .await
}

/// The handler's clients as another Lambda instance has them: its own Postgres connection,
/// and `storage`.
fn instance_with(world: &World, storage: Storage) -> Clients {
    Clients {
        db: world.db.database(),
        cache: world.clients.cache.clone(),
        storage,
        config: world.clients.config.clone(),
        jwt_secret: world.clients.jwt_secret.clone(),
    }
}

/// Runs the handler of `clients` on `event`, as Lambda would.
async fn deliver_to(
    clients: &Clients,
    event: serde_json::Value,
) -> Result<Vec<import_spreadsheet::RecordOutcome>, lambda_runtime::Diagnostic> {
    handle(
        LambdaEvent::new(serde_json::from_value(event).unwrap(), Context::default()),
        clients,
    )
    .await
}

/// The status and last error of the test's one import.
async fn status_of_the_import(client: &tokio_postgres::Client) -> (String, Option<String>) {
    let row = client
        .query_one("SELECT status, last_error FROM imports", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_redelivered_event_returns_the_earlier_outcome_and_changes_nothing() {
    let world = World::new().await;
    let event = upload_list(&world).await;
    let first = imported(world.deliver(event.clone()).await.unwrap());
    assert_eq!(
        (
            first.status.as_str(),
            first.counts.inserted,
            first.redelivered
        ),
        ("succeeded", 50, false)
    );
    let tokens_before = world
        .count("SELECT count(DISTINCT qr_code_token) FROM students")
        .await;

    let again = imported(world.deliver(event).await.unwrap());
    assert!(again.redelivered);
    assert_eq!(
        (
            again.import_id,
            again.status.as_str(),
            again.counts.inserted
        ),
        (first.import_id, "succeeded", 50)
    );
    assert_eq!(world.count("SELECT count(*) FROM students").await, 50);
    assert_eq!(
        world
            .count("SELECT count(DISTINCT qr_code_token) FROM students")
            .await,
        tokens_before
    );
    assert_eq!(world.count("SELECT count(*) FROM imports").await, 1);
}

#[tokio::test]
async fn two_deliveries_at_once_import_once() {
    let world = World::new().await;
    let event = upload_list(&world).await;
    // Two sets of clients, each with its own connection, as two Lambda instances would have.
    let instance = || -> &'static Clients {
        Box::leak(Box::new(instance_with(
            &world,
            Storage::with_client(world.s3.clone()),
        )))
    };
    let deliver = |clients: &'static Clients, event: serde_json::Value| async move {
        deliver_to(clients, event).await.unwrap()
    };
    let (a, b) = tokio::join!(
        deliver(instance(), event.clone()),
        deliver(instance(), event)
    );
    let (a, b) = (imported(a), imported(b));
    assert_eq!(a.import_id, b.import_id);
    assert_eq!(
        [a.redelivered, b.redelivered]
            .iter()
            .filter(|r| !**r)
            .count(),
        1,
        "exactly one run imported"
    );
    assert_eq!(world.count("SELECT count(*) FROM students").await, 50);
    assert_eq!(world.count("SELECT count(*) FROM imports").await, 1);
}

#[tokio::test]
async fn a_live_runs_claim_makes_a_duplicate_wait_then_fail_for_retry_and_a_dead_ones_does_not() {
    let mut world = World::new().await;
    let body = template_xlsx(&STUDENT_HEADERS, &rows());
    let event =
        end_to_end::upload(&world.s3, &world.bucket, "imports/students/list.xlsx", body).await;
    let e_tag = event["Records"][0]["s3"]["object"]["eTag"]
        .as_str()
        .unwrap()
        .to_string();
    let client = world.db.client().await;
    // A run that claimed the file and is still at work: its transaction holds the row.
    client
        .execute(
            "INSERT INTO imports (kind, bucket, object_key, object_version, status, attempts, started_at)
             VALUES ('students', $1, 'imports/students/list.xlsx', $2, 'processing', 1, now())",
            &[&world.bucket, &e_tag],
        )
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; SELECT id FROM imports FOR UPDATE")
        .await
        .unwrap();
    world.clients.config.import.busy_wait = std::time::Duration::from_millis(500);
    let busy = world.deliver(event.clone()).await.unwrap_err();
    assert!(
        busy.starts_with("ImportBusy: ") && busy.contains("still being processed by another run"),
        "{busy}"
    );
    assert_eq!(world.count("SELECT count(*) FROM students").await, 0);

    // The run dies: its transaction ends with its connection, and the next delivery takes over.
    drop(client);
    let client = world.db.client().await;
    let report = imported(world.deliver(event).await.unwrap());
    assert_eq!(
        (
            report.status.as_str(),
            report.counts.inserted,
            report.redelivered
        ),
        ("succeeded", 50, false)
    );
    let attempts: i32 = client
        .query_one("SELECT attempts FROM imports", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn a_key_with_spaces_arrives_url_encoded_and_is_read() {
    let world = World::new().await;
    let body = template_xlsx(&STUDENT_HEADERS, &rows()[..3]);
    let put = world
        .s3
        .put_object()
        .bucket(&world.bucket)
        .key("imports/students/CSE batch + 2024.xlsx")
        .body(body.into())
        .send()
        .await
        .unwrap();
    let event = s3_put_event(
        &world.bucket,
        "imports/students/CSE batch + 2024.xlsx",
        put.e_tag().unwrap().trim_matches('"'),
        0,
    );
    assert!(event["Records"][0]["s3"]["object"]["key"]
        .as_str()
        .unwrap()
        .contains("CSE+batch+%2B+2024"));
    let report = imported(world.deliver(event).await.unwrap());
    assert_eq!(
        (report.status.as_str(), report.counts.inserted),
        ("succeeded", 3)
    );
}

#[tokio::test]
async fn an_import_runs_through_pgbouncer_in_transaction_mode() {
    let mut world = World::new().await;
    let bouncer = end_to_end::PgBouncer::start();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        bouncer.port, world.db.name
    );
    world.clients.db =
        shared::db::Database::new(shared::db::DatabaseSettings::parse(&url).unwrap());
    let body = template_xlsx(&STUDENT_HEADERS, &rows());
    let report = imported(
        world
            .upload_and_import("imports/students/list.xlsx", body.clone())
            .await,
    );
    assert_eq!(
        (
            report.status.as_str(),
            report.counts.inserted,
            report.qr_cached
        ),
        ("succeeded", 50, 50)
    );
    let again = imported(
        world
            .upload_and_import("imports/students/list-again.xlsx", body)
            .await,
    );
    assert_eq!(again.counts.unchanged, 50);
}

/// S3 out of reach fails the invocation (Lambda retries it) and leaves the import `processing`,
/// with the reason on its row for the admin's status page; the retry that succeeds clears it.
#[tokio::test]
async fn a_run_failed_on_s3_says_why_until_its_retry_finishes_it() {
    let world = World::new().await;
    let event = upload_list(&world).await;
    let unreachable = world
        .s3
        .config()
        .to_builder()
        .endpoint_url(format!("http://127.0.0.1:{}", end_to_end::free_port()))
        .build();
    let cut_off = instance_with(
        &world,
        Storage::with_client(aws_sdk_s3::Client::from_conf(unreachable)),
    );
    let failed = deliver_to(&cut_off, event.clone()).await.unwrap_err();
    assert_eq!(failed.error_type, "StorageError");

    let client = world.db.client().await;
    let (status, last_error) = status_of_the_import(&client).await;
    assert_eq!(status, "processing");
    let last_error = last_error.unwrap();
    assert!(
        last_error.starts_with("the last attempt failed and will be retried: S3: "),
        "{last_error}"
    );

    world.deliver(event).await.unwrap();
    let (status, last_error) = status_of_the_import(&client).await;
    assert_eq!((status.as_str(), last_error), ("succeeded", None));
}

#[tokio::test]
async fn a_copy_the_database_refuses_before_it_starts_leaves_the_kept_connection_usable() {
    let world = World::new().await;
    let event = upload_list(&world).await;
    // A role that may read the students but not add any: the COPY is refused when it is
    // executed, before copy mode starts, which tokio-postgres answers with one ReadyForQuery
    // too many.
    let role = format!("qr_no_insert_{}", world.db.name);
    let client = world.db.client().await;
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT SELECT, INSERT, UPDATE ON imports, schools, events TO {role};
             GRANT SELECT, UPDATE ON students TO {role};"
        ))
        .await
        .unwrap();
    let mut url = url::Url::parse(&world.db.url).unwrap();
    url.set_username(&role).unwrap();
    let limited = Clients {
        db: shared::db::Database::new(shared::db::DatabaseSettings::parse(url.as_str()).unwrap()),
        ..instance_with(&world, world.clients.storage.clone())
    };
    let failed = deliver_to(&limited, event.clone()).await.unwrap_err();
    assert!(
        failed
            .error_message
            .contains("permission denied for table students"),
        "{failed:?}"
    );
    // The failure is recorded, and the same instance's next statements get their own answers.
    let (status, last_error) = status_of_the_import(&client).await;
    assert_eq!(status, "processing");
    assert!(
        last_error
            .as_deref()
            .is_some_and(|e| e.contains("permission denied for table students")),
        "the failure was not recorded: {last_error:?}"
    );
    let kept = limited.db.client().await.unwrap();
    for n in 1..=3_i32 {
        let answer: i32 = kept
            .query_one("SELECT $1::int4 * 10", &[&n])
            .await
            .unwrap()
            .get(0);
        assert_eq!(answer, n * 10);
    }
    drop(kept);
    drop(limited);
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
}
