//! import-spreadsheet: imports students and stalls sheets uploaded under `imports/` in S3.

use std::process::ExitCode;
use std::sync::Arc;

use import_spreadsheet::{handle, Clients};
use lambda_runtime::service_fn;
use shared::startup::{self, Needs};
use shared::storage::Storage;

#[tokio::main]
async fn main() -> ExitCode {
    let started = match startup::start("import-spreadsheet", &[Needs::JwtSecret]).await {
        Ok(started) => started,
        Err(status) => return status,
    };
    let storage = Storage::from_env(&started.config.s3).await;
    let jwt_secret = match started.config.jwt_secret() {
        Ok(secret) => secret.clone(),
        Err(error) => {
            eprintln!("import-spreadsheet: {error}");
            return ExitCode::from(2);
        }
    };
    let clients = Arc::new(Clients {
        db: started.db,
        cache: started.cache,
        storage,
        config: started.config,
        jwt_secret,
    });
    startup::warm_up(&clients.db).await;
    let result = lambda_runtime::run(service_fn(|event| {
        let clients = Arc::clone(&clients);
        async move { handle(event, &clients).await }
    }))
    .await;
    startup::exit_status(result)
}
