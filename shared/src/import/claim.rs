//! The `imports` table: each uploaded object version is claimed once. A redelivered event finds
//! the earlier outcome; two deliveries at once find one claim; a claim whose run crashed can be
//! taken over once its lease has expired.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient, Row};
use uuid::Uuid;

use super::event::ImportTarget;
use crate::error::Error;

/// An `imports` row as the status page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImportRecord {
    pub id: Uuid,
    pub kind: String,
    pub bucket: String,
    pub object_key: String,
    pub status: String,
    pub rows_total: i32,
    pub rows_inserted: i32,
    pub rows_updated: i32,
    pub rows_unchanged: i32,
    pub rows_rejected: i32,
    /// Why the file failed, or the first rejected rows.
    pub reasons: serde_json::Value,
    pub report_key: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, kind, bucket, object_key, status, rows_total, rows_inserted, rows_updated, \
                       rows_unchanged, rows_rejected, reasons, report_key, attempts, created_at, finished_at";

impl ImportRecord {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ImportRecord {
            id: row.try_get(0)?,
            kind: row.try_get(1)?,
            bucket: row.try_get(2)?,
            object_key: row.try_get(3)?,
            status: row.try_get(4)?,
            rows_total: row.try_get(5)?,
            rows_inserted: row.try_get(6)?,
            rows_updated: row.try_get(7)?,
            rows_unchanged: row.try_get(8)?,
            rows_rejected: row.try_get(9)?,
            reasons: row.try_get(10)?,
            report_key: row.try_get(11)?,
            attempts: row.try_get(12)?,
            created_at: row.try_get(13)?,
            finished_at: row.try_get(14)?,
        })
    }

    pub fn is_finished(&self) -> bool {
        self.status != "processing" && self.status != "awaiting_upload"
    }
}

/// The outcome of trying to claim an object version.
#[derive(Debug)]
pub enum Claim {
    /// This run does the import.
    Claimed(Uuid),
    /// Another run holds a live claim.
    Busy(ImportRecord),
    /// Done before: the earlier outcome.
    Finished(ImportRecord),
}

pub async fn claim(
    client: &Client,
    target: &ImportTarget,
    lease: Duration,
) -> Result<Claim, Error> {
    let context = "claiming the import";
    let lease_secs = lease.as_secs_f64();
    let kind = target.kind.table();
    // An upload made through the API's presigned URL already has its row, awaiting the file;
    // any other upload gets a new one. Both statements run in one, so concurrent deliveries
    // serialise on the row and the unique key.
    let claimed = client
        .query_typed(
            "WITH adopted AS (
               UPDATE imports
                  SET object_version = $3, status = 'processing', attempts = attempts + 1,
                      started_at = now(), lease_expires_at = now() + make_interval(secs => $4)
                WHERE bucket = $1 AND object_key = $2 AND object_version IS NULL
                  AND status = 'awaiting_upload'
               RETURNING id
             ), inserted AS (
               INSERT INTO imports (kind, bucket, object_key, object_version, status, attempts,
                                    started_at, lease_expires_at)
               SELECT $5, $1, $2, $3, 'processing', 1, now(), now() + make_interval(secs => $4)
                WHERE NOT EXISTS (SELECT 1 FROM adopted)
               ON CONFLICT (bucket, object_key, object_version) DO UPDATE
                  SET attempts = imports.attempts + 1, started_at = now(),
                      lease_expires_at = EXCLUDED.lease_expires_at
                WHERE imports.status = 'processing' AND imports.lease_expires_at < now()
               RETURNING id
             )
             SELECT id FROM adopted UNION ALL SELECT id FROM inserted",
            &[
                (&target.bucket, Type::TEXT),
                (&target.key, Type::TEXT),
                (&target.version, Type::TEXT),
                (&lease_secs, Type::FLOAT8),
                (&kind, Type::TEXT),
            ],
        )
        .await
        .map_err(|e| Error::postgres(context, e))?;
    if let Some(row) = claimed.first() {
        return Ok(Claim::Claimed(row.get(0)));
    }
    let sql = format!("SELECT {COLUMNS} FROM imports WHERE bucket = $1 AND object_key = $2 AND object_version = $3");
    let row = client
        .query_typed(
            &sql,
            &[
                (&target.bucket, Type::TEXT),
                (&target.key, Type::TEXT),
                (&target.version, Type::TEXT),
            ],
        )
        .await
        .map_err(|e| Error::postgres(context, e))?;
    let record = row
        .first()
        .map(ImportRecord::from_row)
        .transpose()
        .map_err(|e| Error::postgres(context, e))?
        .ok_or_else(|| Error::Failed("the import's claim vanished while it was read".into()))?;
    Ok(if record.is_finished() {
        Claim::Finished(record)
    } else {
        Claim::Busy(record)
    })
}

/// Gives the claim up after an infrastructure failure, so Lambda's retry takes it over at once.
pub async fn release(client: &Client, id: Uuid) -> Result<(), Error> {
    client
        .query_typed(
            "UPDATE imports SET lease_expires_at = now() WHERE id = $1 AND status = 'processing'",
            &[(&id, Type::UUID)],
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::postgres("releasing the import claim", e))
}

/// The final counts, written in the same transaction as the rows themselves.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub rows: i32,
    pub inserted: i32,
    pub updated: i32,
    pub unchanged: i32,
    pub rejected: i32,
}

pub async fn finish(
    client: &impl GenericClient,
    id: Uuid,
    status: &str,
    counts: &Counts,
    reasons: &serde_json::Value,
) -> Result<(), Error> {
    client
        .query_typed(
            "UPDATE imports
                SET status = $2, rows_total = $3, rows_inserted = $4, rows_updated = $5,
                    rows_unchanged = $6, rows_rejected = $7, reasons = $8,
                    finished_at = now(), lease_expires_at = NULL
              WHERE id = $1",
            &[
                (&id, Type::UUID),
                (&status, Type::TEXT),
                (&counts.rows, Type::INT4),
                (&counts.inserted, Type::INT4),
                (&counts.updated, Type::INT4),
                (&counts.unchanged, Type::INT4),
                (&counts.rejected, Type::INT4),
                (reasons, Type::JSONB),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::postgres("recording the import's outcome", e))
}

pub async fn set_report_key(client: &Client, id: Uuid, key: &str) -> Result<(), Error> {
    client
        .query_typed(
            "UPDATE imports SET report_key = $2 WHERE id = $1",
            &[(&id, Type::UUID), (&key, Type::TEXT)],
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::postgres("recording the report's key", e))
}

/// One import by id, for the status page.
pub async fn find(client: &Client, id: Uuid) -> Result<Option<ImportRecord>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM imports WHERE id = $1");
    let rows = client
        .query_typed(&sql, &[(&id, Type::UUID)])
        .await
        .map_err(|e| Error::postgres("reading an import", e))?;
    rows.first()
        .map(ImportRecord::from_row)
        .transpose()
        .map_err(|e| Error::postgres("reading an import", e))
}
