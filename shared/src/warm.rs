//! The warm job: rows without a QR token get one in the app's format (unless asked not to),
//! then every row with a token gets its image in the cache, renewed if it is already
//! there, rendered (on every core) and stored if not. Rows stream from Postgres in batches; each
//! batch costs one Redis round trip to renew, and one more to store what was missing. Nothing is
//! deleted first, so a run that fails part-way leaves every earlier entry readable.

use std::fmt;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_postgres::Row;

use crate::cache::Cache;
use crate::db::{self, Database, RowFilter, Shard};
use crate::error::Error;
use crate::kind::Kind;
use crate::qr::{self, QrSettings, RenderTimings};
use crate::telemetry::{Function, Metric, Metrics};

/// Rows per Redis round trip and per parallel render.
const BATCH_ROWS: usize = 512;
/// Batches in flight at once: enough to keep Redis, Postgres and every core busy together.
const BATCHES_IN_FLIGHT: usize = 4;
/// Failures listed by id in the summary; the count covers the rest.
pub const FAILURES_LISTED: usize = 20;

/// What to warm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmRequest {
    pub kinds: Vec<Kind>,
    /// Re-render and replace every entry, cached or not (after a change of QR settings).
    pub force: bool,
    /// Mint tokens for rows that have none first (the app leaves them NULL until a first view).
    pub mint: bool,
    pub filter: RowFilter,
}

impl Default for WarmRequest {
    fn default() -> Self {
        WarmRequest {
            kinds: Kind::ALL.to_vec(),
            force: false,
            mint: true,
            filter: RowFilter::default(),
        }
    }
}

/// The on-demand payload: `{"kinds": ["students"], "force": true, "mint": false, "ids": [...],
/// "shard": 0, "shards": 4}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmPayload {
    kinds: Option<Vec<String>>,
    force: Option<bool>,
    mint: Option<bool>,
    ids: Option<Vec<String>>,
    shard: Option<u32>,
    shards: Option<u32>,
}

impl WarmRequest {
    /// Reads an invocation's event: an EventBridge scheduled event (its `detail` may carry a
    /// payload), EventBridge Scheduler's plain JSON input, or an on-demand payload. `null` and
    /// `{}` mean a full warm.
    pub fn from_event(event: &Value) -> Result<Self, Error> {
        Self::from_payload(payload_of(event)?)
    }

    /// Reads the payload itself (see [`payload_of`]).
    pub fn from_payload(payload: Value) -> Result<Self, Error> {
        let payload: WarmPayload = serde_json::from_value(payload)
            .map_err(|error| Error::InvalidRequest(format!("warm payload: {error}")))?;

        let kinds = match payload.kinds {
            None => Kind::ALL.to_vec(),
            Some(names) if names.is_empty() => {
                return Err(Error::InvalidRequest(
                    "`kinds` is empty: name students, stalls or both".into(),
                ))
            }
            Some(names) => {
                let mut kinds = Vec::new();
                for name in names {
                    let kind: Kind = name.parse().map_err(Error::InvalidRequest)?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                kinds
            }
        };
        let ids = payload
            .ids
            .unwrap_or_default()
            .iter()
            .map(|id| {
                uuid::Uuid::parse_str(id.trim())
                    .map_err(|_| Error::InvalidRequest(format!("`{id}` in `ids` is not a UUID")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shard = match (payload.shard, payload.shards) {
            (None, None) => None,
            (Some(index), Some(count)) => {
                Some(Shard::new(index, count).map_err(Error::InvalidRequest)?)
            }
            _ => {
                return Err(Error::InvalidRequest(
                    "`shard` and `shards` go together, e.g. {\"shard\": 0, \"shards\": 4}".into(),
                ))
            }
        };
        Ok(WarmRequest {
            kinds,
            force: payload.force.unwrap_or(false),
            mint: payload.mint.unwrap_or(true),
            filter: RowFilter { ids, shard },
        })
    }
}

/// The payload an invocation carries: an EventBridge scheduled event's `detail`, or the event
/// itself (EventBridge Scheduler's input, an on-demand invocation); `null` is `{}`.
pub fn payload_of(event: &Value) -> Result<Value, Error> {
    match event {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(fields)
            if fields.contains_key("detail-type") && fields.contains_key("source") =>
        {
            Ok(match fields.get("detail") {
                None | Some(Value::Null) => Value::Object(Default::default()),
                Some(detail) => detail.clone(),
            })
        }
        Value::Object(_) => Ok(event.clone()),
        other => Err(Error::InvalidRequest(format!(
            "expected a JSON object such as {{\"kinds\": [\"students\"], \"force\": true}}, got {}",
            json_type(other)
        ))),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One row whose image could not be cached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    pub id: String,
    pub reason: String,
}

/// The outcome for one kind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KindSummary {
    pub kind: Kind,
    /// Rows with a token that the run reached.
    pub total: u64,
    /// Rendered plus renewed: entries now in the cache.
    pub cached: u64,
    /// Rows that had no token and got one from this run (and were then cached).
    pub minted: u64,
    pub rendered: u64,
    pub renewed: u64,
    pub failed: u64,
    pub failures: Vec<Failure>,
}

impl KindSummary {
    pub fn new(kind: Kind) -> Self {
        KindSummary {
            kind,
            total: 0,
            cached: 0,
            minted: 0,
            rendered: 0,
            renewed: 0,
            failed: 0,
            failures: Vec::new(),
        }
    }

    fn add(&mut self, batch: BatchOutcome) {
        self.total += batch.rows;
        self.rendered += batch.rendered;
        self.renewed += batch.renewed;
        self.cached += batch.rendered + batch.renewed;
        self.failed += batch.failures.len() as u64;
        let room = FAILURES_LISTED.saturating_sub(self.failures.len());
        self.failures.extend(batch.failures.into_iter().take(room));
    }
}

/// Where the time went, summed over every batch (stages overlap, so they add up to more than
/// the wall time).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct StageTimings {
    pub query_ms: f64,
    pub matrix_ms: f64,
    pub png_ms: f64,
    pub base64_ms: f64,
    pub redis_ms: f64,
}

/// What the cache got when Postgres could not be read.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct OutageRenewal {
    pub renewed: u64,
}

/// A run's summary; also what a shard hands the sharded warm's merge step, read back from JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WarmSummary {
    pub kinds: Vec<KindSummary>,
    pub force: bool,
    pub shard: Option<Shard>,
    pub duration_ms: f64,
    /// The process's peak resident memory so far (Linux), to size the Lambda's memory by.
    pub peak_memory_mib: Option<f64>,
    pub qrs_per_second: f64,
    pub stages: StageTimings,
    /// Set when Postgres was unreachable and the cached entries were kept alive instead.
    pub outage_renewal: Option<OutageRenewal>,
}

impl WarmSummary {
    pub fn failed(&self) -> u64 {
        self.kinds.iter().map(|k| k.failed).sum()
    }

    pub fn cached(&self) -> u64 {
        self.kinds.iter().map(|k| k.cached).sum()
    }

    pub fn rendered(&self) -> u64 {
        self.kinds.iter().map(|k| k.rendered).sum()
    }

    pub fn renewed(&self) -> u64 {
        self.kinds.iter().map(|k| k.renewed).sum()
    }

    pub fn minted(&self) -> u64 {
        self.kinds.iter().map(|k| k.minted).sum()
    }

    /// The run's figures as CloudWatch metrics. A shard's are its own (`ShardDuration`,
    /// `ShardQrsPerSecond`, its instance's `PeakMemory`): the figures the alarms read for the
    /// whole run (`QrFailed`, `WarmDuration`, ...) come once, from the merge step that adds
    /// the shards up, never once per shard as well.
    pub fn metrics(&self, function: Function) -> Metrics {
        if self.shard.is_some() {
            return Metrics::new(function)
                .milliseconds(Metric::ShardDuration, self.duration_ms)
                .per_second(Metric::ShardQrsPerSecond, self.qrs_per_second)
                .megabytes(Metric::PeakMemory, self.peak_memory_mib.unwrap_or(0.0));
        }
        self.run_metrics(function, self.outage_renewal.is_some() || self.failed() > 0)
            .megabytes(Metric::PeakMemory, self.peak_memory_mib.unwrap_or(0.0))
    }

    /// The figures of a whole run, the ones the warm's alarms read; `failed` says whether the
    /// run failed.
    pub fn run_metrics(&self, function: Function, failed: bool) -> Metrics {
        Metrics::new(function)
            .count(Metric::QrCached, self.cached())
            .count(Metric::QrRendered, self.rendered())
            .count(Metric::QrRenewed, self.renewed())
            .count(Metric::QrTokensMinted, self.minted())
            .count(Metric::QrFailed, self.failed())
            .count(Metric::WarmFailed, u64::from(failed))
            .milliseconds(Metric::WarmDuration, self.duration_ms)
            .per_second(Metric::QrsPerSecond, self.qrs_per_second)
    }
}

/// The summary a person reads at a glance, in the app's words.
impl fmt::Display for WarmSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for kind in &self.kinds {
            writeln!(
                f,
                "{}: {}/{} cached ({} failed): {} rendered, {} renewed, {} minted",
                kind.kind.title(),
                kind.cached,
                kind.total,
                kind.failed,
                kind.rendered,
                kind.renewed,
                kind.minted
            )?;
            for failure in &kind.failures {
                writeln!(
                    f,
                    "  failed {} {}: {}",
                    kind.kind, failure.id, failure.reason
                )?;
            }
        }
        if let Some(outage) = self.outage_renewal {
            writeln!(
                f,
                "Postgres unreachable: renewed the TTL of {} cached images",
                outage.renewed
            )?;
        }
        writeln!(f, "Speed: {:.0} QRs/second", self.qrs_per_second)?;
        if let Some(peak) = self.peak_memory_mib {
            writeln!(f, "Peak memory: {peak:.0} MiB")?;
        }
        write!(f, "Total Duration: {:.2}s", self.duration_ms / 1000.0)
    }
}

/// A run that did not cache everything: the summary of what it did, and why it failed.
#[derive(Debug, thiserror::Error)]
#[error("QR cache warming failed: {error}")]
pub struct WarmFailed {
    pub summary: WarmSummary,
    #[source]
    pub error: Error,
}

/// Told of the run's progress (a terminal's progress bar); `()` ignores it.
pub trait Progress: Send + Sync {
    fn start(&self, _kind: Kind, _total: u64) {}
    fn advance(&self, _rows: u64) {}
    fn finish(&self, _kind: Kind) {}
}

impl Progress for () {}

/// Warms the cache as `request` asks; rows without a token are minted first when the request
/// asks for it and `minter` (the `JWT_SECRET`) is given.
pub async fn warm(
    db: &Database,
    cache: &Cache,
    qr: &QrSettings,
    minter: Option<&SecretString>,
    request: &WarmRequest,
    progress: &dyn Progress,
) -> Result<WarmSummary, WarmFailed> {
    let started = Instant::now();
    let mut run = Run {
        summary: WarmSummary {
            kinds: Vec::new(),
            force: request.force,
            shard: request.filter.shard,
            duration_ms: 0.0,
            qrs_per_second: 0.0,
            stages: StageTimings::default(),
            outage_renewal: None,
            peak_memory_mib: None,
        },
        timings: RenderTimings::default(),
        query: Duration::ZERO,
        redis: Duration::ZERO,
    };
    let minter = minter.filter(|_| request.mint);
    let result = run
        .all_kinds(db, cache, qr, minter, request, progress)
        .await;
    let error = match result {
        Err(RunError::Postgres(error)) => {
            tracing::error!(error = %error, "Postgres unreachable; renewing cached images so they outlive the outage");
            match cache.renew_all().await {
                Ok(renewal) => {
                    run.summary.outage_renewal = Some(OutageRenewal {
                        renewed: renewal.renewed,
                    });
                    Some(error)
                }
                Err(cache_error) => Some(Error::Outage {
                    postgres: Box::new(error),
                    cache: Box::new(cache_error),
                }),
            }
        }
        Err(RunError::Other(error)) => Some(error),
        Ok(()) => None,
    };
    let elapsed = started.elapsed();
    let summary = run.finish(elapsed);
    let error = error.or_else(|| (summary.failed() > 0).then(|| Error::Uncached(summary.failed())));
    match error {
        Some(error) => Err(WarmFailed { summary, error }),
        None => Ok(summary),
    }
}

/// Warms, then tells: logs the summary (and the failure), and emits the run's metrics. The Lambda
/// and the plain command both end here.
pub async fn warm_and_report(
    db: &Database,
    cache: &Cache,
    qr: &QrSettings,
    minter: Option<&SecretString>,
    request: &WarmRequest,
    progress: &dyn Progress,
) -> Result<WarmSummary, WarmFailed> {
    let result = warm(db, cache, qr, minter, request, progress).await;
    let summary = match &result {
        Ok(summary) => summary,
        Err(failed) => &failed.summary,
    };
    summary.metrics(Function::WarmQrCache).emit();
    match &result {
        Ok(summary) => tracing::info!(
            cached = summary.cached(),
            minted = summary.minted(),
            rendered = summary.rendered(),
            renewed = summary.renewed(),
            duration_ms = summary.duration_ms,
            qrs_per_second = summary.qrs_per_second,
            "QR cache warmed: {}",
            summary.to_string().replace('\n', "; ")
        ),
        Err(failed) => tracing::error!(
            error = %failed.error,
            cached = failed.summary.cached(),
            failed = failed.summary.failed(),
            "QR cache warming failed: {}",
            failed.summary.to_string().replace('\n', "; ")
        ),
    }
    result
}

/// A failure to read Postgres is handled apart from the rest: the cache is renewed before failing.
enum RunError {
    Postgres(Error),
    Other(Error),
}

struct Run {
    summary: WarmSummary,
    timings: RenderTimings,
    query: Duration,
    redis: Duration,
}

impl Run {
    async fn all_kinds(
        &mut self,
        db: &Database,
        cache: &Cache,
        qr: &QrSettings,
        minter: Option<&SecretString>,
        request: &WarmRequest,
        progress: &dyn Progress,
    ) -> Result<(), RunError> {
        let client = db.client().await.map_err(RunError::Postgres)?;
        for &kind in &request.kinds {
            self.summary.kinds.push(KindSummary::new(kind));
            if let Some(secret) = minter {
                let minted = crate::mint::mint_missing(&client, secret, kind, &request.filter)
                    .await
                    .map_err(|error| match error {
                        Error::Postgres { .. } => RunError::Postgres(error),
                        other => RunError::Other(other),
                    })?;
                if minted > 0 {
                    tracing::info!(%kind, minted, "minted QR tokens for rows that had none");
                }
                self.current(kind).minted = minted;
            }
            let total = db::count_tokens(&client, kind, &request.filter)
                .await
                .map_err(RunError::Postgres)?;
            tracing::info!(%kind, total, force = request.force, "warming QR images");
            progress.start(kind, total);
            let result = self
                .one_kind(&client, kind, cache, qr, request, progress)
                .await;
            progress.finish(kind);
            result?;
        }
        Ok(())
    }

    async fn one_kind(
        &mut self,
        client: &tokio_postgres::Client,
        kind: Kind,
        cache: &Cache,
        qr: &QrSettings,
        request: &WarmRequest,
        progress: &dyn Progress,
    ) -> Result<(), RunError> {
        let rows = db::stream_tokens(client, kind, &request.filter)
            .await
            .map_err(RunError::Postgres)?;
        let mut batches = std::pin::pin!(rows.chunks(BATCH_ROWS));
        let mut in_flight = JoinSet::new();
        let mut reading = true;
        let mut failure = None;
        while reading || !in_flight.is_empty() {
            while reading && in_flight.len() < BATCHES_IN_FLIGHT {
                let waited = Instant::now();
                let next = batches.next().await;
                self.query += waited.elapsed();
                match next.map(|rows| {
                    rows.into_iter()
                        .map(token_row)
                        .collect::<Result<Vec<_>, _>>()
                }) {
                    None => reading = false,
                    Some(Err(error)) => {
                        reading = false;
                        failure = Some(RunError::Postgres(Error::postgres(
                            "reading QR tokens",
                            error,
                        )));
                    }
                    Some(Ok(rows)) => {
                        in_flight.spawn(warm_batch(rows, cache.clone(), *qr, request.force));
                    }
                }
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            match joined {
                Ok(Ok(batch)) => {
                    progress.advance(batch.rows);
                    self.timings += batch.timings;
                    self.redis += batch.redis;
                    self.current(kind).add(batch);
                }
                Ok(Err(error)) => {
                    // Stop reading; batches already sent finish, and what they stored stays.
                    reading = false;
                    failure.get_or_insert(RunError::Other(error));
                }
                Err(join_error) => {
                    reading = false;
                    tracing::error!(error = %join_error, "a warm batch stopped");
                    failure.get_or_insert(RunError::Other(Error::Stopped("a warm batch")));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn current(&mut self, kind: Kind) -> &mut KindSummary {
        let index = self
            .summary
            .kinds
            .iter()
            .position(|k| k.kind == kind)
            .unwrap_or(0);
        &mut self.summary.kinds[index]
    }

    fn finish(mut self, elapsed: Duration) -> WarmSummary {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        self.summary.duration_ms = ms(elapsed);
        self.summary.peak_memory_mib = crate::telemetry::peak_memory_mib();
        self.summary.qrs_per_second =
            self.summary.cached() as f64 / elapsed.as_secs_f64().max(1e-9);
        self.summary.stages = StageTimings {
            query_ms: ms(self.query),
            matrix_ms: ms(self.timings.matrix),
            png_ms: ms(self.timings.png),
            base64_ms: ms(self.timings.base64),
            redis_ms: ms(self.redis),
        };
        self.summary
    }
}

struct TokenRow {
    id: String,
    token: String,
}

fn token_row(row: Result<Row, tokio_postgres::Error>) -> Result<TokenRow, tokio_postgres::Error> {
    let row = row?;
    Ok(TokenRow {
        id: row.try_get(0)?,
        token: row.try_get(1)?,
    })
}

struct BatchOutcome {
    rows: u64,
    rendered: u64,
    renewed: u64,
    failures: Vec<Failure>,
    timings: RenderTimings,
    redis: Duration,
}

/// Renews what is cached, renders and stores the rest.
async fn warm_batch(
    rows: Vec<TokenRow>,
    cache: Cache,
    qr: QrSettings,
    force: bool,
) -> Result<BatchOutcome, Error> {
    let keys: Vec<String> = rows
        .iter()
        .map(|row| cache.settings().key(&row.token))
        .collect();
    let mut redis = Duration::ZERO;
    let cached = if force {
        vec![false; rows.len()]
    } else {
        let sent = Instant::now();
        let found = cache.renew(&keys).await?;
        redis += sent.elapsed();
        found
    };
    let renewed = cached.iter().filter(|found| **found).count() as u64;
    let missing: Vec<(String, String, String)> = rows
        .into_iter()
        .zip(keys)
        .zip(cached)
        .filter(|(_, found)| !found)
        .map(|((row, key), _)| (row.id, row.token, key))
        .collect();
    let rows_total = renewed + missing.len() as u64;
    let (entries, failures, timings) = render_all(missing, qr).await?;
    let rendered = entries.len() as u64;
    let sent = Instant::now();
    cache.store(&entries).await?;
    redis += sent.elapsed();
    Ok(BatchOutcome {
        rows: rows_total,
        rendered,
        renewed,
        failures,
        timings,
        redis,
    })
}

type Rendered = (Vec<(String, String)>, Vec<Failure>, RenderTimings);

/// Renders on rayon's pool (one thread per core), off the async runtime.
async fn render_all(
    missing: Vec<(String, String, String)>,
    qr: QrSettings,
) -> Result<Rendered, Error> {
    if missing.is_empty() {
        return Ok((Vec::new(), Vec::new(), RenderTimings::default()));
    }
    let (done, result) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        use rayon::prelude::*;
        let results: Vec<_> = missing
            .into_par_iter()
            .map(|(id, token, key)| (id, key, qr::render_data_url(&token, &qr)))
            .collect();
        let mut entries = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        let mut timings = RenderTimings::default();
        for (id, key, result) in results {
            match result {
                Ok((url, spent)) => {
                    timings += spent;
                    entries.push((key, url));
                }
                Err(error) => {
                    tracing::warn!(%id, error = %error, "QR image not rendered");
                    failures.push(Failure {
                        id,
                        reason: error.to_string(),
                    });
                }
            }
        }
        let _ = done.send((entries, failures, timings));
    });
    result.await.map_err(|_| Error::Stopped("a render worker"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scheduled_events_and_empty_inputs_warm_everything() {
        let scheduled = json!({
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-26T06:00:00Z",
            "region": "ap-south-1", "resources": ["arn:aws:events:ap-south-1:123456789012:rule/warm"], "detail": {}
        });
        for event in [scheduled, json!({}), Value::Null] {
            assert_eq!(
                WarmRequest::from_event(&event).unwrap(),
                WarmRequest::default(),
                "{event}"
            );
        }
    }

    #[test]
    fn on_demand_payloads_choose_kinds_force_ids_and_shards() {
        let id = "0b6f4f44-8a0e-4c59-9a3a-1b2c3d4e5f60";
        let request = WarmRequest::from_event(&json!({
            "kinds": ["students"], "force": true, "ids": [id], "shard": 1, "shards": 4
        }))
        .unwrap();
        assert_eq!(request.kinds, vec![Kind::Students]);
        assert!(request.force);
        assert_eq!(request.filter.ids, vec![uuid::Uuid::parse_str(id).unwrap()]);
        assert_eq!(request.filter.shard, Some(Shard::new(1, 4).unwrap()));
    }

    #[test]
    fn malformed_payloads_say_what_is_wrong() {
        for (payload, expected) in [
            (json!({"kinds": ["teachers"]}), "`teachers` is not a kind"),
            (json!({"kinds": []}), "`kinds` is empty"),
            (json!({"kind": "students"}), "unknown field `kind`"),
            (json!({"force": "yes"}), "invalid type"),
            (json!({"ids": ["42"]}), "`42` in `ids` is not a UUID"),
            (json!({"shard": 1}), "`shard` and `shards` go together"),
            (
                json!({"shard": 4, "shards": 4}),
                "shard 4 of 4 does not exist",
            ),
            (json!([1, 2]), "got an array"),
            (json!("students"), "got a string"),
        ] {
            let error = WarmRequest::from_event(&payload).unwrap_err().to_string();
            assert!(error.contains(expected), "{payload}: {error}");
        }
    }

    #[test]
    fn summary_reads_like_the_apps() {
        let summary = WarmSummary {
            kinds: vec![
                KindSummary {
                    kind: Kind::Students,
                    total: 50,
                    cached: 50,
                    minted: 3,
                    rendered: 40,
                    renewed: 10,
                    failed: 0,
                    failures: vec![],
                },
                KindSummary {
                    kind: Kind::Stalls,
                    total: 6,
                    cached: 5,
                    minted: 0,
                    rendered: 5,
                    renewed: 0,
                    failed: 1,
                    failures: vec![Failure {
                        id: "s-1".into(),
                        reason: "the token is empty".into(),
                    }],
                },
            ],
            force: false,
            shard: None,
            duration_ms: 3450.0,
            peak_memory_mib: Some(41.6),
            qrs_per_second: 15.9,
            stages: StageTimings::default(),
            outage_renewal: None,
        };
        let text = summary.to_string();
        assert!(
            text.contains("Students: 50/50 cached (0 failed): 40 rendered, 10 renewed, 3 minted"),
            "{text}"
        );
        assert!(text.contains("Stalls: 5/6 cached (1 failed)"), "{text}");
        assert!(
            text.contains("failed stalls s-1: the token is empty"),
            "{text}"
        );
        assert!(text.contains("Speed: 16 QRs/second"), "{text}");
        assert!(text.contains("Peak memory: 42 MiB"), "{text}");
        assert!(text.ends_with("Total Duration: 3.45s"), "{text}");
    }
}
