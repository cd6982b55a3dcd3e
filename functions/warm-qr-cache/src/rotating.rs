//! The rotating pre-warm: for each student who may open their QR today, the images of the
//! current window and the next ones, in the app's own key and format, written before their
//! windows start, so the app's student screen (`GET /api/student/qr-code`) finds them cached.
//! Scheduled every minute during event hours, it prepares two windows ahead by default: each
//! run covers the minute until the next.

use std::fmt;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use shared::cache::Cache;
use shared::db::Database;
use shared::error::Error;
use shared::rotating;
use shared::telemetry::{Function, Metric, Metrics};
use shared::token::{self, RotatingSigner};
use shared::warm::Failure;

/// Students per EXISTS round trip.
const CHUNK: usize = 1024;
/// Stores in flight while the next parts render.
const STORES_IN_FLIGHT: usize = 4;
/// Images one render thread draws before handing them to Redis.
const RENDER_PART: usize = 256;
/// Failures listed by registration number; the count covers the rest.
const FAILURES_LISTED: usize = 20;
/// Windows after the current one a run may prepare: ten is five minutes of images in Redis.
const MAX_WINDOWS_AHEAD: u32 = 10;

/// Whose rotating QRs to prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Students registered (and, for a paid event, paid) for an approved or active event that
    /// runs today: the ones volunteers will scan.
    RegisteredToday,
    /// Every student.
    Everyone,
}

/// The rotating pre-warm's payload: `{"mode": "rotating", "audience": "everyone",
/// "windows_ahead": 2, "time_zone": "Asia/Kolkata"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatingRequest {
    pub audience: Audience,
    /// Windows after the current one to prepare.
    pub windows_ahead: u32,
    /// The zone whose calendar day "today" is, for the events' dates.
    pub time_zone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotatingPayload {
    audience: Option<Audience>,
    windows_ahead: Option<u32>,
    time_zone: Option<String>,
}

impl RotatingRequest {
    pub fn from_payload(payload: Value) -> Result<Self, Error> {
        let payload: RotatingPayload = serde_json::from_value(payload)
            .map_err(|error| Error::InvalidRequest(format!("rotating payload: {error}")))?;
        let windows_ahead = payload.windows_ahead.unwrap_or(2);
        if windows_ahead > MAX_WINDOWS_AHEAD {
            return Err(Error::InvalidRequest(format!(
                "`windows_ahead` is {windows_ahead}: at most {MAX_WINDOWS_AHEAD}"
            )));
        }
        let time_zone = payload
            .time_zone
            .map(|zone| zone.trim().to_owned())
            .unwrap_or_else(|| "Asia/Kolkata".into());
        if time_zone.is_empty() {
            return Err(Error::InvalidRequest(
                "`time_zone` is empty: name one, e.g. Asia/Kolkata".into(),
            ));
        }
        Ok(RotatingRequest {
            audience: payload.audience.unwrap_or(Audience::RegisteredToday),
            windows_ahead,
            time_zone,
        })
    }
}

/// What a rotating pre-warm did.
#[derive(Debug, Clone, Serialize)]
pub struct RotatingSummary {
    pub audience: Audience,
    pub students: u64,
    /// The windows prepared, the current one first.
    pub windows: Vec<i64>,
    pub rendered: u64,
    /// Images a previous run had already written.
    pub already_cached: u64,
    pub failed: u64,
    pub failures: Vec<Failure>,
    pub duration_ms: f64,
    pub renders_per_second: f64,
}

impl RotatingSummary {
    pub fn metrics(&self) -> Metrics {
        Metrics::new(Function::WarmQrCache)
            .count(Metric::RotatingRendered, self.rendered)
            .count(Metric::RotatingFailed, self.failed)
            .milliseconds(Metric::RotatingDuration, self.duration_ms)
    }
}

impl fmt::Display for RotatingSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let windows = match (self.windows.first(), self.windows.last()) {
            (Some(first), Some(last)) => format!("windows {first}..{last}"),
            _ => "no windows".into(),
        };
        writeln!(
            f,
            "Rotating QRs: {} students x {} ({}): {} rendered, {} already cached ({} failed)",
            self.students,
            self.windows.len(),
            windows,
            self.rendered,
            self.already_cached,
            self.failed
        )?;
        for failure in &self.failures {
            writeln!(f, "  failed {}: {}", failure.id, failure.reason)?;
        }
        writeln!(f, "Speed: {:.0} renders/second", self.renders_per_second)?;
        write!(f, "Total Duration: {:.2}s", self.duration_ms / 1000.0)
    }
}

/// The registration numbers of the audience.
pub async fn audience(db: &Database, request: &RotatingRequest) -> Result<Vec<String>, Error> {
    let client = db.client().await?;
    let rows = match request.audience {
        Audience::Everyone => {
            client
                .query_typed("SELECT registration_no FROM students", &[])
                .await
        }
        // The volunteer's scan accepts a registration to an APPROVED or ACTIVE event, a paid
        // one only once paid; an event "runs today" when today, in the event's zone, falls
        // between its start and end dates.
        Audience::RegisteredToday => {
            client
                .query_typed(
                    "SELECT DISTINCT s.registration_no FROM students s \
                     JOIN event_registrations r ON r.student_id = s.id \
                     JOIN events e ON e.id = r.event_id \
                     WHERE e.status IN ('APPROVED', 'ACTIVE') \
                       AND e.start_date::date <= (now() AT TIME ZONE $1)::date \
                       AND e.end_date::date >= (now() AT TIME ZONE $1)::date \
                       AND COALESCE(r.registration_status, 'CONFIRMED') NOT IN ('CANCELLED', 'EXPIRED') \
                       AND (r.registration_type <> 'PAID' OR r.payment_status = 'COMPLETED')",
                    &[(&request.time_zone, Type::TEXT)],
                )
                .await
        }
    }
    .map_err(|error| {
        if error.code() == Some(&SqlState::INVALID_PARAMETER_VALUE) {
            Error::InvalidRequest(format!(
                "`time_zone` `{}` is not a time zone Postgres knows",
                request.time_zone
            ))
        } else {
            Error::postgres("reading the students to prepare rotating QRs for", error)
        }
    })?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Prepares the current window and `windows_ahead` more for the audience, at `now_secs`.
pub async fn prepare(
    db: &Database,
    cache: &Cache,
    signer: &RotatingSigner,
    request: &RotatingRequest,
    now_secs: i64,
) -> Result<RotatingSummary, Error> {
    let started = Instant::now();
    let students = audience(db, request).await?;
    let current = token::window_at(now_secs);
    let windows: Vec<i64> = (0..=i64::from(request.windows_ahead))
        .map(|ahead| current + ahead)
        .collect();
    let mut summary = RotatingSummary {
        audience: request.audience,
        students: students.len() as u64,
        windows: windows.clone(),
        rendered: 0,
        already_cached: 0,
        failed: 0,
        failures: Vec::new(),
        duration_ms: 0.0,
        renders_per_second: 0.0,
    };
    // What is cached already, window by window, in a few pipelined round trips.
    let prefix = cache.settings().key_prefix.clone();
    let mut missing = Vec::new();
    for &window in &windows {
        for chunk in students.chunks(CHUNK) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|registration_no| rotating::key(&prefix, registration_no, window))
                .collect();
            let cached = rotating::cached(cache, &keys).await?;
            for ((registration_no, key), found) in chunk.iter().zip(keys).zip(cached) {
                if found {
                    summary.already_cached += 1;
                } else {
                    missing.push((window, registration_no.clone(), key));
                }
            }
        }
    }
    // One render job walks everything missing, the current window first, on every core, and
    // hands each part over as it finishes: the cores never wait for Redis.
    let (chunks, mut rendered) = tokio::sync::mpsc::channel::<RenderedChunk>(STORES_IN_FLIGHT);
    let signer = signer.clone();
    rayon::spawn(move || render_all(&signer, missing, &chunks));
    let mut stores: JoinSet<Result<(), Error>> = JoinSet::new();
    while let Some(chunk) = rendered.recv().await {
        summary.rendered += chunk.entries.len() as u64;
        summary.failed += chunk.failures.len() as u64;
        let room = FAILURES_LISTED.saturating_sub(summary.failures.len());
        summary
            .failures
            .extend(chunk.failures.into_iter().take(room));
        while stores.len() >= STORES_IN_FLIGHT {
            join_store(&mut stores).await?;
        }
        let cache = cache.clone();
        stores.spawn(async move {
            let now = chrono::Utc::now().timestamp();
            rotating::store(&cache, now, &chunk.entries).await
        });
    }
    while !stores.is_empty() {
        join_store(&mut stores).await?;
    }
    let expected = summary.students * summary.windows.len() as u64;
    if summary.rendered + summary.failed + summary.already_cached != expected {
        return Err(Error::Stopped("a rotating render worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    summary.duration_ms = elapsed * 1000.0;
    summary.renders_per_second = summary.rendered as f64 / elapsed.max(1e-9);
    Ok(summary)
}

async fn join_store(stores: &mut JoinSet<Result<(), Error>>) -> Result<(), Error> {
    match stores.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(_)) => Err(Error::Stopped("a rotating store")),
        None => Ok(()),
    }
}

/// Images rendered together: `(window, key, data URL)`.
struct RenderedChunk {
    entries: Vec<(i64, String, String)>,
    failures: Vec<Failure>,
}

/// Signs and draws `missing` (window, registration number, key) on every core of rayon's pool,
/// a part at a time per thread with no barrier between parts, sending each part on as it is
/// done. Stops early if the receiver is gone.
fn render_all(
    signer: &RotatingSigner,
    missing: Vec<(i64, String, String)>,
    chunks: &tokio::sync::mpsc::Sender<RenderedChunk>,
) {
    use rayon::prelude::*;
    let _ = missing.par_chunks(RENDER_PART).try_for_each(|part| {
        let mut chunk = RenderedChunk {
            entries: Vec::with_capacity(part.len()),
            failures: Vec::new(),
        };
        for (window, registration_no, key) in part {
            match rotating::render(signer, registration_no, *window) {
                Ok(image) => chunk.entries.push((*window, key.clone(), image.data_url)),
                Err(error) => chunk.failures.push(Failure {
                    id: registration_no.clone(),
                    reason: error.to_string(),
                }),
            }
        }
        chunks.blocking_send(chunk).map_err(|_| ())
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_choose_audience_windows_and_zone() {
        assert_eq!(
            RotatingRequest::from_payload(json!({})).unwrap(),
            RotatingRequest {
                audience: Audience::RegisteredToday,
                windows_ahead: 2,
                time_zone: "Asia/Kolkata".into()
            }
        );
        let request = RotatingRequest::from_payload(
            json!({"audience": "everyone", "windows_ahead": 0, "time_zone": "UTC"}),
        )
        .unwrap();
        assert_eq!(request.audience, Audience::Everyone);
        assert_eq!(request.windows_ahead, 0);
        assert_eq!(request.time_zone, "UTC");
    }

    #[test]
    fn malformed_rotating_payloads_say_what_is_wrong() {
        for (payload, expected) in [
            (json!({"audience": "staff"}), "unknown variant `staff`"),
            (
                json!({"windows_ahead": 11}),
                "`windows_ahead` is 11: at most 10",
            ),
            (json!({"windows_ahead": -1}), "invalid value: integer `-1`"),
            (json!({"time_zone": " "}), "`time_zone` is empty"),
            (json!({"kinds": ["students"]}), "unknown field `kinds`"),
        ] {
            let error = RotatingRequest::from_payload(payload.clone())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{payload}: {error}");
        }
    }
}
