//! warm-qr-cache: an EventBridge-scheduled Lambda that fills the QR image cache, and the same
//! job as a plain command for cron and PM2 (`warm-qr-cache --help`).

mod terminal;

use std::process::ExitCode;
use std::sync::Arc;

use lambda_runtime::service_fn;
use shared::startup::{self, Needs};
use shared::token::RotatingSigner;
use warm_qr_cache::{handle, Clients};

#[tokio::main]
async fn main() -> ExitCode {
    let started = match startup::start("warm-qr-cache", &[Needs::JwtSecret]).await {
        Ok(started) => started,
        Err(status) => return status,
    };
    // `Needs::JwtSecret` made sure of the secret; an HMAC takes a key of any length.
    let Ok(jwt_secret) = started.config.jwt_secret().cloned() else {
        return ExitCode::from(2);
    };
    let Ok(signer) = RotatingSigner::new(&jwt_secret) else {
        eprintln!("warm-qr-cache: JWT_SECRET is not usable as an HMAC key");
        return ExitCode::from(2);
    };
    let clients = Arc::new(Clients {
        db: started.db,
        cache: started.cache,
        config: started.config,
        jwt_secret,
        signer,
    });
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return terminal::run(&clients).await;
    }
    startup::warm_up(&clients.db).await;
    let result = lambda_runtime::run(service_fn(|event| {
        let clients = Arc::clone(&clients);
        async move { handle(event, &clients).await }
    }))
    .await;
    startup::exit_status(result)
}
