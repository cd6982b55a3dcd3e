//! The hit-rate sampler: every few minutes it reads Redis's server-wide `keyspace_hits` and
//! `keyspace_misses` (every reader's, the app's included) and this project's own counts of
//! the static and rotating QR reads it serves, and emits the rates over the interval since the
//! previous sample as metrics. The cache hit-rate alarm reads `CacheHitRate` from here, so it
//! follows the app's real reads rather than only ours.

use serde::Serialize;

use shared::cache::{Cache, ReadCounter};
use shared::error::Error;
use shared::telemetry::{Function, Metric, Metrics};

/// Where the previous sample's counters are kept, under the prefix.
const LAST_SAMPLE: &str = "qr:sampler:last";

/// Hits and misses over one interval, and their rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses), in percent; `None` when nothing was read.
    pub percent: Option<f64>,
}

impl Rate {
    fn between(now: (u64, u64), before: Option<(u64, u64)>) -> Rate {
        // A counter that went down was reset (a Redis restart, CONFIG RESETSTAT, a failover):
        // what it holds now is what happened since.
        let delta = |now: u64, before: Option<u64>| match before {
            Some(before) if before <= now => now - before,
            _ => now,
        };
        let hits = delta(now.0, before.map(|b| b.0));
        let misses = delta(now.1, before.map(|b| b.1));
        let total = hits + misses;
        Rate {
            hits,
            misses,
            percent: (total > 0).then(|| hits as f64 * 100.0 / total as f64),
        }
    }
}

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub struct HitRateSample {
    /// Every reader of this Redis (keyspace_hits / keyspace_misses).
    pub server: Rate,
    /// The static images this project's API served.
    pub api_static: Rate,
    /// The rotating images this project's API served.
    pub api_rotating: Rate,
    /// Whether a previous sample existed to subtract (the first sample covers all time).
    pub since_previous: bool,
}

impl HitRateSample {
    /// The sample as metrics: each rate only when there were reads, so an idle night is
    /// missing data (which the alarm treats as not breaching), not a false 0 %.
    pub fn metrics(&self) -> Metrics {
        let mut metrics = Metrics::new(Function::WarmQrCache)
            .count(Metric::CacheReads, self.server.hits + self.server.misses);
        for (name, rate) in [
            (Metric::CacheHitRate, self.server),
            (Metric::ApiStaticHitRate, self.api_static),
            (Metric::ApiRotatingHitRate, self.api_rotating),
        ] {
            if let Some(percent) = rate.percent {
                metrics = metrics.percent(name, percent);
            }
        }
        metrics
    }
}

impl std::fmt::Display for HitRateSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |rate: Rate| match rate.percent {
            Some(percent) => format!("{percent:.1}% ({} hits, {} misses)", rate.hits, rate.misses),
            None => "no reads".into(),
        };
        write!(
            f,
            "Cache hit rate: {} server-wide; API static {}; API rotating {}",
            show(self.server),
            show(self.api_static),
            show(self.api_rotating)
        )
    }
}

fn info_number(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Takes a sample and keeps its counters for the next one.
pub async fn sample(cache: &Cache) -> Result<HitRateSample, Error> {
    let prefix = cache.settings().key_prefix.clone();
    let mut connection = cache.connection();
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut connection)
        .await
        .map_err(|e| Error::redis("reading INFO stats", e))?;
    let server = (
        info_number(&info, "keyspace_hits"),
        info_number(&info, "keyspace_misses"),
    );
    let mut counter_keys = Vec::new();
    for counter in ReadCounter::ALL {
        let (hits, misses) = counter.keys(&prefix);
        counter_keys.push(hits);
        counter_keys.push(misses);
    }
    let counts: Vec<Option<u64>> = redis::cmd("MGET")
        .arg(&counter_keys)
        .query_async(&mut connection)
        .await
        .map_err(|e| Error::redis("reading the API's read counters", e))?;
    let count = |i: usize| counts.get(i).copied().flatten().unwrap_or(0);
    let now = [server, (count(0), count(1)), (count(2), count(3))];

    let last_key = format!("{prefix}{LAST_SAMPLE}");
    let previous: Vec<Option<u64>> = redis::cmd("HMGET")
        .arg(&last_key)
        .arg(&[
            "server_hits",
            "server_misses",
            "static_hits",
            "static_misses",
            "rotating_hits",
            "rotating_misses",
        ])
        .query_async(&mut connection)
        .await
        .map_err(|e| Error::redis("reading the previous sample", e))?;
    let since_previous = previous.iter().all(Option::is_some);
    let before = |i: usize| -> Option<(u64, u64)> {
        Some((
            previous.get(2 * i).copied()??,
            previous.get(2 * i + 1).copied()??,
        ))
    };
    let sample = HitRateSample {
        server: Rate::between(now[0], before(0)),
        api_static: Rate::between(now[1], before(1)),
        api_rotating: Rate::between(now[2], before(2)),
        since_previous,
    };
    redis::cmd("HSET")
        .arg(&last_key)
        .arg(&[
            ("server_hits", now[0].0),
            ("server_misses", now[0].1),
            ("static_hits", now[1].0),
            ("static_misses", now[1].1),
            ("rotating_hits", now[2].0),
            ("rotating_misses", now[2].1),
        ])
        .query_async::<()>(&mut connection)
        .await
        .map_err(|e| Error::redis("keeping the sample", e))?;
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_interval_and_survive_resets() {
        assert_eq!(
            Rate::between((90, 10), None),
            Rate {
                hits: 90,
                misses: 10,
                percent: Some(90.0)
            }
        );
        assert_eq!(
            Rate::between((190, 60), Some((90, 10))),
            Rate {
                hits: 100,
                misses: 50,
                percent: Some(100.0 * 100.0 / 150.0)
            }
        );
        // Redis restarted: its counters began again.
        assert_eq!(
            Rate::between((4, 1), Some((90, 10))),
            Rate {
                hits: 4,
                misses: 1,
                percent: Some(80.0)
            }
        );
        assert_eq!(
            Rate::between((90, 10), Some((90, 10))),
            Rate {
                hits: 0,
                misses: 0,
                percent: None
            }
        );
    }

    #[test]
    fn info_fields_are_read_by_name() {
        let info = "# Stats\r\nkeyspace_hits:9\r\nkeyspace_misses:1\r\n";
        assert_eq!(info_number(info, "keyspace_hits"), 9);
        assert_eq!(info_number(info, "keyspace_misses"), 1);
        assert_eq!(info_number(info, "evicted_keys"), 0);
    }
}
