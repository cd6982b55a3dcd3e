//! import-spreadsheet: imports students and stalls sheets uploaded under `imports/` in S3.

use std::process::ExitCode;
use std::sync::Arc;

use import_spreadsheet::{handle, Clients};
use lambda_runtime::service_fn;
use shared::cache::Cache;
use shared::config::Config;
use shared::db::Database;
use shared::storage::Storage;
use shared::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env()
        .and_then(|config| config.jwt_secret().map(|_| ()).map(|()| config))
    {
        Ok(config) => config,
        Err(error) => {
            eprintln!("import-spreadsheet: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_filter, LogFormat::detect());
    let cache = match Cache::connect_lazily(&config.redis_url, config.cache.clone()) {
        Ok(cache) => cache,
        Err(error) => {
            eprintln!("import-spreadsheet: {error}");
            return ExitCode::from(2);
        }
    };
    let storage = Storage::from_env(&config.s3).await;
    let clients = Arc::new(Clients {
        db: Database::new(config.database.clone()),
        cache,
        storage,
        config,
    });
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
