//! warm-qr-cache: an EventBridge-scheduled Lambda that fills the QR image cache, and the same
//! job as a plain command for cron and PM2 (`warm-qr-cache --help`).

mod terminal;

use std::process::ExitCode;
use std::sync::Arc;

use lambda_runtime::service_fn;
use shared::cache::Cache;
use shared::config::Config;
use shared::db::Database;
use shared::telemetry::{self, LogFormat};
use warm_qr_cache::{handle, Clients};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("warm-qr-cache: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_filter, LogFormat::detect());
    let cache = match Cache::connect_lazily(&config.redis_url, config.cache.clone()) {
        Ok(cache) => cache,
        Err(error) => {
            eprintln!("warm-qr-cache: {error}");
            return ExitCode::from(2);
        }
    };
    let clients = Arc::new(Clients {
        db: Database::new(config.database.clone()),
        cache,
        config,
    });

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return terminal::run(&clients.db, &clients.cache, &clients.config.qr).await;
    }
    // Connect now so the first invocation finds the connection ready; if Postgres is away, the
    // invocation reconnects (and renews the cache if it still cannot).
    if let Err(error) = clients.db.client().await {
        tracing::warn!(error = %error, "Postgres not reachable at cold start");
    }
    let result = lambda_runtime::run(service_fn(|event| {
        let clients = Arc::clone(&clients);
        async move { handle(event, &clients).await }
    }))
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}
