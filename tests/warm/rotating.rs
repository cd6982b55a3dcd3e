//! The rotating pre-warm, token minting and the hit-rate sampler, through the warmer's handler
//! against real Postgres and Redis.

use end_to_end::{
    app_verifies_rotating, config_for, data_url_png, decode_data_url, png_size, qr_token_claims,
    redis_url, register_for_event_today, test_cache, warmer_clients, TestDb,
};
use lambda_runtime::{Context, LambdaEvent};
use redis::AsyncCommands;
use serde_json::{json, Value};
use shared::cache::ReadCounter;
use warm_qr_cache::rotating::RotatingSummary;
use warm_qr_cache::sampler::HitRateSample;
use warm_qr_cache::{handle, Clients, Outcome};

async fn invoke(clients: &Clients, payload: Value) -> Result<Outcome, String> {
    handle(LambdaEvent::new(payload, Context::default()), clients)
        .await
        .map_err(|e| format!("{}: {}", e.error_type, e.error_message))
}

async fn prepare(clients: &Clients, payload: Value) -> RotatingSummary {
    match invoke(clients, payload).await {
        Ok(Outcome::Rotating(summary)) => summary,
        other => panic!("not a rotating summary: {other:?}"),
    }
}

async fn registration_nos(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT registration_no FROM students ORDER BY registration_no",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A database of `students` students, none registered for anything yet.
async fn students_without_registrations(students: usize) -> TestDb {
    let db = TestDb::create().await;
    db.seed(students, 1).await;
    db.client()
        .await
        .execute("DELETE FROM event_registrations", &[])
        .await
        .unwrap();
    db
}

fn rotating_key(clients: &Clients, registration_no: &str, window: i64) -> String {
    format!(
        "{}qr:rotating:{registration_no}:{window}",
        clients.cache.settings().key_prefix
    )
}

#[tokio::test]
async fn the_rotating_prewarm_writes_the_coming_windows_in_the_apps_format_for_todays_students() {
    let db = students_without_registrations(8).await;
    let students = registration_nos(&db).await;
    let attending = &students[..5];
    register_for_event_today(&db.client().await, "FEST-TODAY", "ACTIVE", attending).await;
    let cache = test_cache(600);
    let config = config_for(&db, &cache);
    let clients = warmer_clients(&db, cache, config);
    let mut redis = end_to_end::redis_connection(&redis_url()).await;

    let before = chrono::Utc::now().timestamp();
    let summary = prepare(&clients, json!({"mode": "rotating"})).await;
    let after = chrono::Utc::now().timestamp();
    assert_eq!(summary.students, 5);
    assert_eq!(summary.windows.len(), 3, "the current window and two ahead");
    let first = summary.windows[0];
    assert!(first == before / 30 || first == after / 30);
    assert_eq!(summary.windows, vec![first, first + 1, first + 2]);
    assert_eq!(
        (summary.rendered, summary.already_cached, summary.failed),
        (15, 0, 0)
    );
    assert!(
        summary
            .to_string()
            .starts_with("Rotating QRs: 5 students x 3 (windows "),
        "{summary}"
    );

    for registration_no in attending {
        for &window in &summary.windows {
            let key = rotating_key(&clients, registration_no, window);
            let value: String = redis
                .get(&key)
                .await
                .unwrap_or_else(|_| panic!("{key} cached"));
            // The app's format: a PNG data URL, 300 px wide, whose code is a token the app's
            // scanner accepts during the window and its grace.
            let png = data_url_png(&value);
            assert_eq!(png_size(&png), (300, 300));
            let token = decode_data_url(&value);
            let starts = window * 30;
            assert_eq!(
                app_verifies_rotating(&token, starts),
                Ok(registration_no.clone())
            );
            assert_eq!(
                app_verifies_rotating(&token, starts + 89),
                Ok(registration_no.clone())
            );
            assert_eq!(
                app_verifies_rotating(&token, starts + 90),
                Err("jwt expired")
            );
            let claims = qr_token_claims(&token);
            assert_eq!(claims["t"], "RS");
            assert_eq!(claims["w"], window);
            assert_eq!(claims["iat"], starts);
            assert_eq!(claims["exp"], starts + 90);
            // It lives until its grace ends, and no longer.
            let ttl: i64 = redis.ttl(&key).await.unwrap();
            let grace_ends = (window + 3) * 30;
            assert!(
                (grace_ends - after - 2..=grace_ends - before).contains(&ttl),
                "{key}: TTL {ttl}, grace ends in {}",
                grace_ends - after
            );
        }
    }
    // Nobody else's.
    for registration_no in &students[5..] {
        let exists: bool = redis
            .exists(rotating_key(&clients, registration_no, first))
            .await
            .unwrap();
        assert!(!exists, "{registration_no} attends nothing today");
    }

    // The next run finds its windows ready and renders only the one that came into view.
    let summary = prepare(&clients, json!({"mode": "rotating"})).await;
    let new_windows = summary.windows.iter().filter(|w| **w > first + 2).count() as u64;
    assert_eq!(summary.rendered, 5 * new_windows);
    assert_eq!(summary.already_cached, 15 - 5 * new_windows);
}

/// The sample events of the rotating schedule and the sampler run their jobs.
#[tokio::test]
async fn the_rotating_and_sampler_sample_events_run_their_jobs() {
    let db = TestDb::create().await;
    db.seed(3, 1).await;
    let cache = test_cache(600);
    let config = config_for(&db, &cache);
    let clients = warmer_clients(&db, cache, config);
    let event = |file: &str| -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../events")
            .join(file);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    // The demo students attend the demo event, which runs today.
    let summary = prepare(&clients, event("warm-rotating.json")).await;
    assert_eq!((summary.students, summary.rendered), (3, 9));
    assert!(matches!(
        invoke(&clients, event("warm-hit-rate-sample.json")).await,
        Ok(Outcome::HitRate(_))
    ));
}

#[tokio::test]
async fn the_audience_is_who_may_be_scanned_today_or_everyone_by_option() {
    let db = students_without_registrations(10).await;
    let students = registration_nos(&db).await;
    let client = db.client().await;
    register_for_event_today(&client, "ACTIVE-TODAY", "ACTIVE", &students[0..2]).await;
    register_for_event_today(&client, "APPROVED-TODAY", "APPROVED", &students[2..3]).await;
    register_for_event_today(&client, "STILL-A-DRAFT", "DRAFT", &students[3..4]).await;
    let paid = register_for_event_today(&client, "PAID-TODAY", "ACTIVE", &students[4..6]).await;
    // students[4] has paid, students[5] has not: the scanner refuses an unpaid registration.
    client
        .execute(
            "UPDATE event_registrations r SET registration_type = 'PAID',
                payment_status = CASE s.registration_no WHEN $2 THEN 'COMPLETED' ELSE 'PENDING' END
             FROM students s WHERE s.id = r.student_id AND r.event_id = $1",
            &[&paid, &students[4]],
        )
        .await
        .unwrap();
    let cancelled =
        register_for_event_today(&client, "CANCELLED-REG", "ACTIVE", &students[6..7]).await;
    client
        .execute(
            "UPDATE event_registrations SET registration_status = 'CANCELLED' WHERE event_id = $1",
            &[&cancelled],
        )
        .await
        .unwrap();
    let over = register_for_event_today(&client, "LAST-WEEK", "ACTIVE", &students[7..8]).await;
    client
        .execute(
            "UPDATE events SET start_date = now() - interval '9 days', end_date = now() - interval '7 days' WHERE id = $1",
            &[&over],
        )
        .await
        .unwrap();

    let cache = test_cache(600);
    let config = config_for(&db, &cache);
    let clients = warmer_clients(&db, cache, config);
    let mut audience = warm_qr_cache::rotating::audience(
        &clients.db,
        &warm_qr_cache::rotating::RotatingRequest::from_payload(json!({})).unwrap(),
    )
    .await
    .unwrap();
    audience.sort();
    assert_eq!(
        audience,
        vec![
            students[0].clone(),
            students[1].clone(),
            students[2].clone(),
            students[4].clone()
        ]
    );

    let summary = prepare(
        &clients,
        json!({"mode": "rotating", "audience": "everyone", "windows_ahead": 0}),
    )
    .await;
    assert_eq!(
        (summary.students, summary.windows.len(), summary.rendered),
        (10, 1, 10)
    );

    let error = invoke(
        &clients,
        json!({"mode": "rotating", "time_zone": "Mars/Olympus"}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error,
        "InvalidRequest: invalid request: `time_zone` `Mars/Olympus` is not a time zone Postgres knows"
    );
}

#[tokio::test]
async fn the_warm_mints_tokens_for_rows_without_one_and_caches_them() {
    let db = TestDb::create().await;
    db.seed(6, 2).await;
    let client = db.client().await;
    let lacking: Vec<(uuid::Uuid, String)> = client
        .query(
            "UPDATE students SET qr_code_token = CASE WHEN registration_no LIKE '%1' THEN '' ELSE NULL END
             WHERE registration_no IN (SELECT registration_no FROM students ORDER BY registration_no LIMIT 3)
             RETURNING id, registration_no",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let cache = test_cache(600);
    let config = config_for(&db, &cache);
    let clients = warmer_clients(&db, cache, config);
    let mut redis = end_to_end::redis_connection(&redis_url()).await;

    let Ok(Outcome::Static(summary)) = invoke(&clients, json!({})).await else {
        panic!("a static warm");
    };
    assert_eq!(summary.kinds[0].minted, 3);
    assert_eq!(summary.kinds[0].total, 6);
    assert_eq!(summary.kinds[0].cached, 6);
    assert!(
        summary
            .to_string()
            .contains("Students: 6/6 cached (0 failed): 6 rendered, 0 renewed, 3 minted"),
        "{summary}"
    );
    for (id, registration_no) in &lacking {
        let token: String = client
            .query_one("SELECT qr_code_token FROM students WHERE id = $1", &[id])
            .await
            .unwrap()
            .get(0);
        // The app's own static format, which its scanner verifies.
        let claims = qr_token_claims(&token);
        assert_eq!(claims["t"], "S");
        assert_eq!(claims["r"], registration_no.as_str());
        assert_eq!(claims["n"].as_str().map(str::len), Some(4));
        let mut names: Vec<&String> = claims.as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(names, ["iat", "n", "r", "t"]);
        let cached: String = redis
            .get(clients.cache.settings().key(&token))
            .await
            .unwrap();
        assert_eq!(decode_data_url(&cached), token);
    }

    // Asked not to, it leaves such rows alone.
    client
        .execute(
            "UPDATE students SET qr_code_token = NULL WHERE id = $1",
            &[&lacking[0].0],
        )
        .await
        .unwrap();
    let Ok(Outcome::Static(summary)) = invoke(&clients, json!({"mint": false})).await else {
        panic!("a static warm");
    };
    assert_eq!((summary.kinds[0].minted, summary.kinds[0].total), (0, 5));
    let token: Option<String> = client
        .query_one(
            "SELECT qr_code_token FROM students WHERE id = $1",
            &[&lacking[0].0],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(token, None);
}

#[tokio::test]
async fn a_token_the_app_mints_meanwhile_wins() {
    let db = TestDb::create().await;
    db.seed(4, 1).await;
    let client = db.client().await;
    client
        .execute("UPDATE students SET qr_code_token = NULL", &[])
        .await
        .unwrap();
    let raced: uuid::Uuid = client
        .query_one(
            "SELECT id FROM students ORDER BY registration_no LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The app's first view of this student is under way: its transaction holds the row.
    let mut app = db.client().await;
    let app_view = app.transaction().await.unwrap();
    app_view
        .execute(
            "UPDATE students SET qr_code_token = 'the-apps-own-token', updated_at = NOW() WHERE id = $1",
            &[&raced],
        )
        .await
        .unwrap();

    let cache = test_cache(600);
    let config = config_for(&db, &cache);
    let clients = warmer_clients(&db, cache, config);
    let warm = tokio::spawn(async move {
        let outcome = invoke(&clients, json!({"kinds": ["students"]})).await;
        (outcome, clients)
    });
    // The warm's update waits on the app's row lock; then the app commits first.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !warm.is_finished(),
        "the warm waits for the app's transaction"
    );
    app_view.commit().await.unwrap();
    let (outcome, clients) = warm.await.unwrap();
    let Ok(Outcome::Static(summary)) = outcome else {
        panic!("a static warm: {outcome:?}");
    };
    assert_eq!(summary.kinds[0].minted, 3, "every row but the app's");
    let token: String = client
        .query_one(
            "SELECT qr_code_token FROM students WHERE id = $1",
            &[&raced],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(token, "the-apps-own-token");
    // And the app's token is what got cached for that student.
    let mut redis = end_to_end::redis_connection(&redis_url()).await;
    let cached: String = redis
        .get(clients.cache.settings().key("the-apps-own-token"))
        .await
        .unwrap();
    assert_eq!(decode_data_url(&cached), "the-apps-own-token");
}

#[tokio::test]
async fn the_sampler_emits_the_hit_rate_of_the_interval() {
    let db = TestDb::create().await;
    let cache = test_cache(600);
    let config = config_for(&db, &cache);
    let clients = warmer_clients(&db, cache, config);
    let prefix = clients.cache.settings().key_prefix.clone();
    let mut redis = end_to_end::redis_connection(&redis_url()).await;
    let (hits, misses) = ReadCounter::Rotating.keys(&prefix);
    let _: () = redis.set(&hits, 30).await.unwrap();
    let _: () = redis.set(&misses, 10).await.unwrap();

    let sample = |outcome: Result<Outcome, String>| match outcome {
        Ok(Outcome::HitRate(sample)) => sample,
        other => panic!("not a sample: {other:?}"),
    };
    let first: HitRateSample = sample(invoke(&clients, json!({"mode": "sample_hit_rate"})).await);
    assert!(!first.since_previous);
    assert_eq!(
        (first.api_rotating.hits, first.api_rotating.misses),
        (30, 10)
    );
    assert_eq!(first.api_rotating.percent, Some(75.0));
    assert_eq!(first.api_static.percent, None);

    // Reads between two samples: the second covers only them.
    let _: () = redis.incr(&hits, 9).await.unwrap();
    let _: () = redis.incr(&misses, 1).await.unwrap();
    for _ in 0..5 {
        let _: Option<String> = redis
            .get(format!("{prefix}qr:image:nothing-here"))
            .await
            .unwrap();
    }
    let second = sample(invoke(&clients, json!({"mode": "sample_hit_rate"})).await);
    assert!(second.since_previous);
    assert_eq!(
        (second.api_rotating.hits, second.api_rotating.misses),
        (9, 1)
    );
    assert_eq!(second.api_rotating.percent, Some(90.0));
    // Server-wide: at least the five misses above (other tests share this Redis).
    assert!(second.server.misses >= 5, "{second}");
    let server = second.server.percent.unwrap();
    assert!((0.0..=100.0).contains(&server));

    let emf: Value = serde_json::from_str(&second.metrics().to_emf(0)).unwrap();
    assert_eq!(emf["ApiRotatingHitRate"], 90.0);
    assert_eq!(emf["CacheHitRate"], server);
    let definitions = &emf["_aws"]["CloudWatchMetrics"][0]["Metrics"];
    assert!(definitions
        .as_array()
        .unwrap()
        .contains(&json!({"Name": "CacheHitRate", "Unit": "Percent"})));
    // No reads of static images: no figure, rather than a false 0 %.
    assert!(emf.get("ApiStaticHitRate").is_none());
}
