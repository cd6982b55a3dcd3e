//! http-api: the admin's side of imports, QR images from the cache, cache statistics, health.

use std::process::ExitCode;
use std::sync::Arc;

use http_api::{handle, Api};
use lambda_http::{service_fn, Error, Request};
use shared::cache::Cache;
use shared::config::Config;
use shared::db::Database;
use shared::qr_reads::QrReader;
use shared::storage::Storage;
use shared::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env().and_then(|c| {
        c.jwt_secret()
            .map(|_| ())
            .and_then(|()| c.import_bucket().map(|_| ()))
            .map(|()| c)
    }) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("http-api: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_filter, LogFormat::detect());
    let cache = match Cache::connect_lazily(&config.redis_url, config.cache.clone()) {
        Ok(cache) => cache,
        Err(error) => {
            eprintln!("http-api: {error}");
            return ExitCode::from(2);
        }
    };
    let storage = Storage::from_env(&config.s3).await;
    let reader = QrReader::new(Database::new(config.database.clone()), cache, config.qr);
    let api = Arc::new(Api {
        config,
        reader,
        storage,
    });
    if let Err(error) = api.reader.db().client().await {
        tracing::warn!(error = %error, "Postgres not reachable at cold start");
    }
    let result = lambda_http::run(service_fn(|request: Request| {
        let api = Arc::clone(&api);
        async move { Ok::<_, Error>(handle(&api, request).await) }
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
