//! The Lambda handler of warm-qr-cache: an event in, the warm summary out.

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use shared::cache::Cache;
use shared::config::Config;
use shared::db::Database;
use shared::warm::{self, WarmRequest, WarmSummary};

/// Clients made once at cold start and reused by every invocation.
pub struct Clients {
    pub config: Config,
    pub db: Database,
    pub cache: Cache,
}

/// Errors go back as their message: that is what the invoker and Lambda's error log show.
pub async fn handle(
    event: LambdaEvent<Value>,
    clients: &Clients,
) -> Result<WarmSummary, lambda_runtime::Error> {
    let request = WarmRequest::from_event(&event.payload).map_err(|error| error.to_string())?;
    let Clients { config, db, cache } = clients;
    warm::warm_and_report(db, cache, &config.qr, &request, &())
        .await
        .map_err(|failed| failed.to_string().into())
}
