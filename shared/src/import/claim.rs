//! The `imports` table: each uploaded object version has one row, and the run importing it holds
//! that row locked in the import's own transaction. So a redelivered event finds the earlier
//! outcome, two deliveries at once find one holder, and a run that dies (timeout, out of memory,
//! a killed process) releases its claim with its connection: the retry takes over at once, with
//! no lease to wait out. Every run bumps `attempts` when it takes the row, and its `finish`
//! writes only if the count is still its own, so a run that lost its claim cannot commit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use super::event::ImportTarget;
use super::options::{BlankCells, ImportOptions};
use crate::error::Error;

/// Where an import stands; `as_str` is the `imports.status` column's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    AwaitingUpload,
    Processing,
    Succeeded,
    PartiallySucceeded,
    Failed,
}

impl ImportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::AwaitingUpload => "awaiting_upload",
            ImportStatus::Processing => "processing",
            ImportStatus::Succeeded => "succeeded",
            ImportStatus::PartiallySucceeded => "partially_succeeded",
            ImportStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<ImportStatus, Error> {
        [
            ImportStatus::AwaitingUpload,
            ImportStatus::Processing,
            ImportStatus::Succeeded,
            ImportStatus::PartiallySucceeded,
            ImportStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
        .ok_or(Error::ImportState(
            Uuid::nil(),
            "its row has a status this version does not know",
        ))
    }

    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            ImportStatus::AwaitingUpload | ImportStatus::Processing
        )
    }
}

impl std::fmt::Display for ImportStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ImportStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An `imports` row as the status page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImportRecord {
    pub id: Uuid,
    pub kind: String,
    pub bucket: String,
    pub object_key: String,
    pub status: ImportStatus,
    pub rows_total: i32,
    pub rows_inserted: i32,
    pub rows_updated: i32,
    pub rows_unchanged: i32,
    pub rows_rejected: i32,
    /// Why the file failed, or the first rejected rows.
    pub reasons: serde_json::Value,
    /// Set once the report is in S3.
    pub report_key: Option<String>,
    /// The rejected rows, ready to fix and upload again; set once written.
    pub rejected_key: Option<String>,
    pub attempts: i32,
    pub blank_cells: BlankCells,
    pub event_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the last run failed on Postgres or S3 while the import waits for a retry; cleared
    /// when it finishes.
    pub last_error: Option<String>,
}

const COLUMNS: &str =
    "id, kind, bucket, object_key, status, rows_total, rows_inserted, rows_updated, \
                       rows_unchanged, rows_rejected, reasons, report_key, rejected_key, attempts, \
                       blank_cells, event_id, created_at, finished_at, last_error";

impl ImportRecord {
    fn from_row(row: &Row) -> Result<Self, Error> {
        let context = "reading an import";
        let get_error = |e| Error::postgres(context, e);
        let status: String = row.try_get(4).map_err(get_error)?;
        let blank_cells: String = row.try_get(14).map_err(get_error)?;
        Ok(ImportRecord {
            id: row.try_get(0).map_err(get_error)?,
            kind: row.try_get(1).map_err(get_error)?,
            bucket: row.try_get(2).map_err(get_error)?,
            object_key: row.try_get(3).map_err(get_error)?,
            status: ImportStatus::parse(&status)?,
            rows_total: row.try_get(5).map_err(get_error)?,
            rows_inserted: row.try_get(6).map_err(get_error)?,
            rows_updated: row.try_get(7).map_err(get_error)?,
            rows_unchanged: row.try_get(8).map_err(get_error)?,
            rows_rejected: row.try_get(9).map_err(get_error)?,
            reasons: row.try_get(10).map_err(get_error)?,
            report_key: row.try_get(11).map_err(get_error)?,
            rejected_key: row.try_get(12).map_err(get_error)?,
            attempts: row.try_get(13).map_err(get_error)?,
            blank_cells: blank_cells
                .parse()
                .map_err(|_| Error::ImportState(Uuid::nil(), "its blank-cell choice is unknown"))?,
            event_id: row.try_get(15).map_err(get_error)?,
            created_at: row.try_get(16).map_err(get_error)?,
            finished_at: row.try_get(17).map_err(get_error)?,
            last_error: row.try_get(18).map_err(get_error)?,
        })
    }

    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    pub fn options(&self) -> ImportOptions {
        ImportOptions {
            blank_cells: self.blank_cells,
            event: self.event_id,
        }
    }
}

/// Makes sure the object version has its row and answers its id. An upload made through the
/// API's presigned URL already has one, awaiting the file (with the admin's options); any other
/// upload gets a new one.
pub async fn register(client: &Client, target: &ImportTarget) -> Result<Uuid, Error> {
    let context = "registering the import";
    // A concurrent delivery's row, committed while this statement ran, is invisible to its
    // snapshot: the next attempt sees it.
    for _ in 0..3 {
        let rows = client
            .query_typed(
                "WITH adopted AS (
                   UPDATE imports SET object_version = $3, status = 'processing'
                    WHERE bucket = $1 AND object_key = $2 AND object_version IS NULL
                      AND status = 'awaiting_upload'
                   RETURNING id
                 ), inserted AS (
                   INSERT INTO imports (kind, bucket, object_key, object_version, status)
                   SELECT $4, $1, $2, $3, 'processing' WHERE NOT EXISTS (SELECT 1 FROM adopted)
                   ON CONFLICT (bucket, object_key, object_version) DO NOTHING
                   RETURNING id
                 )
                 SELECT id FROM adopted UNION ALL SELECT id FROM inserted
                 UNION ALL SELECT id FROM imports
                  WHERE bucket = $1 AND object_key = $2 AND object_version = $3
                 LIMIT 1",
                &[
                    (&target.bucket, Type::TEXT),
                    (&target.key, Type::TEXT),
                    (&target.version, Type::TEXT),
                    (&target.kind.table(), Type::TEXT),
                ],
            )
            .await
            .map_err(|e| Error::postgres(context, e))?;
        if let Some(row) = rows.first() {
            return Ok(row.get(0));
        }
    }
    Err(Error::Unregistered {
        key: target.key.clone(),
    })
}

/// This run's hold on an import: the row is locked by the open transaction.
#[derive(Debug, Clone)]
pub struct Held {
    pub record: ImportRecord,
    /// The `attempts` count this run set; `finish` checks it.
    pub attempt: i32,
}

/// What a run found when it tried to take an import.
#[derive(Debug)]
pub enum Claim {
    /// This run holds it, in the open transaction.
    Claimed(Held),
    /// A live run holds it.
    Busy(ImportRecord),
    /// Done before: the earlier outcome.
    Finished(ImportRecord),
}

/// Takes the import's row inside the caller's open transaction. A row another transaction has
/// locked belongs to a live run; an unlocked row still `processing` was left by a run that died,
/// and is taken over.
pub async fn take(client: &Client, id: Uuid) -> Result<Claim, Error> {
    let context = "claiming the import";
    let sql = format!("SELECT {COLUMNS} FROM imports WHERE id = $1 FOR UPDATE SKIP LOCKED");
    let rows = client
        .query_typed(&sql, &[(&id, Type::UUID)])
        .await
        .map_err(|e| Error::postgres(context, e))?;
    let Some(row) = rows.first() else {
        let record = find(client, id).await?.ok_or(Error::ImportState(
            id,
            "its row vanished while it was claimed",
        ))?;
        return Ok(Claim::Busy(record));
    };
    let mut record = ImportRecord::from_row(row)?;
    if record.is_finished() {
        return Ok(Claim::Finished(record));
    }
    let attempt: i32 = client
        .query_typed(
            "UPDATE imports SET attempts = attempts + 1, started_at = now() WHERE id = $1
             RETURNING attempts",
            &[(&id, Type::UUID)],
        )
        .await
        .map_err(|e| Error::postgres(context, e))?
        .first()
        .map(|row| row.get(0))
        .ok_or(Error::ImportState(
            id,
            "its row vanished while it was claimed",
        ))?;
    record.attempts = attempt;
    Ok(Claim::Claimed(Held { record, attempt }))
}

/// The final counts, written in the same transaction as the rows themselves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub rows: i32,
    pub inserted: i32,
    pub updated: i32,
    pub unchanged: i32,
    pub rejected: i32,
}

/// What a finished import records.
pub struct Outcome<'a> {
    pub status: ImportStatus,
    pub counts: &'a Counts,
    pub reasons: &'a serde_json::Value,
    /// The whole report, from which the files in S3 are written.
    pub report: &'a serde_json::Value,
    /// Rows whose QR images are to be cached.
    pub qr_pending: &'a [Uuid],
}

/// Records why a run failed on the machinery, for the status page while the import waits for
/// a retry. Outside the run's transaction, which rolled back; an import that finished
/// meanwhile is left alone.
pub async fn record_failure(client: &Client, id: Uuid, error: &Error) -> Result<(), Error> {
    let text = format!("the last attempt failed and will be retried: {error}");
    client
        .execute_typed(
            "UPDATE imports SET last_error = $2 WHERE id = $1 AND status = 'processing'",
            &[(&id, Type::UUID), (&text, Type::TEXT)],
        )
        .await
        .map_err(|e| Error::postgres("recording why an import failed", e))?;
    Ok(())
}

/// Records the outcome, fenced on the claim: a run that no longer holds it writes nothing.
pub async fn finish(client: &Client, held: &Held, outcome: &Outcome<'_>) -> Result<(), Error> {
    let updated = client
        .query_typed(
            "UPDATE imports
                SET status = $3, rows_total = $4, rows_inserted = $5, rows_updated = $6,
                    rows_unchanged = $7, rows_rejected = $8, reasons = $9, report = $10,
                    qr_pending = $11, finished_at = now(), lease_expires_at = NULL,
                    last_error = NULL
              WHERE id = $1 AND attempts = $2 AND status = 'processing'
             RETURNING id",
            &[
                (&held.record.id, Type::UUID),
                (&held.attempt, Type::INT4),
                (&outcome.status.as_str(), Type::TEXT),
                (&outcome.counts.rows, Type::INT4),
                (&outcome.counts.inserted, Type::INT4),
                (&outcome.counts.updated, Type::INT4),
                (&outcome.counts.unchanged, Type::INT4),
                (&outcome.counts.rejected, Type::INT4),
                (outcome.reasons, Type::JSONB),
                (outcome.report, Type::JSONB),
                (&outcome.qr_pending, Type::UUID_ARRAY),
            ],
        )
        .await
        .map_err(|e| Error::postgres("recording the import's outcome", e))?;
    if updated.is_empty() {
        return Err(Error::ImportTakenOver {
            id: held.record.id,
            attempt: held.attempt,
        });
    }
    Ok(())
}

/// What a finished import still owes after its commit.
pub struct Unfinished {
    /// The stored report, when its files are not yet in S3.
    pub report: Option<serde_json::Value>,
    pub qr_pending: Option<Vec<Uuid>>,
}

pub async fn unfinished(client: &Client, id: Uuid) -> Result<Unfinished, Error> {
    let rows = client
        .query_typed(
            "SELECT CASE WHEN report_written_at IS NULL THEN report END, qr_pending
               FROM imports WHERE id = $1",
            &[(&id, Type::UUID)],
        )
        .await
        .map_err(|e| Error::postgres("reading what an import still owes", e))?;
    Ok(match rows.first() {
        Some(row) => Unfinished {
            report: row.get(0),
            qr_pending: row.get(1),
        },
        None => Unfinished {
            report: None,
            qr_pending: None,
        },
    })
}

/// The report's files are in S3.
pub async fn reports_written(
    client: &Client,
    id: Uuid,
    report_key: &str,
    rejected_key: Option<&str>,
) -> Result<(), Error> {
    client
        .query_typed(
            "UPDATE imports SET report_key = $2, rejected_key = $3, report_written_at = now()
              WHERE id = $1",
            &[
                (&id, Type::UUID),
                (&report_key, Type::TEXT),
                (&rejected_key, Type::TEXT),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::postgres("recording the report's keys", e))
}

/// The import's QR images are cached.
pub async fn qr_cached(client: &Client, id: Uuid) -> Result<(), Error> {
    client
        .query_typed(
            "UPDATE imports SET qr_pending = NULL WHERE id = $1",
            &[(&id, Type::UUID)],
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::postgres("recording the cached QR images", e))
}

/// One import by id, for the status page.
pub async fn find(client: &Client, id: Uuid) -> Result<Option<ImportRecord>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM imports WHERE id = $1");
    let rows = client
        .query_typed(&sql, &[(&id, Type::UUID)])
        .await
        .map_err(|e| Error::postgres("reading an import", e))?;
    rows.first().map(ImportRecord::from_row).transpose()
}
