//! The import job: an uploaded spreadsheet becomes upserted rows, a report of the rows it
//! refused, and cached QR images for the rows it touched. A file that cannot be read changes
//! nothing; the rows and the outcome are committed together; the same object version is never
//! imported twice.

pub mod claim;
pub mod event;
mod load;
pub mod report;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

use crate::cache::Cache;
use crate::config::Config;
use crate::db::{self, Database, Kind, RowFilter};
use crate::error::Error;
use crate::spreadsheet::{self, Limits, ParsedFile, Records};
use crate::storage::{Storage, StorageError};
use crate::warm::{self, WarmRequest};
use claim::{Claim, Counts, ImportRecord};
use event::ImportTarget;
use report::RejectedRow;

/// The password a new student gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordPolicy {
    /// A hash no one can log in with, and `password_reset_required`: students activate through
    /// the app's date-of-birth + pincode reset. The default.
    ResetRequired,
    /// The app's old behaviour: bcrypt(`YYYYMMDD` + pincode, cost 12), guessable by anyone who
    /// knows a student's birthday and pincode. `IMPORT_PASSWORD_MODE=legacy`.
    LegacyDateOfBirthPincode,
}

impl std::str::FromStr for PasswordPolicy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "reset" | "reset_required" => Ok(PasswordPolicy::ResetRequired),
            "legacy" | "legacy_dob_pincode" => Ok(PasswordPolicy::LegacyDateOfBirthPincode),
            other => Err(format!(
                "`{other}` is not a password mode (reset or legacy)"
            )),
        }
    }
}

/// Import settings from the environment (`IMPORT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSettings {
    pub limits: Limits,
    /// Longest a file may take to read; past it the import fails and nothing is written.
    pub time_limit: Duration,
    /// How long a claim holds before another delivery may take over a crashed run.
    pub lease: Duration,
    /// How long a delivery that finds another run at work waits for its outcome before failing
    /// (so Lambda retries it, and finally sends it to the failure queue).
    pub busy_wait: Duration,
    pub password: PasswordPolicy,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            limits: Limits::default(),
            time_limit: Duration::from_secs(300),
            lease: Duration::from_secs(900),
            busy_wait: Duration::from_secs(30),
            password: PasswordPolicy::ResetRequired,
        }
    }
}

/// Rejected rows listed in the `imports` row and in the function's response; the report has all.
const REJECTED_LISTED: usize = 20;

/// Milliseconds per stage. Stages follow one another, so they add up to the whole: the rows
/// are loaded while the file is read, so `parse_ms` includes loading all but the last rows,
/// and `load_ms` is what is left after the last row was read, and the commit.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    pub download_ms: f64,
    pub parse_ms: f64,
    pub load_ms: f64,
    pub report_ms: f64,
    pub cache_ms: f64,
}

/// Everything about one import: the JSON report in S3 and, trimmed, the function's response.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub import_id: Uuid,
    pub bucket: String,
    pub key: String,
    pub kind: String,
    /// `succeeded`, `partially_succeeded`, `failed`, or `processing` (another run has it).
    pub status: String,
    /// True when this delivery found the import already done and changed nothing.
    pub redelivered: bool,
    pub counts: Counts,
    /// Why the whole file was refused, if it was.
    pub error: Option<String>,
    pub sheet: Option<String>,
    pub header_row: Option<u32>,
    pub ignored_columns: Vec<String>,
    pub rejected: Vec<RejectedRow>,
    pub report_key: Option<String>,
    /// QR images cached for the inserted and updated rows.
    pub qr_cached: u64,
    pub timings: Timings,
}

impl ImportReport {
    fn from_record(record: ImportRecord, redelivered: bool) -> Self {
        let error = record
            .reasons
            .get(0)
            .and_then(|r| r.get("error"))
            .and_then(|e| e.as_str())
            .map(str::to_owned);
        let rejected = serde_json::from_value(record.reasons.clone()).unwrap_or_default();
        ImportReport {
            import_id: record.id,
            bucket: record.bucket,
            key: record.object_key,
            kind: record.kind,
            status: record.status,
            redelivered,
            counts: Counts {
                rows: record.rows_total,
                inserted: record.rows_inserted,
                updated: record.rows_updated,
                unchanged: record.rows_unchanged,
                rejected: record.rows_rejected,
            },
            error,
            sheet: None,
            header_row: None,
            ignored_columns: Vec::new(),
            rejected,
            report_key: record.report_key,
            qr_cached: 0,
            timings: Timings::default(),
        }
    }

    /// The import's figures as CloudWatch metrics: rows by outcome, failures, duration.
    pub fn metrics(&self) -> crate::telemetry::Metrics {
        let t = &self.timings;
        crate::telemetry::Metrics::new("import-spreadsheet")
            .count("ImportRowsInserted", self.counts.inserted.max(0) as u64)
            .count("ImportRowsUpdated", self.counts.updated.max(0) as u64)
            .count("ImportRowsUnchanged", self.counts.unchanged.max(0) as u64)
            .count("ImportRowsRejected", self.counts.rejected.max(0) as u64)
            .count("ImportFailed", u64::from(self.status == "failed"))
            .count("QrCached", self.qr_cached)
            .milliseconds(
                "ImportDuration",
                t.download_ms + t.parse_ms + t.load_ms + t.report_ms + t.cache_ms,
            )
    }

    /// The response form: at most the first rejected rows.
    pub fn trimmed(mut self) -> Self {
        self.rejected.truncate(REJECTED_LISTED);
        self
    }

    fn new(id: Uuid, target: &ImportTarget) -> Self {
        ImportReport {
            import_id: id,
            bucket: target.bucket.clone(),
            key: target.key.clone(),
            kind: target.kind.table().into(),
            status: "processing".into(),
            redelivered: false,
            counts: Counts::default(),
            error: None,
            sheet: None,
            header_row: None,
            ignored_columns: Vec::new(),
            rejected: Vec::new(),
            report_key: None,
            qr_cached: 0,
            timings: Timings::default(),
        }
    }
}

/// What an import of a file would do, found without writing anything (`POST /imports/validate`).
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub key: String,
    pub kind: String,
    /// `valid`, `partially_valid` or `invalid`.
    pub status: String,
    /// Why the whole file would be refused, if it would be.
    pub error: Option<String>,
    pub sheet: Option<String>,
    pub header_row: Option<u32>,
    pub ignored_columns: Vec<String>,
    pub rows: u32,
    pub valid_rows: usize,
    pub rejected_rows: usize,
    pub rejected: Vec<RejectedRow>,
}

/// What an import needs; all made once at cold start.
pub struct Importer<'a> {
    pub db: &'a Database,
    pub cache: &'a Cache,
    pub storage: &'a Storage,
    pub config: &'a Config,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Hands the memory the parse and load freed back to the system. The parse ran on a blocking
/// thread whose malloc arena the QR caching that follows does not reuse, so without this the
/// caching grows the process past the parse's peak (126 MiB against 117 MiB for 100,000 rows).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads and validates a file off the async runtime, within the time limit.
/// `Err` is the reason the whole file is refused, written for the admin.
pub async fn parse(
    bytes: Vec<u8>,
    target_format: spreadsheet::Format,
    kind: Kind,
    settings: &ImportSettings,
) -> Result<ParsedFile, String> {
    let limits = settings.limits.clone();
    let today = chrono::Utc::now().date_naive();
    let work = tokio::task::spawn_blocking(move || {
        spreadsheet::read_records(&bytes, target_format, kind, &limits, today)
    });
    match tokio::time::timeout(settings.time_limit, work).await {
        Ok(Ok(result)) => result.map_err(|error| error.to_string()),
        Ok(Err(_)) => Err("the file could not be read: the reader stopped unexpectedly".into()),
        Err(_) => Err(too_slow(settings.time_limit)),
    }
}

/// Rows the reader hands the loader at a time. Each chunk costs a few round trips; smaller
/// chunks leave less of the load to do after the last row is read.
const CHUNK_ROWS: usize = 5_000;

/// Chunks read ahead of the loader: the reader's lead, and the rows held at once.
const CHUNKS_AHEAD: usize = 1;

/// Why an import's transaction stopped: the file's fault (recorded as a failed import), or not.
enum Halt {
    Refused(String),
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(error: Error) -> Self {
        Halt::Failed(error)
    }
}

/// What a committed import's transaction hands back.
struct Committed {
    parsed: ParsedFile,
    parse_ms: f64,
    touched: Vec<Uuid>,
    counts: Counts,
    status: &'static str,
    error: Option<String>,
    rejected: Vec<spreadsheet::RowError>,
}

/// `work`, refused as too slow when it is not done by `deadline` (or the deadline has passed).
async fn within<T>(
    deadline: tokio::time::Instant,
    time_limit: Duration,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Halt> {
    if tokio::time::Instant::now() >= deadline {
        return Err(Halt::Refused(too_slow(time_limit)));
    }
    tokio::time::timeout_at(deadline, work)
        .await
        .map_err(|_| Halt::Refused(too_slow(time_limit)))
}

fn too_slow(time_limit: Duration) -> String {
    format!(
        "reading the file took longer than {} s: split it into smaller files",
        time_limit.as_secs()
    )
}

impl Importer<'_> {
    /// Imports one uploaded object version, or returns the outcome of the run that did.
    pub async fn import(&self, target: &ImportTarget) -> Result<ImportReport, Error> {
        let client = self.db.client().await?;
        let id = match claim::claim(&client, target, self.config.import.lease).await? {
            Claim::Finished(record) => {
                tracing::info!(import_id = %record.id, key = %target.key, status = %record.status, "already imported; returning the earlier outcome");
                return Ok(ImportReport::from_record(record, true));
            }
            Claim::Busy(record) => return self.await_other_run(&client, record).await,
            Claim::Claimed(id) => id,
        };
        tracing::info!(import_id = %id, key = %target.key, kind = %target.kind, "importing");
        match self.run(id, target, &client).await {
            Ok(report) => {
                report.metrics().emit();
                Ok(report)
            }
            Err(error) => {
                crate::telemetry::Metrics::new("import-spreadsheet")
                    .count("ImportErrors", 1)
                    .emit();
                // Not the file's fault: let Lambda's retry take the claim over at once.
                if let Err(release_error) = claim::release(&client, id).await {
                    tracing::error!(error = %release_error, "could not release the import claim");
                }
                Err(error)
            }
        }
    }

    /// Reads and checks an uploaded object as an import would, against the database as it is
    /// now, and writes nothing.
    pub async fn dry_run(&self, bucket: &str, key: &str) -> Result<DryRun, Error> {
        let (kind, format) = event::classify(key)
            .map_err(|reason| Error::InvalidRequest(format!("{key}: {reason}")))?;
        let settings = &self.config.import;
        let mut dry = DryRun {
            key: key.to_owned(),
            kind: kind.table().into(),
            status: "invalid".into(),
            error: None,
            sheet: None,
            header_row: None,
            ignored_columns: Vec::new(),
            rows: 0,
            valid_rows: 0,
            rejected_rows: 0,
            rejected: Vec::new(),
        };
        let bytes = match self
            .storage
            .get(bucket, key, None, settings.limits.max_bytes)
            .await
        {
            Ok(fetched) => fetched.bytes,
            Err(error @ (StorageError::TooLarge { .. } | StorageError::NotFound { .. })) => {
                dry.error = Some(error.to_string());
                return Ok(dry);
            }
            Err(error) => return Err(Error::Failed(error.to_string())),
        };
        let parsed = match parse(bytes, format, kind, settings).await {
            Ok(parsed) => parsed,
            Err(reason) => {
                dry.error = Some(reason);
                return Ok(dry);
            }
        };
        dry.sheet = parsed.sheet.clone();
        dry.header_row = Some(parsed.header_row);
        dry.ignored_columns = parsed.ignored_columns.clone();
        dry.rows = parsed.rows_seen;
        let client = self.db.client().await?;
        let file_rejected_rows = parsed.rejected_rows().len();
        let mut rejected = parsed.rejected;
        let (valid, db_rejected) = match parsed.records {
            Records::Students(rows) => {
                let existing = load::Existing::read(&client, Kind::Students).await?;
                let checked = load::check_students(&client, rows, &existing).await?;
                (checked.accepted.len(), checked.rejected)
            }
            Records::Stalls(rows) => {
                let checked = load::check_stalls(&client, rows).await?;
                (checked.accepted.len(), checked.rejected)
            }
        };
        dry.valid_rows = valid;
        dry.rejected_rows = file_rejected_rows + db_rejected.len();
        rejected.extend(db_rejected);
        rejected.sort_by_key(|e| e.row);
        dry.rejected = rejected.iter().map(RejectedRow::from).collect();
        dry.status = match (valid, dry.rejected_rows) {
            (0, _) => "invalid",
            (_, 0) => "valid",
            _ => "partially_valid",
        }
        .into();
        if valid == 0 && dry.rejected_rows == 0 {
            dry.error = Some("the sheet has headers but no data rows".into());
        }
        Ok(dry)
    }

    /// Another run holds the claim: wait for its outcome; if it does not come (that run may
    /// have crashed and its lease still runs), fail so the event is retried, not dropped.
    async fn await_other_run(
        &self,
        client: &tokio_postgres::Client,
        record: ImportRecord,
    ) -> Result<ImportReport, Error> {
        tracing::info!(import_id = %record.id, key = %record.object_key, "another run is importing this file; waiting for it");
        let deadline = Instant::now() + self.config.import.busy_wait;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(now) = claim::find(client, record.id).await? {
                if now.is_finished() {
                    return Ok(ImportReport::from_record(now, true));
                }
            }
        }
        Err(Error::Failed(format!(
            "import {} of {} is still being processed by another run; the event will be retried",
            record.id, record.object_key
        )))
    }

    async fn run(
        &self,
        id: Uuid,
        target: &ImportTarget,
        client: &tokio_postgres::Client,
    ) -> Result<ImportReport, Error> {
        let settings = &self.config.import;
        let mut report = ImportReport::new(id, target);

        let started = Instant::now();
        let fetched = self
            .storage
            .get(
                &target.bucket,
                &target.key,
                target.version_id.as_deref(),
                settings.limits.max_bytes,
            )
            .await;
        report.timings.download_ms = ms(started);
        let bytes = match fetched {
            Ok(fetched) => fetched.bytes,
            Err(error @ StorageError::TooLarge { .. }) => {
                return self.refuse(client, report, error.to_string()).await
            }
            Err(error @ StorageError::NotFound { .. }) => {
                return self.refuse(client, report, error.to_string()).await
            }
            Err(error) => return Err(Error::Failed(error.to_string())),
        };

        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + settings.time_limit;
        // The reader hands rows over a chunk at a time and the loader writes each while the
        // next is read, so the file's parse and its load overlap on two cores.
        let (sender, mut chunks) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let (limits, format, kind) = (settings.limits.clone(), target.format, target.kind);
        let today = chrono::Utc::now().date_naive();
        let mut reading = tokio::task::spawn_blocking(move || {
            let parsed = spreadsheet::stream_records(
                &bytes,
                format,
                kind,
                &limits,
                today,
                CHUNK_ROWS,
                &mut |chunk| match sender.blocking_send(chunk) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                },
            );
            (parsed, ms(started))
        });
        let secret = self.config.jwt_secret()?;
        let password = settings.password;
        let time_limit = settings.time_limit;
        let outcome = db::in_transaction(client, async {
            let mut loader = load::Loader::start(client, kind, secret, password).await?;
            while let Some(chunk) = within(deadline, time_limit, chunks.recv()).await? {
                loader.load(chunk).await?;
            }
            let (parsed, parse_ms) =
                within(deadline, time_limit, &mut reading)
                    .await?
                    .map_err(|_| {
                        Halt::Refused(
                            "the file could not be read: the reader stopped unexpectedly".into(),
                        )
                    })?;
            let mut parsed = parsed.map_err(|error| Halt::Refused(error.to_string()))?;
            let rest = std::mem::replace(&mut parsed.records, Records::new(kind));
            loader.load(rest).await?;
            let loaded = loader.finish();

            let rejected_rows = parsed.rejected_rows().len() + loaded.rejected.len();
            let mut rejected = std::mem::take(&mut parsed.rejected);
            rejected.extend(loaded.rejected);
            rejected.sort_by_key(|e| e.row);
            let counts = Counts {
                rows: parsed.rows_seen as i32,
                inserted: loaded.inserted as i32,
                updated: loaded.updated as i32,
                unchanged: loaded.unchanged as i32,
                rejected: rejected_rows as i32,
            };
            let loaded_rows = loaded.inserted + loaded.updated + loaded.unchanged;
            let (status, error) = match (loaded_rows, rejected_rows) {
                (0, 0) => (
                    "failed",
                    Some("the sheet has headers but no data rows".to_string()),
                ),
                (0, _) => (
                    "failed",
                    Some("every row was rejected: see the rejected rows".to_string()),
                ),
                (_, 0) => ("succeeded", None),
                _ => ("partially_succeeded", None),
            };
            let listed: Vec<RejectedRow> = rejected
                .iter()
                .take(REJECTED_LISTED)
                .map(RejectedRow::from)
                .collect();
            let reasons = match &error {
                Some(error) if listed.is_empty() => serde_json::json!([{ "error": error }]),
                _ => serde_json::to_value(&listed).unwrap_or_default(),
            };
            claim::finish(client, id, status, &counts, &reasons).await?;
            Ok(Committed {
                parsed,
                parse_ms,
                touched: loaded.touched,
                counts,
                status,
                error,
                rejected,
            })
        })
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(Halt::Refused(reason)) => {
                report.timings.parse_ms = ms(started);
                return self.refuse(client, report, reason).await;
            }
            Err(Halt::Failed(error)) => return Err(error),
        };
        report.timings.parse_ms = outcome.parse_ms;
        report.timings.load_ms = ms(started) - outcome.parse_ms;
        report.sheet = outcome.parsed.sheet;
        report.header_row = Some(outcome.parsed.header_row);
        report.ignored_columns = outcome.parsed.ignored_columns;
        report.counts = outcome.counts;
        report.status = outcome.status.into();
        report.error = outcome.error;
        report.rejected = outcome.rejected.iter().map(RejectedRow::from).collect();
        let (rejected, touched) = (outcome.rejected, outcome.touched);

        release_freed_memory();

        let started = Instant::now();
        self.write_report(client, &mut report, &rejected).await?;
        report.timings.report_ms = ms(started);

        let started = Instant::now();
        report.qr_cached = self.cache_touched(target.kind, touched).await;
        report.timings.cache_ms = ms(started);
        tracing::info!(
            import_id = %id, status = %report.status, inserted = report.counts.inserted, updated = report.counts.updated,
            unchanged = report.counts.unchanged, rejected = report.counts.rejected, qr_cached = report.qr_cached, "import finished"
        );
        Ok(report)
    }

    /// The whole file is refused: nothing loaded, the reason recorded and reported.
    async fn refuse(
        &self,
        client: &tokio_postgres::Client,
        mut report: ImportReport,
        reason: String,
    ) -> Result<ImportReport, Error> {
        tracing::warn!(import_id = %report.import_id, reason = %reason, "file refused");
        let reasons = serde_json::json!([{ "error": reason }]);
        claim::finish(
            client,
            report.import_id,
            "failed",
            &Counts::default(),
            &reasons,
        )
        .await?;
        report.status = "failed".into();
        report.error = Some(reason);
        self.write_report(client, &mut report, &[]).await?;
        Ok(report)
    }

    /// `reports/{id}.json` and, when rows were refused, `reports/{id}-rejected.csv`.
    async fn write_report(
        &self,
        client: &tokio_postgres::Client,
        report: &mut ImportReport,
        rejected: &[spreadsheet::RowError],
    ) -> Result<(), Error> {
        let key = format!("reports/{}.json", report.import_id);
        report.report_key = Some(key.clone());
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| Error::Failed(format!("writing the report: {e}")))?;
        self.storage
            .put(&report.bucket, &key, json, "application/json")
            .await
            .map_err(|e| Error::Failed(e.to_string()))?;
        if !rejected.is_empty() {
            let csv = report::rejected_csv(rejected)
                .map_err(|e| Error::Failed(format!("writing the rejected rows: {e}")))?;
            let csv_key = format!("reports/{}-rejected.csv", report.import_id);
            self.storage
                .put(&report.bucket, &csv_key, csv, "text/csv; charset=utf-8")
                .await
                .map_err(|e| Error::Failed(e.to_string()))?;
        }
        claim::set_report_key(client, report.import_id, &key).await
    }

    /// Caches the QR images of the rows the import touched, with the warmer's own code. The
    /// rows are committed by now, so a cache failure is logged, not fatal: the API renders on
    /// a miss and the next warm fills the gap.
    async fn cache_touched(&self, kind: Kind, touched: Vec<Uuid>) -> u64 {
        if touched.is_empty() {
            return 0;
        }
        let mut cached = 0;
        for ids in touched.chunks(10_000) {
            let request = WarmRequest {
                kinds: vec![kind],
                force: false,
                filter: RowFilter {
                    ids: ids.to_vec(),
                    shard: None,
                },
            };
            match warm::warm(self.db, self.cache, &self.config.qr, &request, &()).await {
                Ok(summary) => cached += summary.cached(),
                Err(failed) => {
                    tracing::error!(error = %failed.error, "caching the imported rows' QR images failed");
                    cached += failed.summary.cached();
                }
            }
        }
        cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_reports_its_rows_by_outcome_as_metrics() {
        let target = ImportTarget {
            bucket: "b".into(),
            key: "imports/students/a.csv".into(),
            version: "v".into(),
            version_id: None,
            kind: Kind::Students,
            format: spreadsheet::Format::Csv,
        };
        let mut report = ImportReport::new(Uuid::nil(), &target);
        report.status = "partially_succeeded".into();
        report.counts = Counts {
            rows: 10,
            inserted: 5,
            updated: 2,
            unchanged: 1,
            rejected: 2,
        };
        report.timings.parse_ms = 12.0;
        let line: serde_json::Value = serde_json::from_str(&report.metrics().to_emf(0)).unwrap();
        assert_eq!(line["Function"], "import-spreadsheet");
        assert_eq!(
            (
                line["ImportRowsInserted"].as_f64(),
                line["ImportRowsUpdated"].as_f64(),
                line["ImportRowsRejected"].as_f64()
            ),
            (Some(5.0), Some(2.0), Some(2.0))
        );
        assert_eq!(line["ImportFailed"], 0.0);
        assert_eq!(line["ImportDuration"], 12.0);
    }

    #[test]
    fn password_modes_parse_and_others_are_refused() {
        assert_eq!(
            "legacy".parse::<PasswordPolicy>(),
            Ok(PasswordPolicy::LegacyDateOfBirthPincode)
        );
        assert_eq!(
            "RESET".parse::<PasswordPolicy>(),
            Ok(PasswordPolicy::ResetRequired)
        );
        assert!("plaintext".parse::<PasswordPolicy>().is_err());
    }
}
