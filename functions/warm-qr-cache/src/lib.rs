//! The Lambda handler of warm-qr-cache: an event in, the warm summary out.

use lambda_runtime::{Diagnostic, LambdaEvent};
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

/// A failure goes back to Lambda with an `errorType` naming what failed (`InvalidRequest`,
/// `PostgresOutage`, `QrImagesUncached`, ...), which a person can filter logs and alarms on,
/// and the message saying why.
pub async fn handle(
    event: LambdaEvent<Value>,
    clients: &Clients,
) -> Result<WarmSummary, Diagnostic> {
    let request = WarmRequest::from_event(&event.payload).map_err(|error| Diagnostic {
        error_type: error.kind().into(),
        error_message: error.to_string(),
    })?;
    let Clients { config, db, cache } = clients;
    warm::warm_and_report(db, cache, &config.qr, &request, &())
        .await
        .map_err(|failed| Diagnostic {
            error_type: failed.error.kind().into(),
            error_message: failed.to_string(),
        })
}
