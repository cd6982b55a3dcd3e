//! The Lambda handler of import-spreadsheet: an S3 event in, one report per uploaded file out.

use aws_lambda_events::s3::S3Event;
use lambda_runtime::{Diagnostic, LambdaEvent};
use secrecy::SecretString;
use serde::Serialize;
use shared::cache::Cache;
use shared::config::Config;
use shared::db::Database;
use shared::import::event::{self, EventRecord};
use shared::import::{ImportReport, Importer};
use shared::storage::Storage;

/// Clients made once at cold start and reused by every invocation.
pub struct Clients {
    pub config: Config,
    pub db: Database,
    pub cache: Cache,
    pub storage: Storage,
    /// Signs new rows' QR tokens; checked present at cold start.
    pub jwt_secret: SecretString,
}

/// What happened to each record of the event.
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RecordOutcome {
    Imported(Box<ImportReport>),
    Skipped { key: String, reason: String },
}

/// Imports every upload the event names. A record that is not an import is skipped with a log
/// line; a file that is refused is a finished import (its report says why); only a failure of
/// the machinery (Postgres, S3) fails the invocation, so Lambda retries it. The failure's
/// `errorType` is the first failed record's kind (`PostgresError`, `StorageError`,
/// `ImportBusy`, ...), for filtering.
pub async fn handle(
    event: LambdaEvent<S3Event>,
    clients: &Clients,
) -> Result<Vec<RecordOutcome>, Diagnostic> {
    let importer = Importer {
        db: &clients.db,
        cache: &clients.cache,
        storage: &clients.storage,
        settings: &clients.config.import,
        qr: &clients.config.qr,
        jwt_secret: &clients.jwt_secret,
    };
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    let mut error_type = None;
    for record in event::records(&event.payload) {
        match record {
            EventRecord::Skip { key, reason } => {
                tracing::info!(%key, %reason, "skipped: not an import");
                outcomes.push(RecordOutcome::Skipped { key, reason });
            }
            EventRecord::Import(target) => match importer.import(&target).await {
                Ok(report) => outcomes.push(RecordOutcome::Imported(Box::new(report.trimmed()))),
                Err(error) => {
                    tracing::error!(key = %target.key, error = %error, "import failed; Lambda will retry");
                    error_type.get_or_insert(error.kind());
                    failures.push(format!("{}: {error}", target.key));
                }
            },
        }
    }
    if failures.is_empty() {
        Ok(outcomes)
    } else {
        Err(Diagnostic {
            error_type: error_type.unwrap_or("ImportFailed").into(),
            error_message: failures.join("; "),
        })
    }
}
