//! `bench http`: the API's handler in-process, fed API Gateway v2 requests for QR images of
//! distinct students: first every one a miss (render and store), then every one a hit. Reports
//! p50/p99 of the handler's time. Needs Postgres and Redis on loopback.

use std::time::{Duration, Instant};

use http_api::qr_reads::QrReader;
use http_api::{handle, Api};
use jsonwebtoken::{encode, EncodingKey, Header};
use secrecy::SecretString;
use shared::cache::Cache;
use shared::config::Config;
use shared::db::Database;
use shared::storage::Storage;
use tools::seed::{self, DemoSize};

use super::{admin_database_url, flag, machine, redis_url, Failure};

/// A GET of `path` as API Gateway (payload 2.0) sends it, with the session token and an
/// `accept` header.
pub(crate) fn event(path: &str, token: &str, accept: &str) -> String {
    serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"authorization": format!("Bearer {token}"), "accept": accept},
        "requestContext": {"accountId": "1", "apiId": "bench", "domainName": "bench", "domainPrefix": "bench",
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
            "requestId": "bench", "routeKey": "$default", "stage": "$default", "time": "26/Nov/2026:06:00:00 +0000", "timeEpoch": 0},
        "isBase64Encoded": false
    })
    .to_string()
}

/// The API's clients over these variables, as its cold start makes them.
pub(crate) async fn api_from(vars: &[(&str, String)]) -> Result<Api, Failure> {
    let config =
        Config::from_lookup(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone()))?;
    let cache = Cache::connect_lazily(&config.redis_url, config.cache.clone())?;
    let reader = QrReader::new(Database::new(config.database.clone()), cache, config.qr);
    let storage = Storage::from_env(&config.s3).await;
    Ok(Api::new(config, reader, storage)?)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

pub async fn run(args: &[String]) -> Result<(), Failure> {
    let requests = flag(args, "--requests", 10_000)?;
    let admin_url = admin_database_url();
    let redis_url = redis_url();
    let name = format!("qr_bench_http_{}", std::process::id());
    let admin = shared::db::DatabaseSettings::parse(&admin_url)?
        .connect()
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let result = async {
        let mut url = url::Url::parse(&admin_url)?;
        url.set_path(&name);
        let mut client = shared::db::DatabaseSettings::parse(url.as_str())?.connect().await?;
        shared::migrations::apply(&mut client).await?;
        let secret = "bench-secret";
        seed::seed(&client, &SecretString::from(secret), DemoSize { students: requests, stalls: 0 }).await?;
        let ids: Vec<String> = client.query("SELECT id::text FROM students", &[]).await?.iter().map(|r| r.get(0)).collect();

        let prefix = format!("bench-http:{}:", std::process::id());
        let vars = [
            ("NEON_DATABASE_URL", url.to_string()),
            ("REDIS_URL", redis_url.clone()),
            ("JWT_SECRET", secret.to_string()),
            ("IMPORT_BUCKET", "bench".to_string()),
            ("CACHE_KEY_PREFIX", prefix.clone()),
        ];
        let api = api_from(&vars).await?;
        let cache = api.reader.cache().clone();
        let exp = chrono::Utc::now().timestamp() + 3600;
        let token = encode(&Header::default(), &serde_json::json!({"id": "bench", "role": "ADMIN", "exp": exp}), &EncodingKey::from_secret(secret.as_bytes()))?;

        let mut results = Vec::new();
        for pass in ["miss", "hit"] {
            let mut times = Vec::with_capacity(ids.len());
            for id in &ids {
                let request = lambda_http::request::from_str(&event(&format!("/qr/students/{id}"), &token, "image/png"))?;
                let started = Instant::now();
                let response = handle(&api, request).await;
                times.push(started.elapsed());
                let source = response.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("");
                if response.status() != 200 || source != pass {
                    return Err(format!("expected a 200 {pass}, got {} {source}", response.status()).into());
                }
            }
            times.sort();
            results.push((pass, percentile(&times, 0.5), percentile(&times, 0.99), times.iter().sum::<Duration>()));
        }
        // Leave Redis as found.
        let mut connection = cache.connection();
        tools::cleanup::unlink_matching(&mut connection, &format!("{prefix}*")).await?;
        println!("machine: {}", machine());
        println!("{requests} GET /qr/students/{{id}} requests per pass, in-process handler (auth, Postgres token lookup, Redis, PNG)");
        for (pass, p50, p99, total) in results {
            println!("  {pass:<4}: p50 {p50:.3} ms, p99 {p99:.3} ms, {:.0} requests/s on one task", requests as f64 / total.as_secs_f64());
        }
        Ok::<(), Failure>(())
    }
    .await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    result
}
