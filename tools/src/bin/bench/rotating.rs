//! `bench rotating`: the rotating student QR. The pre-warm of one window for N students (time,
//! renders/s, the Redis memory it holds), then the API's rotating route in-process: every
//! student's first request a miss (render and store), then hits after a pre-warm, then a
//! paced run of N students refreshing every 30 s on one task. Needs Postgres and Redis.

use std::time::{Duration, Instant};

use http_api::handle;
use jsonwebtoken::{encode, EncodingKey, Header};
use secrecy::SecretString;
use shared::cache::Cache;
use tools::seed::{self, DemoSize};
use warm_qr_cache::rotating::{self, RotatingRequest};

use super::http::{api_from, event, percentile};
use super::{admin_database_url, flag, machine, redis_url, Failure};

async fn used_memory(cache: &Cache) -> Result<u64, Failure> {
    let mut connection = cache.connection();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

pub async fn run(args: &[String]) -> Result<(), Failure> {
    let students = flag(args, "--students", 11_000)?;
    let serve_too = !args.iter().any(|a| a == "--prewarm-only");
    let admin_url = admin_database_url();
    let redis_url = redis_url();
    let name = format!("qr_bench_rotating_{}", std::process::id());
    let admin = shared::db::DatabaseSettings::parse(&admin_url)?
        .connect()
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let prefix = format!("bench-rotating:{}:", std::process::id());
    let result = async {
        let mut url = url::Url::parse(&admin_url)?;
        url.set_path(&name);
        let mut client = shared::db::DatabaseSettings::parse(url.as_str())?.connect().await?;
        shared::migrations::apply(&mut client).await?;
        let secret = "bench-secret";
        // Every demo student is registered for the demo event, which runs today.
        seed::seed(&client, &SecretString::from(secret), DemoSize { students, stalls: 0 }).await?;
        let vars = [
            ("NEON_DATABASE_URL", url.to_string()),
            ("REDIS_URL", redis_url.clone()),
            ("JWT_SECRET", secret.to_string()),
            ("IMPORT_BUCKET", "bench".to_string()),
            ("CACHE_KEY_PREFIX", prefix.clone()),
        ];
        let api = api_from(&vars).await?;
        let cache = api.reader.cache().clone();
        let db = api.reader.db();
        println!("machine: {}", machine());

        // Settle the freshly seeded tables first, so autovacuum does not run during the figures.
        client.batch_execute("VACUUM ANALYZE").await?;
        // The pre-warm of one window, as the schedule's run does it for each window; three runs,
        // the cache emptied before each.
        let one_window = RotatingRequest::from_payload(serde_json::json!({"windows_ahead": 0}))?;
        let mut connection = cache.connection();
        let mut seconds = Vec::new();
        for run in 0..3 {
            tools::cleanup::unlink_matching(&mut connection, &format!("{prefix}*")).await?;
            let memory_before = used_memory(&cache).await?;
            let now = chrono::Utc::now().timestamp();
            let summary = rotating::prepare(db, &cache, &api.rotating, &one_window, now).await?;
            let memory_after = used_memory(&cache).await?;
            let held = memory_after.saturating_sub(memory_before);
            if summary.rendered != students as u64 {
                return Err(format!("rendered {} of {students}", summary.rendered).into());
            }
            seconds.push(summary.duration_ms / 1000.0);
            println!(
                "rotating pre-warm {}, one window: {} students in {:.2} s ({:.0} renders/s); Redis holds {:.1} MiB for it ({} bytes per image); 3 windows about {:.1} MiB",
                run + 1,
                summary.rendered,
                summary.duration_ms / 1000.0,
                summary.renders_per_second,
                held as f64 / 1_048_576.0,
                held / summary.rendered.max(1),
                3.0 * held as f64 / 1_048_576.0,
            );
        }
        seconds.sort_by(f64::total_cmp);
        println!("rotating pre-warm of one window for {students} students: median {:.2} s", seconds[1]);
        tools::cleanup::unlink_matching(&mut connection, &format!("{prefix}*")).await?;
        if !serve_too {
            return Ok(());
        }

        let ids: Vec<String> = client.query("SELECT id::text FROM students", &[]).await?.iter().map(|r| r.get(0)).collect();
        // The API's runtime: one thread (functions/http-api/src/main.rs).
        let owned: Vec<(&'static str, String)> = vars.to_vec();
        std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(serve(owned, ids, secret))
                .map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "the serving thread panicked")??;
        tools::cleanup::unlink_matching(&mut connection, &format!("{prefix}*")).await?;
        Ok::<(), Failure>(())
    }
    .await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    result
}

/// The rotating route through the API's handler on the API's own runtime: misses, hits after a
/// pre-warm, then every student refreshing every 30 s.
async fn serve(
    vars: Vec<(&'static str, String)>,
    ids: Vec<String>,
    secret: &str,
) -> Result<(), Failure> {
    let students = ids.len();
    let api = api_from(&vars).await?;
    let cache = api.reader.cache().clone();
    let db = api.reader.db();
    let mut connection = cache.connection();
    let prefix = cache.settings().key_prefix.clone();
    let exp = chrono::Utc::now().timestamp() + 3600;
    let tokens: Vec<String> = ids
        .iter()
        .map(|id| {
            encode(
                &Header::default(),
                &serde_json::json!({"id": id, "role": "STUDENT", "exp": exp}),
                &EncodingKey::from_secret(secret.as_bytes()),
            )
        })
        .collect::<Result<_, _>>()?;
    let call = |token: &str| -> Result<lambda_http::Request, Failure> {
        Ok(lambda_http::request::from_str(&event(
            "/students/me/qr",
            token,
            "application/json",
        ))?)
    };
    let mut results = Vec::new();
    for pass in ["miss", "hit"] {
        if pass == "hit" {
            let ahead = RotatingRequest::from_payload(serde_json::json!({}))?;
            rotating::prepare(
                db,
                &cache,
                &api.rotating,
                &ahead,
                chrono::Utc::now().timestamp(),
            )
            .await?;
        }
        let mut times = Vec::with_capacity(tokens.len());
        let mut sources = std::collections::HashMap::<String, u64>::new();
        for token in &tokens {
            let request = call(token)?;
            let started = Instant::now();
            let response = handle(&api, request).await;
            times.push(started.elapsed());
            if response.status() != 200 {
                return Err(format!("expected 200, got {}", response.status()).into());
            }
            let source = response
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            *sources.entry(source).or_default() += 1;
        }
        times.sort();
        results.push((
            pass,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            sources,
        ));
    }
    println!("{students} GET /students/me/qr requests per pass, in-process handler (session JWT, Postgres lookup, Redis, JSON envelope)");
    for (pass, p50, p99, sources) in &results {
        println!("  {pass:<4}: p50 {p50:.3} ms, p99 {p99:.3} ms, x-cache {sources:?}");
    }

    // Every student refreshing every 30 s, paced on one task: students/30 requests a second.
    let rate = students as f64 / 30.0;
    let ahead = RotatingRequest::from_payload(serde_json::json!({}))?;
    rotating::prepare(
        db,
        &cache,
        &api.rotating,
        &ahead,
        chrono::Utc::now().timestamp(),
    )
    .await?;
    let started = Instant::now();
    let mut times = Vec::with_capacity(tokens.len());
    let mut hits = 0u64;
    let mut busy = Duration::ZERO;
    for (i, token) in tokens.iter().enumerate() {
        let due = Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let request = call(token)?;
        let began = Instant::now();
        let response = handle(&api, request).await;
        let spent = began.elapsed();
        busy += spent;
        times.push(spent);
        hits += u64::from(
            response
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                == Some("hit"),
        );
    }
    let wall = started.elapsed();
    times.sort();
    println!(
            "sustained: {} requests at {:.0}/s over {:.1} s on one task: {} hits ({:.2} %), p50 {:.3} ms, p99 {:.3} ms, handler busy {:.1} % of the time",
            times.len(),
            rate,
            wall.as_secs_f64(),
            hits,
            hits as f64 * 100.0 / times.len() as f64,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            busy.as_secs_f64() * 100.0 / wall.as_secs_f64(),
        );
    tools::cleanup::unlink_matching(&mut connection, &format!("{prefix}*")).await?;
    Ok(())
}
