//! Sharded runs split the rows so that together they cover each exactly once, and the merge step
//! adds the shards' summaries up into the run's.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Instant;

use end_to_end::{binary, output_text, redis_connection, redis_url, test_cache, TestDb};
use serde_json::{json, Value};
use shared::db::Shard;
use shared::qr::QrSettings;
use shared::warm::{warm, WarmRequest};

#[tokio::test]
async fn shards_cover_every_row_exactly_once() {
    let db = TestDb::create().await;
    db.seed(150, 20).await;
    let cache = test_cache(1000);
    let mut total = 0;
    for index in 0..3 {
        let mut request = WarmRequest::default();
        request.filter.shard = Some(Shard::new(index, 3).unwrap());
        let summary = warm(
            &db.database(),
            &cache,
            &QrSettings::default(),
            None,
            &request,
            &(),
        )
        .await
        .unwrap();
        // A row seen by an earlier shard would show up here as renewed.
        assert_eq!(
            summary.renewed(),
            0,
            "shard {index} overlaps an earlier one"
        );
        assert!(
            summary.rendered() > 20,
            "shard {index} got {} rows",
            summary.rendered()
        );
        total += summary.rendered();
    }
    assert_eq!(total, 170);
    assert_eq!(cache.count_entries().await.unwrap(), 170);
}

const STUDENTS: usize = 199_000;
const STALLS: usize = 1_000;
const ROWS: usize = STUDENTS + STALLS;
const SHARDS: u32 = 4;

/// Seeds `students` and `stalls` in two statements (`generate_series`), with short distinct
/// tokens: the app's JWTs would cost signing and bigger QR versions without changing which row
/// goes to which shard, which is all this data set is for.
async fn seed_by_sql(db: &TestDb, students: usize, stalls: usize) {
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "INSERT INTO schools (school_name) VALUES ('School of Sharding');
             INSERT INTO events (event_name, event_code, start_date, end_date,
                                 registration_start_date, registration_end_date, status)
             VALUES ('Shard Fest', 'SHARD-FEST', now(), now() + interval '1 day',
                     now() - interval '7 days', now(), 'ACTIVE');
             INSERT INTO students (registration_no, full_name, school_id, date_of_birth, pincode,
                                   password_hash, password_reset_required, qr_code_token)
             SELECT 'R' || i, 'Student ' || i, (SELECT id FROM schools LIMIT 1), '2004-05-06',
                    '560001', '!', true, 'student-' || i || '-' || left(md5(i::text), 8)
             FROM generate_series(1, {students}) AS i;
             INSERT INTO stalls (stall_number, stall_name, school_id, qr_code_token, event_id)
             SELECT 'S-' || i, 'Stall ' || i, (SELECT id FROM schools LIMIT 1),
                    'STALL_S-' || i, (SELECT id FROM events LIMIT 1)
             FROM generate_series(1, {stalls}) AS i;"
        ))
        .await
        .unwrap();
    // Its own statements: VACUUM refuses to run in the implicit transaction of a batch.
    for table in ["students", "stalls"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .unwrap();
    }
}

fn kinds_sum(summary: &Value, field: &str) -> u64 {
    summary["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kind| kind[field].as_u64().unwrap())
        .sum()
}

/// The split as the item asks for it: 200,000 rows, four `warm-qr-cache` processes of the real
/// binary at once (`--shard i --shards 4 --json`), as the state machine's Map runs four
/// invocations. Every row's key must be written exactly once: each shard renders what it
/// reads and renews nothing (a row an earlier shard had written would be renewed), the
/// shards' rows add up to the table's, each shard's share is the one the SQL split gives
/// it, and every row's key `{prefix}qr:image:{16 hex of sha256(token)}` is in Redis with no
/// other key beside them. Together these leave no room for a row warmed twice or never.
///
/// The images are the smallest the settings allow (21 px, no margin, ECC L) and the tokens
/// short: which rows a shard covers does not depend on them, and at the app's default 400 px
/// and ~150-character JWTs the 200,000 renders would take minutes on two cores and fill Redis
/// with 540 MB. Images at the app's settings are checked by `cache_contract`. The shards'
/// JSON summaries then go through the merge job, as the state machine hands them over.
#[tokio::test]
async fn four_shard_processes_cover_200000_rows_exactly_once() {
    let db = TestDb::create().await;
    let seeding = Instant::now();
    seed_by_sql(&db, STUDENTS, STALLS).await;
    let seeded = seeding.elapsed();
    let cache = test_cache(600);
    let prefix = cache.settings().key_prefix.clone();
    let env = [
        ("NEON_DATABASE_URL", db.url.clone()),
        ("REDIS_URL", redis_url()),
        ("CACHE_KEY_PREFIX", prefix.clone()),
        ("JWT_SECRET", end_to_end::JWT_SECRET.to_string()),
        ("QR_CACHE_TTL_SECS", "600".to_string()),
        ("QR_WIDTH_PX", "21".to_string()),
        ("QR_MARGIN", "0".to_string()),
        ("QR_ECC", "L".to_string()),
        ("LOG_LEVEL", "warn".to_string()),
    ];

    let run_started = chrono::Utc::now();
    let warming = Instant::now();
    let children: Vec<_> = (0..SHARDS)
        .map(|index| {
            Command::new(binary("warm-qr-cache"))
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .args([
                    "--shard",
                    &index.to_string(),
                    "--shards",
                    &SHARDS.to_string(),
                ])
                .arg("--json")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect();
    let warmed = warming.elapsed();

    // The SQL split, counted apart from the warmer: rows per shard index.
    let client = db.client().await;
    let split: BTreeMap<i64, i64> = client
        .query(
            "SELECT mod(abs(hashtext(id::text)::bigint), $1), count(*)
             FROM (SELECT id FROM students UNION ALL SELECT id FROM stalls) AS rows
             GROUP BY 1",
            &[&i64::from(SHARDS)],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();

    let mut summaries = Vec::new();
    for (index, output) in outputs.iter().enumerate() {
        assert!(
            output.status.success(),
            "shard {index}: {}",
            output_text(output)
        );
        let summary: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("shard {index}: JSON summary on stdout"));
        assert_eq!(
            summary["shard"],
            json!({"index": index, "count": SHARDS}),
            "{summary}"
        );
        let total = kinds_sum(&summary, "total");
        assert_eq!(
            kinds_sum(&summary, "renewed"),
            0,
            "shard {index} overlaps another"
        );
        assert_eq!(kinds_sum(&summary, "failed"), 0, "shard {index}: {summary}");
        assert_eq!(kinds_sum(&summary, "rendered"), total, "shard {index}");
        assert_eq!(
            total as i64,
            split[&(index as i64)],
            "shard {index} warmed other rows than its SQL share"
        );
        // A hash split: each share near a quarter.
        assert!(
            total as usize > ROWS / SHARDS as usize * 9 / 10,
            "shard {index} got only {total} rows"
        );
        summaries.push(summary);
    }
    let rendered: u64 = summaries.iter().map(|s| kinds_sum(s, "rendered")).sum();
    assert_eq!(rendered as usize, ROWS);

    // Every row's key, and nothing else under the prefix.
    let mut tokens: Vec<String> = Vec::with_capacity(ROWS);
    for table in ["students", "stalls"] {
        for row in client
            .query(&format!("SELECT qr_code_token FROM {table}"), &[])
            .await
            .unwrap()
        {
            tokens.push(row.get(0));
        }
    }
    let keys: Vec<String> = tokens.iter().map(|t| cache.settings().key(t)).collect();
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), ROWS);
    let mut redis = redis_connection(&redis_url()).await;
    let mut present = 0u64;
    for chunk in keys.chunks(10_000) {
        let found: u64 = redis::cmd("EXISTS")
            .arg(chunk)
            .query_async(&mut redis)
            .await
            .unwrap();
        present += found;
    }
    assert_eq!(present as usize, ROWS, "rows whose key is missing");
    assert_eq!(cache.count_entries().await.unwrap() as usize, ROWS);
    let sample: String = redis::cmd("GET")
        .arg(&keys[ROWS / 2])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(sample.starts_with("data:image/png;base64,"), "{sample}");

    // The merge step, fed the shards' summaries as the state machine hands them over.
    let merge = |shards: Vec<Value>| {
        let payload = json!({"mode": "merge", "started_at": run_started, "shards": shards});
        end_to_end::run_warmer(&env, &["--json", "--payload", &payload.to_string()])
    };
    let output = merge(
        summaries
            .iter()
            .map(|summary| json!({"summary": summary}))
            .collect(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let merged: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(merged["shards"], SHARDS);
    assert_eq!(merged["failed_shards"], json!([]));
    assert_eq!(kinds_sum(&merged, "cached") as usize, ROWS);
    assert_eq!(merged["kinds"][0]["total"], STUDENTS);
    assert_eq!(merged["kinds"][1]["total"], STALLS);
    let slowest = merged["slowest_shard_ms"].as_f64().unwrap();
    assert!(merged["duration_ms"].as_f64().unwrap() >= slowest);

    // One shard failed after its retries: the run fails, naming it; the rest is counted.
    let cause = json!({"errorType": "RedisError", "errorMessage": "QR cache warming failed: Redis: connection refused"});
    let mut outcomes: Vec<Value> = summaries
        .iter()
        .map(|summary| json!({"summary": summary}))
        .collect();
    outcomes[2] = json!({"shard": 2, "shards": SHARDS,
                         "failure": {"Error": "RedisError", "Cause": cause.to_string()}});
    let output = merge(outcomes);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    assert!(
        output_text(&output).contains("1 of 4 warm shards failed"),
        "{}",
        output_text(&output)
    );
    let merged: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        merged["failed_shards"],
        json!([{"shard": 2, "error": "RedisError",
                "message": "QR cache warming failed: Redis: connection refused"}])
    );
    assert_eq!(
        kinds_sum(&merged, "cached"),
        rendered - kinds_sum(&summaries[2], "rendered")
    );

    let mut manager = redis::aio::ConnectionManager::new(redis::Client::open(redis_url()).unwrap())
        .await
        .unwrap();
    tools::cleanup::unlink_matching(&mut manager, &format!("{prefix}*"))
        .await
        .unwrap();
    eprintln!(
        "seeded {ROWS} rows in {seeded:.1?}; {SHARDS} shard processes warmed them in {warmed:.1?}"
    );
}
