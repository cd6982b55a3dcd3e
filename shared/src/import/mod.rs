//! The import job: an uploaded spreadsheet becomes upserted rows, a report of the rows it
//! refused (ready to fix and upload again), and cached QR images for the rows it touched. A
//! file that cannot be read changes nothing; the rows and the outcome are committed together,
//! in one transaction that also holds the import's claim; the same object version is never
//! imported twice, and a run that dies leaves nothing half-done for its retry.

pub mod claim;
mod copy;
pub mod event;
mod load;
pub mod options;
pub mod report;
mod settings;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::cache::Cache;
use crate::db::{self, Database, RowFilter};
use crate::error::Error;
use crate::kind::Kind;
use crate::qr::QrSettings;
use crate::spreadsheet::{self, Limits, ParsedFile, Records};
use crate::storage::{Storage, StorageError};
use crate::warm::{self, WarmRequest};
use claim::{Claim, Counts, Held, ImportStatus, Outcome};
use event::ImportTarget;
pub use load::{Action, Change, UpdatedRow};
use load::{Chunk, Loaded, Loader, Mode};
pub use options::{BlankCells, ImportOptions};
pub use report::{DryRun, ImportReport, PreviewRow, Timings};
use report::{RejectedFile, RejectedRow, REJECTED_LISTED};
use secrecy::SecretString;
pub use settings::{ImportSettings, PasswordPolicy};

/// What an import needs; all made once at cold start.
pub struct Importer<'a> {
    pub db: &'a Database,
    pub cache: &'a Cache,
    pub storage: &'a Storage,
    pub settings: &'a ImportSettings,
    /// How the imported rows' QR images are rendered for the cache.
    pub qr: &'a QrSettings,
    /// Signs the QR tokens of new rows.
    pub jwt_secret: &'a SecretString,
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

/// Rows the reader hands the loader at a time. Each chunk costs a few round trips and a
/// subtransaction (its savepoint); smaller chunks leave less of the load to do after the last
/// row is read, and let the first COPY start sooner. At 2,000 rows the load after the last row
/// took 60-120 ms against 140-200 ms at 5,000 (100,000 students).
const CHUNK_ROWS: usize = 2_000;

/// Chunks a file is cut into at most, whatever its size: each takes a subtransaction, and past
/// the 64 Postgres caches per transaction every other session's snapshot (the live app's
/// included) is marked overflowed and its visibility checks read `pg_subtrans`. Files past
/// 100,000 rows get larger chunks for their rest (10,000 rows at the 200,000-row limit).
const MAX_CHUNKS: usize = 60;

/// Chunks read ahead of the loader: the reader's lead, and the rows held at once.
const CHUNKS_AHEAD: usize = 1;

/// Why a file's reading and loading stopped: the file's fault (recorded as a failed import), or
/// not.
enum Halt {
    Refused(String),
    /// A live run holds the import's claim.
    Busy,
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(error: Error) -> Self {
        Halt::Failed(error)
    }
}

/// A file read and planned (and, when writing, loaded).
struct Processed {
    parsed: ParsedFile,
    loaded: Loaded,
    /// Getting the file from the bucket.
    download_ms: f64,
    parse_ms: f64,
    /// The file, kept to read again the cells of rows the database refused.
    bytes: Vec<u8>,
    format: spreadsheet::Format,
    kind: Kind,
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

/// The counts, status and reason of a processed file.
fn tally(parsed: &ParsedFile, loaded: &Loaded) -> (Counts, ImportStatus, Option<String>) {
    let mut rejected_rows = parsed.rejected_rows();
    rejected_rows.extend(loaded.rejected.iter().map(|e| e.row));
    rejected_rows.sort_unstable();
    rejected_rows.dedup();
    let counts = Counts {
        rows: parsed.rows_seen as i32,
        inserted: loaded.inserted as i32,
        updated: loaded.updated as i32,
        unchanged: loaded.unchanged as i32,
        rejected: rejected_rows.len() as i32,
    };
    let loaded_rows = loaded.inserted + loaded.updated + loaded.unchanged;
    let (status, error) = match (loaded_rows, rejected_rows.len()) {
        (0, 0) => (
            ImportStatus::Failed,
            Some("the sheet has headers but no data rows".to_string()),
        ),
        (0, _) => (
            ImportStatus::Failed,
            Some("every row was rejected: see the rejected rows".to_string()),
        ),
        (_, 0) => (ImportStatus::Succeeded, None),
        _ => (ImportStatus::PartiallySucceeded, None),
    };
    (counts, status, error)
}

/// Every problem of the file's and the load's rejected rows, in row order, and the cells of
/// every rejected row: those the reader refused it kept as it read them; those refused later
/// (by the database) are read again from the file, which costs a second read only then.
async fn all_rejected(processed: &mut Processed, limits: &Limits) -> Vec<spreadsheet::RowError> {
    let Processed { parsed, loaded, .. } = processed;
    let mut rejected = std::mem::take(&mut parsed.rejected);
    rejected.append(&mut loaded.rejected);
    rejected.sort_by_key(|e| e.row);
    let missing: std::collections::HashSet<u32> = rejected
        .iter()
        .map(|e| e.row)
        .filter(|row| !parsed.rejected_originals.contains_key(row))
        .collect();
    if missing.is_empty() {
        return rejected;
    }
    let bytes = std::mem::take(&mut processed.bytes);
    let (format, kind, limits) = (processed.format, processed.kind, limits.clone());
    let read = tokio::task::spawn_blocking(move || {
        spreadsheet::original_rows(&bytes, format, kind, &limits, &missing)
    })
    .await;
    match read {
        Ok(Ok(originals)) => processed.parsed.rejected_originals.extend(originals),
        // The rows are still listed with their reasons, without their cells.
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "the rejected rows' cells could not be read again")
        }
        Err(error) => {
            tracing::warn!(error = %error, "the rejected rows' cells could not be read again")
        }
    }
    rejected
}

impl Importer<'_> {
    /// Imports one uploaded object version, or returns the outcome of the run that did (after
    /// completing what that run left undone: its report files, its QR images).
    pub async fn import(&self, target: &ImportTarget) -> Result<ImportReport, Error> {
        let client = self.db.client().await?;
        let id = claim::register(&client, target).await?;
        let result = db::in_transaction(&client, async {
            match claim::take(&client, id).await? {
                Claim::Claimed(held) => Box::pin(self.run(&client, target, &held)).await.map(Some),
                Claim::Busy(_) => Err(Halt::Busy),
                Claim::Finished(_) => Ok(None),
            }
        })
        .await;
        let (mut report, touched) = match result {
            Ok(Some(ran)) => ran,
            Ok(None) => {
                let record = claim::find(&client, id)
                    .await?
                    .ok_or(Error::ImportState(id, "its row vanished"))?;
                tracing::info!(import_id = %id, key = %target.key, status = %record.status, "already imported; returning the earlier outcome");
                let unfinished = claim::unfinished(&client, id).await?;
                let write_report = unfinished.report.is_some();
                let mut report = ImportReport::from_record(record, unfinished.report);
                self.complete(&client, &mut report, write_report, unfinished.qr_pending)
                    .await?;
                return Ok(report);
            }
            Err(Halt::Busy) => return self.await_other_run(&client, id).await,
            Err(Halt::Refused(reason)) => {
                tracing::error!(import_id = %id, reason = %reason, "the import stopped outside a claim");
                return Err(Error::ImportState(id, "stopped outside its claim"));
            }
            Err(Halt::Failed(error)) => {
                report::failed_run_metrics().emit();
                // A statement the server refused can leave tokio-postgres one answer out of
                // step with it: a COPY refused before copy mode starts is answered with one
                // ReadyForQuery too many, and each later statement would read the answer meant
                // for the one before. That connection is not kept; the failure is recorded on
                // a new one.
                let recorder = match &error {
                    Error::Postgres { .. } => {
                        self.db.forget(&client).await;
                        drop(client);
                        self.db.client().await
                    }
                    _ => Ok(client),
                };
                // The transaction rolled back and released the claim: Lambda's retry takes it
                // over at once. Until then the status page says why.
                let recorded = match recorder {
                    Ok(recorder) => claim::record_failure(&recorder, id, &error).await,
                    Err(connecting) => Err(connecting),
                };
                if let Err(recording) = recorded {
                    tracing::warn!(import_id = %id, error = %recording, "the failure could not be recorded");
                }
                return Err(error);
            }
        };
        release_freed_memory();
        // This run knows what its commit left to do: no need to read it back.
        self.complete(&client, &mut report, true, Some(touched))
            .await?;
        tracing::info!(
            import_id = %id, status = %report.status, inserted = report.counts.inserted, updated = report.counts.updated,
            unchanged = report.counts.unchanged, rejected = report.counts.rejected, qr_cached = report.qr_cached, "import finished"
        );
        report.metrics().emit();
        Ok(report)
    }

    /// Writes what a committed import still owes: its report files, then the QR images of
    /// `qr_pending`. Run after the commit by the run itself, and again by any redelivery that
    /// finds them missing.
    async fn complete(
        &self,
        client: &tokio_postgres::Client,
        report: &mut ImportReport,
        write_report: bool,
        qr_pending: Option<Vec<Uuid>>,
    ) -> Result<(), Error> {
        if write_report {
            let started = Instant::now();
            self.write_report(client, report).await?;
            report.timings.report_ms = ms(started);
        }
        if let Some(ids) = qr_pending {
            let started = Instant::now();
            let kind: Kind = report
                .kind
                .parse()
                .map_err(|_| Error::ImportState(report.import_id, "its report names no kind"))?;
            report.qr_cached = self.cache_touched(kind, ids).await;
            claim::qr_cached(client, report.import_id).await?;
            report.timings.cache_ms = ms(started);
        }
        Ok(())
    }

    /// Reads and plans an uploaded object as an import with `options` would, against the
    /// database as it is now, and writes nothing.
    pub async fn dry_run(
        &self,
        bucket: &str,
        key: &str,
        options: ImportOptions,
    ) -> Result<DryRun, Error> {
        let (kind, format) = event::classify(key)
            .map_err(|reason| Error::InvalidRequest(format!("{key}: {reason}")))?;
        let mut dry = DryRun {
            key: key.to_owned(),
            kind: kind.table().into(),
            status: "invalid".into(),
            options,
            error: None,
            sheet: None,
            header_row: None,
            ignored_columns: Vec::new(),
            counts: Counts::default(),
            valid_rows: 0,
            rejected_rows: 0,
            rows: Vec::new(),
            changes: Vec::new(),
            rejected: Vec::new(),
        };
        let client = self.db.client().await?;
        let target = (bucket, key, None, kind, format);
        // A read-only transaction: the plan sees one consistent state and cannot write.
        let processed = db::in_transaction(&client, async {
            client
                .batch_execute("SET TRANSACTION READ ONLY")
                .await
                .map_err(|e| Error::postgres("starting the dry run", e))?;
            Box::pin(self.process(&client, target, Mode::Preview, options)).await
        })
        .await;
        let mut processed = match processed {
            Ok(processed) => processed,
            Err(Halt::Refused(reason)) => {
                dry.error = Some(reason);
                return Ok(dry);
            }
            Err(Halt::Failed(error)) => return Err(error),
            Err(Halt::Busy) => {
                return Err(Error::InvalidRequest("a dry run claims nothing".into()))
            }
        };
        let (counts, status, error) = tally(&processed.parsed, &processed.loaded);
        let rejected = all_rejected(&mut processed, &self.settings.limits).await;
        let Processed { parsed, loaded, .. } = processed;
        dry.sheet = parsed.sheet.clone();
        dry.header_row = Some(parsed.header_row);
        dry.ignored_columns = parsed.ignored_columns.clone();
        dry.valid_rows = loaded.actions.len();
        dry.rejected_rows = counts.rejected as usize;
        dry.status = match status {
            ImportStatus::Succeeded => "valid",
            ImportStatus::PartiallySucceeded => "partially_valid",
            _ => "invalid",
        }
        .into();
        if counts.rows == 0 {
            dry.error = error;
        }
        dry.counts = counts;
        let rejected_file = RejectedFile::new(Vec::new(), &rejected, &parsed.rejected_originals);
        let mut changes: std::collections::HashMap<u32, &UpdatedRow> =
            loaded.changes.iter().map(|c| (c.row, c)).collect();
        let mut rows: Vec<PreviewRow> = loaded
            .actions
            .iter()
            .map(|(row, action)| {
                let change = changes.remove(row);
                PreviewRow {
                    row: *row,
                    action: match action {
                        Action::Insert => "insert",
                        Action::Update => "update",
                        Action::Unchanged => "unchanged",
                    },
                    key: change.map(|c| c.key.clone()),
                    changes: change.map(|c| c.changes.clone()).unwrap_or_default(),
                    reason: None,
                }
            })
            .collect();
        rows.extend(rejected_file.rows.iter().map(|line| PreviewRow {
            row: line.row,
            action: "rejected",
            key: None,
            changes: Vec::new(),
            reason: Some(line.reason.clone()),
        }));
        rows.sort_by_key(|r| r.row);
        dry.rows = rows;
        dry.changes = loaded.changes;
        dry.rejected = rejected.iter().map(RejectedRow::from).collect();
        Ok(dry)
    }

    /// Another run holds the claim: wait for its outcome; if it does not come, fail so the
    /// event is retried, not dropped.
    async fn await_other_run(
        &self,
        client: &tokio_postgres::Client,
        id: Uuid,
    ) -> Result<ImportReport, Error> {
        tracing::info!(import_id = %id, "another run is importing this file; waiting for it");
        let deadline = Instant::now() + self.settings.busy_wait;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(now) = claim::find(client, id).await? {
                if now.is_finished() {
                    let unfinished = claim::unfinished(client, id).await?;
                    return Ok(ImportReport::from_record(now, unfinished.report));
                }
            }
        }
        Err(Error::ImportBusy(id))
    }

    /// Downloads, reads and plans one file, loading it as it is read when `mode` writes. Runs
    /// in the caller's transaction.
    async fn process(
        &self,
        client: &tokio_postgres::Client,
        (bucket, key, version_id, kind, format): (
            &str,
            &str,
            Option<&str>,
            Kind,
            spreadsheet::Format,
        ),
        mode: Mode,
        options: ImportOptions,
    ) -> Result<Processed, Halt> {
        let settings = self.settings;
        let download_started = Instant::now();
        let bytes = match self
            .storage
            .get(bucket, key, version_id, settings.limits.max_bytes)
            .await
        {
            Ok(fetched) => fetched.bytes,
            Err(error @ (StorageError::TooLarge { .. } | StorageError::NotFound { .. })) => {
                return Err(Halt::Refused(error.to_string()))
            }
            Err(error) => return Err(Halt::Failed(Error::Storage(error))),
        };
        let download_ms = ms(download_started);
        let started = Instant::now();
        let secret = self.jwt_secret;
        let mut loader =
            Loader::start(client, kind, mode, secret, settings.password, options).await?;
        if let Some(reason) = loader.upload_event_error() {
            return Err(Halt::Refused(reason));
        }
        let deadline = tokio::time::Instant::now() + settings.time_limit;
        // The reader hands rows over a chunk at a time and the loader plans (and writes) each
        // while the next is read, so the file's parse and its load overlap on two cores.
        let (sender, mut chunks) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let limits: Limits = settings.limits.clone();
        let today = chrono::Utc::now().date_naive();
        let mut signer = loader.signer()?;
        let mut reading = tokio::task::spawn_blocking(move || {
            let parsed = spreadsheet::stream_records(
                &bytes,
                format,
                kind,
                &limits,
                today,
                spreadsheet::Chunking {
                    rows: CHUNK_ROWS,
                    at_most: MAX_CHUNKS,
                },
                &mut |records| {
                    let chunk = match &mut signer {
                        Some(signer) => signer.sign(records),
                        None => Chunk::unsigned(records),
                    };
                    match sender.blocking_send(chunk) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(_) => ControlFlow::Break(()),
                    }
                },
            );
            (parsed, ms(started), bytes)
        });
        let time_limit = settings.time_limit;
        while let Some(chunk) = within(deadline, time_limit, chunks.recv()).await? {
            loader.load(chunk).await?;
        }
        let (parsed, parse_ms, bytes) =
            within(deadline, time_limit, &mut reading)
                .await?
                .map_err(|_| {
                    Halt::Refused(
                        "the file could not be read: the reader stopped unexpectedly".into(),
                    )
                })?;
        let mut parsed = parsed.map_err(|error| Halt::Refused(error.to_string()))?;
        let rest = std::mem::replace(&mut parsed.records, Records::new(kind));
        loader.load(Chunk::unsigned(rest)).await?;
        Ok(Processed {
            parsed,
            loaded: loader.finish(),
            download_ms,
            parse_ms,
            bytes,
            format,
            kind,
        })
    }

    /// Imports the file in the open transaction that holds the claim. A refused file rolls back
    /// what it loaded (to the savepoint) and is recorded as failed in the same transaction.
    /// Answers the report and the ids of the rows whose QR images are to be cached.
    async fn run(
        &self,
        client: &tokio_postgres::Client,
        target: &ImportTarget,
        held: &Held,
    ) -> Result<(ImportReport, Vec<Uuid>), Halt> {
        let options = held.record.options();
        let mut report = ImportReport::new(held.record.id, target, options);
        tracing::info!(import_id = %report.import_id, key = %target.key, kind = %target.kind, attempt = held.attempt, "importing");
        // A run that stops answering (a frozen container) must not hold the claim for ever.
        let idle = self.settings.time_limit + Duration::from_secs(60);
        client
            .batch_execute(&format!(
                "SET LOCAL idle_in_transaction_session_timeout = '{}s'; SAVEPOINT load",
                idle.as_secs()
            ))
            .await
            .map_err(|e| Error::postgres("starting the import", e))?;
        let started = Instant::now();
        let processed = Box::pin(self.process(
            client,
            (
                &target.bucket,
                &target.key,
                target.version_id.as_deref(),
                target.kind,
                target.format,
            ),
            Mode::Write,
            options,
        ))
        .await;
        let (counts, status, error, touched) = match processed {
            Ok(mut processed) => {
                report.timings.download_ms = processed.download_ms;
                report.timings.parse_ms = processed.parse_ms;
                report.timings.load_ms = ms(started) - processed.download_ms - processed.parse_ms;
                let (counts, status, error) = tally(&processed.parsed, &processed.loaded);
                let rejected = all_rejected(&mut processed, &self.settings.limits).await;
                let Processed {
                    mut parsed,
                    mut loaded,
                    ..
                } = processed;
                report.sheet = parsed.sheet.take();
                report.header_row = Some(parsed.header_row);
                report.ignored_columns = std::mem::take(&mut parsed.ignored_columns);
                report.changes = std::mem::take(&mut loaded.changes);
                report.rejected = rejected.iter().map(RejectedRow::from).collect();
                report.rejected_file = RejectedFile::new(
                    std::mem::take(&mut parsed.header_cells),
                    &rejected,
                    &parsed.rejected_originals,
                );
                (counts, status, error, std::mem::take(&mut loaded.touched))
            }
            Err(Halt::Refused(reason)) => {
                tracing::warn!(import_id = %report.import_id, reason = %reason, "file refused");
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT load")
                    .await
                    .map_err(|e| Error::postgres("undoing a refused file", e))?;
                (
                    Counts::default(),
                    ImportStatus::Failed,
                    Some(reason),
                    Vec::new(),
                )
            }
            Err(failed) => return Err(failed),
        };
        report.counts = counts;
        report.status = status;
        report.error = error;
        let listed: Vec<&RejectedRow> = report.rejected.iter().take(REJECTED_LISTED).collect();
        let reasons = match &report.error {
            Some(error) if listed.is_empty() => serde_json::json!([{ "error": error }]),
            _ => serde_json::to_value(&listed).unwrap_or_default(),
        };
        let stored = serde_json::to_value(&report).map_err(|e| Error::Report(e.to_string()))?;
        claim::finish(
            client,
            held,
            &Outcome {
                status,
                counts: &report.counts,
                reasons: &reasons,
                report: &stored,
                qr_pending: &touched,
            },
        )
        .await?;
        Ok((report, touched))
    }

    /// `reports/{id}.json` and, when rows were refused, `reports/{id}-rejected.{xlsx|csv}`, in
    /// the upload's own kind of file.
    async fn write_report(
        &self,
        client: &tokio_postgres::Client,
        report: &mut ImportReport,
    ) -> Result<(), Error> {
        let key = format!("reports/{}.json", report.import_id);
        report.report_key = Some(key.clone());
        let rejected_key = if report.rejected_file.rows.is_empty() {
            None
        } else {
            let csv =
                spreadsheet::Format::from_file_name(&report.key) == Some(spreadsheet::Format::Csv);
            let (bytes, extension, content_type) = if csv {
                let bytes = report
                    .rejected_file
                    .to_csv()
                    .map_err(|e| Error::Report(format!("the rejected rows: {e}")))?;
                (bytes, "csv", "text/csv; charset=utf-8")
            } else {
                let bytes = report
                    .rejected_file
                    .to_xlsx()
                    .map_err(|e| Error::Report(format!("the rejected rows: {e}")))?;
                (
                    bytes,
                    "xlsx",
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                )
            };
            let rejected_key = format!("reports/{}-rejected.{extension}", report.import_id);
            self.storage
                .put(&report.bucket, &rejected_key, bytes, content_type)
                .await?;
            Some(rejected_key)
        };
        report.rejected_key = rejected_key.clone();
        let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Report(e.to_string()))?;
        self.storage
            .put(&report.bucket, &key, json, "application/json")
            .await?;
        claim::reports_written(client, report.import_id, &key, rejected_key.as_deref()).await
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
            // The import gave every row it wrote a token; minting is the warmer's business.
            let request = WarmRequest {
                kinds: vec![kind],
                force: false,
                mint: false,
                filter: RowFilter {
                    ids: ids.to_vec(),
                    shard: None,
                },
            };
            match warm::warm(self.db, self.cache, self.qr, None, &request, &()).await {
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
        let mut report = ImportReport::new(Uuid::nil(), &target, ImportOptions::default());
        report.status = ImportStatus::PartiallySucceeded;
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
