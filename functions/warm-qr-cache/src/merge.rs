//! The merge step of a sharded warm. The state machine in `template.yaml`
//! (`WarmShardsStateMachine`) runs one static warm per shard at once, then hands every shard's
//! outcome to this job (`{"mode": "merge", ...}`), which adds them up into the whole run's
//! summary, logs it as a person reads it, and emits the whole run's metrics once: the shards
//! emit only their own (`WarmSummary::metrics`), so the alarms see each run once.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::error::Error;
use shared::telemetry::{Function, Metric, Metrics};
use shared::warm::{KindSummary, OutageRenewal, StageTimings, WarmSummary, FAILURES_LISTED};

/// `{"mode": "merge", "started_at": "...", "shards": [...]}`, as the state machine sends it:
/// one outcome per shard, every shard of the split exactly once.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeRequest {
    /// When the whole run began (the execution's start): the run's duration is the wall time
    /// from then, the time the slow-warm alarm is about.
    pub started_at: DateTime<Utc>,
    pub shards: Vec<ShardOutcome>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergePayload {
    started_at: DateTime<Utc>,
    shards: Vec<ShardOutcome>,
}

/// What one shard's invocation came to: its summary, or the error Step Functions caught (after
/// its retries) beside the shard's own input.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ShardOutcome {
    Warmed {
        summary: WarmSummary,
    },
    Failed {
        shard: u32,
        shards: u32,
        failure: StepFailure,
    },
}

impl ShardOutcome {
    /// (index, count) of the shard this outcome is of.
    fn position(&self) -> Result<(u32, u32), Error> {
        match self {
            ShardOutcome::Warmed { summary } => summary
                .shard
                .map(|shard| (shard.index() as u32, shard.count() as u32))
                .ok_or_else(|| {
                    Error::InvalidRequest(
                        "a summary in `shards` is not a shard's (it has no `shard`)".into(),
                    )
                }),
            ShardOutcome::Failed { shard, shards, .. } => Ok((*shard, *shards)),
        }
    }
}

/// A task's error as Step Functions reports it: the function's `errorType`, and a cause that,
/// for a function error, is the JSON of its `errorMessage` and `errorType`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StepFailure {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

impl StepFailure {
    /// The function's own message when the cause carries one, else the cause as it is.
    fn message(&self) -> String {
        serde_json::from_str::<Value>(&self.cause)
            .ok()
            .and_then(|cause| {
                cause
                    .get("errorMessage")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| self.cause.clone())
    }
}

impl MergeRequest {
    pub fn from_payload(payload: Value) -> Result<Self, Error> {
        let payload: MergePayload = serde_json::from_value(payload)
            .map_err(|error| Error::InvalidRequest(format!("merge payload: {error}")))?;
        let count = payload.shards.len();
        if count == 0 {
            return Err(Error::InvalidRequest(
                "`shards` is empty: the merge needs the outcome of every shard".into(),
            ));
        }
        // Every shard of one split, each once: a missing shard would be rows nobody warmed.
        let mut seen = vec![false; count];
        for outcome in &payload.shards {
            let (index, of) = outcome.position()?;
            if of as usize != count {
                return Err(Error::InvalidRequest(format!(
                    "shard {index} is one of {of}, but `shards` holds {count} outcomes"
                )));
            }
            match seen.get_mut(index as usize) {
                None => {
                    return Err(Error::InvalidRequest(format!(
                        "shard {index} of {of} does not exist"
                    )))
                }
                Some(true) => {
                    return Err(Error::InvalidRequest(format!(
                        "shard {index} appears twice in `shards`"
                    )))
                }
                Some(slot) => *slot = true,
            }
        }
        Ok(MergeRequest {
            started_at: payload.started_at,
            shards: payload.shards,
        })
    }
}

/// A shard that did not finish, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailedShard {
    pub shard: u32,
    pub error: String,
    pub message: String,
}

/// The whole run: the shards' summaries added up, `duration_ms` the run's wall time.
#[derive(Debug, Clone, Serialize)]
pub struct MergedSummary {
    pub shards: u32,
    pub failed_shards: Vec<FailedShard>,
    pub slowest_shard_ms: f64,
    #[serde(flatten)]
    pub run: WarmSummary,
}

/// Adds the shards up; `now` ends the run.
pub fn merge(request: &MergeRequest, now: DateTime<Utc>) -> MergedSummary {
    let mut run = WarmSummary {
        kinds: Vec::new(),
        force: false,
        shard: None,
        duration_ms: 0.0,
        peak_memory_mib: None,
        qrs_per_second: 0.0,
        stages: StageTimings::default(),
        outage_renewal: None,
    };
    let mut failed_shards = Vec::new();
    let mut slowest_shard_ms: f64 = 0.0;
    for outcome in &request.shards {
        match outcome {
            ShardOutcome::Warmed { summary } => {
                add_shard(&mut run, summary);
                slowest_shard_ms = slowest_shard_ms.max(summary.duration_ms);
            }
            ShardOutcome::Failed { shard, failure, .. } => failed_shards.push(FailedShard {
                shard: *shard,
                error: failure.error.clone(),
                message: failure.message(),
            }),
        }
    }
    failed_shards.sort_by_key(|failed| failed.shard);
    let wall_ms = (now - request.started_at).num_milliseconds() as f64;
    // A clock that disagrees with the shards' cannot make the run shorter than its slowest shard.
    run.duration_ms = wall_ms.max(slowest_shard_ms);
    run.qrs_per_second = run.cached() as f64 / (run.duration_ms / 1000.0).max(1e-9);
    MergedSummary {
        shards: request.shards.len() as u32,
        failed_shards,
        slowest_shard_ms,
        run,
    }
}

fn add_shard(run: &mut WarmSummary, shard: &WarmSummary) {
    run.force |= shard.force;
    for kind in &shard.kinds {
        let index = match run.kinds.iter().position(|k| k.kind == kind.kind) {
            Some(index) => index,
            None => {
                run.kinds.push(KindSummary::new(kind.kind));
                run.kinds.len() - 1
            }
        };
        let total = &mut run.kinds[index];
        total.total += kind.total;
        total.cached += kind.cached;
        total.minted += kind.minted;
        total.rendered += kind.rendered;
        total.renewed += kind.renewed;
        total.failed += kind.failed;
        let room = FAILURES_LISTED.saturating_sub(total.failures.len());
        total
            .failures
            .extend(kind.failures.iter().take(room).cloned());
    }
    run.peak_memory_mib = match (run.peak_memory_mib, shard.peak_memory_mib) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let stages = &mut run.stages;
    stages.query_ms += shard.stages.query_ms;
    stages.matrix_ms += shard.stages.matrix_ms;
    stages.png_ms += shard.stages.png_ms;
    stages.base64_ms += shard.stages.base64_ms;
    stages.redis_ms += shard.stages.redis_ms;
    if let Some(outage) = shard.outage_renewal {
        let renewed = run.outage_renewal.map_or(0, |o| o.renewed) + outage.renewed;
        run.outage_renewal = Some(OutageRenewal { renewed });
    }
}

impl MergedSummary {
    /// Why the run failed, if it did: a shard failed, or images were left uncached.
    pub fn error(&self) -> Option<Error> {
        if !self.failed_shards.is_empty() {
            return Some(Error::ShardsFailed {
                failed: self.failed_shards.len() as u32,
                shards: self.shards,
            });
        }
        (self.run.failed() > 0).then(|| Error::Uncached(self.run.failed()))
    }

    /// The whole run's metrics, the ones the warm's alarms read, plus `ShardsFailed`.
    pub fn metrics(&self) -> Metrics {
        let failed = self.error().is_some() || self.run.outage_renewal.is_some();
        self.run
            .run_metrics(Function::WarmQrCache, failed)
            .count(Metric::ShardsFailed, self.failed_shards.len() as u64)
    }
}

/// The shards' line, then the run's summary as a single warm prints it.
impl fmt::Display for MergedSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Shards: {}/{} warmed ({} failed), the slowest in {:.2}s",
            self.shards as usize - self.failed_shards.len(),
            self.shards,
            self.failed_shards.len(),
            self.slowest_shard_ms / 1000.0
        )?;
        for failed in &self.failed_shards {
            writeln!(
                f,
                "  shard {} failed ({}): {}",
                failed.shard, failed.error, failed.message
            )?;
        }
        self.run.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::kind::Kind;

    use super::*;

    fn shard_summary(index: u32, count: u32, students: u64, ms: f64) -> Value {
        json!({
            "kinds": [{"kind": "students", "total": students, "cached": students, "minted": 1,
                       "rendered": students - 2, "renewed": 2, "failed": 0, "failures": []},
                      {"kind": "stalls", "total": 3, "cached": 3, "minted": 0,
                       "rendered": 3, "renewed": 0, "failed": 0, "failures": []}],
            "force": false, "shard": {"index": index, "count": count}, "duration_ms": ms,
            "peak_memory_mib": 30.0 + f64::from(index), "qrs_per_second": 1000.0,
            "stages": {"query_ms": 1.0, "matrix_ms": 2.0, "png_ms": 3.0, "base64_ms": 4.0, "redis_ms": 5.0},
            "outage_renewal": null
        })
    }

    fn started() -> DateTime<Utc> {
        "2026-11-26T00:30:00Z".parse().unwrap()
    }

    #[test]
    fn the_shards_add_up_to_the_run() {
        let payload = json!({
            "started_at": "2026-11-26T00:30:00Z",
            "shards": [{"summary": shard_summary(1, 2, 40, 9000.0)},
                       {"summary": shard_summary(0, 2, 50, 7000.0)}]
        });
        let request = MergeRequest::from_payload(payload).unwrap();
        let merged = merge(&request, started() + chrono::Duration::seconds(12));
        let students = &merged.run.kinds[0];
        assert_eq!(students.kind, Kind::Students);
        assert_eq!(
            (
                students.total,
                students.rendered,
                students.renewed,
                students.minted
            ),
            (90, 86, 4, 2)
        );
        assert_eq!(merged.run.kinds[1].cached, 6);
        assert_eq!(merged.run.cached(), 96);
        assert_eq!(merged.run.shard, None);
        // The run's duration is its wall time, not a sum or the slowest shard.
        assert_eq!(merged.run.duration_ms, 12_000.0);
        assert_eq!(merged.slowest_shard_ms, 9000.0);
        assert_eq!(merged.run.qrs_per_second, 8.0);
        assert_eq!(merged.run.peak_memory_mib, Some(31.0));
        assert_eq!(merged.run.stages.redis_ms, 10.0);
        assert!(merged.error().is_none());
        let text = merged.to_string();
        assert!(
            text.starts_with("Shards: 2/2 warmed (0 failed), the slowest in 9.00s\n"),
            "{text}"
        );
        assert!(
            text.contains("Students: 90/90 cached (0 failed): 86 rendered, 4 renewed, 2 minted"),
            "{text}"
        );
        assert!(text.ends_with("Total Duration: 12.00s"), "{text}");
    }

    #[test]
    fn the_run_metrics_come_once_and_a_failed_shard_fails_the_run() {
        let cause = json!({"errorType": "PostgresOutage",
                           "errorMessage": "QR cache warming failed: Postgres: connecting: refused"});
        let payload = json!({
            "started_at": "2026-11-26T00:30:00Z",
            "shards": [{"summary": shard_summary(0, 2, 50, 7000.0)},
                       {"shard": 1, "shards": 2,
                        "failure": {"Error": "PostgresOutage", "Cause": cause.to_string()}}]
        });
        let request = MergeRequest::from_payload(payload).unwrap();
        let merged = merge(&request, started() + chrono::Duration::seconds(70));
        let error = merged.error().unwrap();
        assert_eq!(error.kind(), "WarmShardsFailed");
        assert_eq!(error.to_string(), "1 of 2 warm shards failed");
        let text = merged.to_string();
        assert!(text.contains("Shards: 1/2 warmed (1 failed)"), "{text}");
        assert!(
            text.contains(
                "shard 1 failed (PostgresOutage): QR cache warming failed: Postgres: connecting: refused"
            ),
            "{text}"
        );

        let line: Value = serde_json::from_str(&merged.metrics().to_emf(0)).unwrap();
        assert_eq!(line["WarmFailed"], 1.0);
        assert_eq!(line["ShardsFailed"], 1.0);
        assert_eq!(line["WarmDuration"], 70_000.0);
        assert_eq!(line["QrCached"], 53.0);
        // A shard's instance memory is the shard's own metric, not the run's.
        assert!(line.get("PeakMemory").is_none(), "{line}");
    }

    #[test]
    fn a_shard_reports_only_its_own_metrics() {
        let summary: WarmSummary = serde_json::from_value(shard_summary(0, 2, 50, 7000.0)).unwrap();
        let line: Value =
            serde_json::from_str(&summary.metrics(Function::WarmQrCache).to_emf(0)).unwrap();
        assert_eq!(line["ShardDuration"], 7000.0);
        assert_eq!(line["PeakMemory"], 30.0);
        for whole_run in ["WarmDuration", "QrFailed", "QrCached", "WarmFailed"] {
            assert!(line.get(whole_run).is_none(), "{whole_run} in {line}");
        }
    }

    #[test]
    fn every_shard_once_or_the_merge_is_refused() {
        let failure = json!({"Error": "States.Timeout", "Cause": ""});
        for (shards, expected) in [
            (json!([]), "`shards` is empty"),
            (
                json!([{"summary": shard_summary(0, 3, 5, 1.0)}, {"summary": shard_summary(1, 3, 5, 1.0)}]),
                "shard 0 is one of 3, but `shards` holds 2 outcomes",
            ),
            (
                json!([{"summary": shard_summary(1, 2, 5, 1.0)}, {"shard": 1, "shards": 2, "failure": failure}]),
                "shard 1 appears twice",
            ),
            (
                json!([{"shard": 0, "shards": 1, "failure": failure}, {"shard": 5, "shards": 2, "failure": failure}]),
                "shard 0 is one of 1",
            ),
            (
                json!([{"shard": 2, "shards": 2, "failure": failure}, {"shard": 5, "shards": 2, "failure": failure}]),
                "shard 2 of 2 does not exist",
            ),
            (
                json!([{"summary": {"index": 0}}]),
                "did not match any variant",
            ),
        ] {
            let payload = json!({"started_at": "2026-11-26T00:30:00Z", "shards": shards});
            let error = MergeRequest::from_payload(payload).unwrap_err().to_string();
            assert!(error.contains(expected), "{shards}: {error}");
        }
        let error = MergeRequest::from_payload(json!({"shards": []}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing field `started_at`"), "{error}");
    }
}
