//! The Lambda handler of warm-qr-cache: an event in, a summary out. One function runs four
//! jobs, chosen by the payload's `mode`: the daily static warm (the default, whole or one
//! shard), the merge of a sharded warm's shards, the rotating pre-warm scheduled every minute
//! of event hours, and the hit-rate sampler.

pub mod merge;
pub mod rotating;
pub mod sampler;

use lambda_runtime::{Diagnostic, LambdaEvent};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;
use shared::cache::Cache;
use shared::config::Config;
use shared::db::Database;
use shared::error::Error;
use shared::token::RotatingSigner;
use shared::warm::{self, WarmRequest, WarmSummary};

use crate::merge::{MergeRequest, MergedSummary};
use crate::rotating::{RotatingRequest, RotatingSummary};
use crate::sampler::HitRateSample;

/// Clients made once at cold start and reused by every invocation.
pub struct Clients {
    pub config: Config,
    pub db: Database,
    pub cache: Cache,
    /// Mints tokens for rows that have none.
    pub jwt_secret: SecretString,
    /// Signs rotating tokens.
    pub signer: RotatingSigner,
}

/// What an invocation asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// `{}` or `{"mode": "static", ...}`: the static warm.
    Static(WarmRequest),
    /// `{"mode": "merge", "started_at": ..., "shards": [...]}`: a sharded warm's shards added up.
    Merge(MergeRequest),
    /// `{"mode": "rotating", ...}`: the rotating pre-warm.
    Rotating(RotatingRequest),
    /// `{"mode": "sample_hit_rate"}`: one hit-rate sample.
    SampleHitRate,
}

impl Job {
    pub fn from_event(event: &Value) -> Result<Job, Error> {
        let mut payload = warm::payload_of(event)?;
        let mode = match payload
            .as_object_mut()
            .and_then(|fields| fields.remove("mode"))
        {
            None => "static".to_owned(),
            Some(Value::String(mode)) => mode,
            Some(other) => {
                return Err(Error::InvalidRequest(format!(
                "`mode` must be a string (static, merge, rotating or sample_hit_rate), got {other}"
            )))
            }
        };
        match mode.as_str() {
            "static" => Ok(Job::Static(WarmRequest::from_payload(payload)?)),
            "merge" => Ok(Job::Merge(MergeRequest::from_payload(payload)?)),
            "rotating" => Ok(Job::Rotating(RotatingRequest::from_payload(payload)?)),
            "sample_hit_rate" => match payload.as_object() {
                Some(fields) if fields.is_empty() => Ok(Job::SampleHitRate),
                _ => Err(Error::InvalidRequest(
                    "the hit-rate sampler takes no options: send {\"mode\": \"sample_hit_rate\"}"
                        .into(),
                )),
            },
            other => Err(Error::InvalidRequest(format!(
                "`{other}` is not a mode: use static, merge, rotating or sample_hit_rate"
            ))),
        }
    }
}

/// An invocation's result, as the summary of its job.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Static(WarmSummary),
    Merged(MergedSummary),
    Rotating(RotatingSummary),
    HitRate(HitRateSample),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Static(summary) => summary.fmt(f),
            Outcome::Merged(summary) => summary.fmt(f),
            Outcome::Rotating(summary) => summary.fmt(f),
            Outcome::HitRate(sample) => sample.fmt(f),
        }
    }
}

/// A failed job: its summary when it got as far as one, and why it failed.
#[derive(Debug)]
pub struct JobFailed {
    pub summary: Option<Outcome>,
    pub error: Error,
}

impl std::fmt::Display for JobFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.summary {
            Some(summary @ (Outcome::Static(_) | Outcome::Merged(_))) => write!(
                f,
                "QR cache warming failed: {}; {}",
                self.error,
                summary.to_string().replace('\n', "; ")
            ),
            _ => write!(f, "{}", self.error),
        }
    }
}

/// Runs one job and reports it: the summary logged, the metrics emitted. The Lambda and the
/// plain command both end here.
pub async fn run(
    job: &Job,
    clients: &Clients,
    progress: &dyn warm::Progress,
) -> Result<Outcome, JobFailed> {
    let Clients {
        config,
        db,
        cache,
        jwt_secret,
        signer,
    } = clients;
    match job {
        Job::Static(request) => {
            warm::warm_and_report(db, cache, &config.qr, Some(jwt_secret), request, progress)
                .await
                .map(Outcome::Static)
                .map_err(|failed| JobFailed {
                    summary: Some(Outcome::Static(failed.summary)),
                    error: failed.error,
                })
        }
        Job::Merge(request) => {
            let merged = merge::merge(request, chrono::Utc::now());
            merged.metrics().emit();
            let text = merged.to_string().replace('\n', "; ");
            match merged.error() {
                None => {
                    tracing::info!(
                        shards = merged.shards,
                        cached = merged.run.cached(),
                        duration_ms = merged.run.duration_ms,
                        "sharded QR cache warm merged: {text}"
                    );
                    Ok(Outcome::Merged(merged))
                }
                Some(error) => {
                    tracing::error!(
                        error = %error,
                        shards = merged.shards,
                        failed_shards = merged.failed_shards.len(),
                        cached = merged.run.cached(),
                        "sharded QR cache warm failed: {text}"
                    );
                    Err(JobFailed {
                        summary: Some(Outcome::Merged(merged)),
                        error,
                    })
                }
            }
        }
        Job::Rotating(request) => {
            let now = chrono::Utc::now().timestamp();
            let result = rotating::prepare(db, cache, signer, request, now).await;
            let failed = |error: Error| JobFailed {
                summary: None,
                error,
            };
            let summary = result.map_err(|error| {
                tracing::error!(error = %error, "rotating pre-warm failed");
                failed(error)
            })?;
            summary.metrics().emit();
            tracing::info!(
                students = summary.students,
                rendered = summary.rendered,
                already_cached = summary.already_cached,
                failed = summary.failed,
                "rotating QRs prepared: {}",
                summary.to_string().replace('\n', "; ")
            );
            if summary.failed > 0 {
                let error = Error::Uncached(summary.failed);
                return Err(JobFailed {
                    summary: Some(Outcome::Rotating(summary)),
                    error,
                });
            }
            Ok(Outcome::Rotating(summary))
        }
        Job::SampleHitRate => {
            let sample = sampler::sample(cache).await.map_err(|error| {
                tracing::error!(error = %error, "hit-rate sample failed");
                JobFailed {
                    summary: None,
                    error,
                }
            })?;
            sample.metrics().emit();
            tracing::info!("{sample}");
            Ok(Outcome::HitRate(sample))
        }
    }
}

/// A failure goes back to Lambda with an `errorType` naming what failed (`InvalidRequest`,
/// `PostgresOutage`, `QrImagesUncached`, ...), which a person can filter logs and alarms on,
/// and the message saying why.
pub async fn handle(event: LambdaEvent<Value>, clients: &Clients) -> Result<Outcome, Diagnostic> {
    let job = Job::from_event(&event.payload).map_err(|error| Diagnostic {
        error_type: error.kind().into(),
        error_message: error.to_string(),
    })?;
    run(&job, clients, &()).await.map_err(|failed| Diagnostic {
        error_type: failed.error.kind().into(),
        error_message: failed.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_mode_chooses_the_job() {
        assert_eq!(
            Job::from_event(&json!({})).unwrap(),
            Job::Static(WarmRequest::default())
        );
        assert!(matches!(
            Job::from_event(&json!({"mode": "static", "mint": false})).unwrap(),
            Job::Static(WarmRequest { mint: false, .. })
        ));
        assert!(matches!(
            Job::from_event(&json!({"mode": "rotating", "audience": "everyone"})).unwrap(),
            Job::Rotating(RotatingRequest {
                audience: rotating::Audience::Everyone,
                ..
            })
        ));
        assert_eq!(
            Job::from_event(&json!({"mode": "sample_hit_rate"})).unwrap(),
            Job::SampleHitRate
        );
        // An EventBridge rule's event carries the payload in `detail`.
        let scheduled = json!({"detail-type": "Scheduled Event", "source": "aws.events",
            "detail": {"mode": "rotating"}});
        assert!(matches!(
            Job::from_event(&scheduled).unwrap(),
            Job::Rotating(_)
        ));
    }

    #[test]
    fn unknown_modes_and_options_are_refused_by_name() {
        for (payload, expected) in [
            (json!({"mode": "hourly"}), "`hourly` is not a mode"),
            (json!({"mode": 3}), "`mode` must be a string"),
            (
                json!({"mode": "sample_hit_rate", "force": true}),
                "takes no options",
            ),
            (
                json!({"mode": "rotating", "force": true}),
                "unknown field `force`",
            ),
            (
                json!({"mode": "static", "audience": "everyone"}),
                "unknown field `audience`",
            ),
        ] {
            let error = Job::from_event(&payload).unwrap_err().to_string();
            assert!(error.contains(expected), "{payload}: {error}");
        }
    }
}
