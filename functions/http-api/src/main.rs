//! http-api: the admin's side of imports, QR images from the cache, cache statistics, health.

use std::process::ExitCode;
use std::sync::Arc;

use http_api::qr_reads::QrReader;
use http_api::{handle, Api};
use lambda_http::{service_fn, Error, Request};
use shared::startup::{self, Needs};
use shared::storage::Storage;

// One request at a time per instance: on one thread, a request's Postgres and Redis replies
// wake the handler without a hop between threads (renders still run on the blocking pool).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let started = match startup::start("http-api", &[Needs::JwtSecret, Needs::ImportBucket]).await {
        Ok(started) => started,
        Err(status) => return status,
    };
    let storage = Storage::from_env(&started.config.s3).await;
    let reader = QrReader::new(started.db, started.cache, started.config.qr);
    let api = match Api::new(started.config, reader, storage) {
        Ok(api) => Arc::new(api),
        Err(error) => {
            eprintln!("http-api: {error}");
            return ExitCode::from(2);
        }
    };
    startup::warm_up(api.reader.db()).await;
    let result = lambda_http::run(service_fn(|request: Request| {
        let api = Arc::clone(&api);
        async move { Ok::<_, Error>(handle(&api, request).await) }
    }))
    .await;
    startup::exit_status(result)
}
