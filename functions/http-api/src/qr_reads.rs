//! QR images for readers (the HTTP API). Static: the row's token (minted first if the row has
//! none, as the app does on a first view), then the cache entry, renewed as it is read.
//! Rotating: the student's token for the current window and the entry the warmer prepared for
//! it, never renewed (it dies with its window). On a miss the image is rendered once however
//! many requests ask for it at the same time, and stored. Every read is counted as a hit or a
//! miss, in Redis, so the API's hit rate is one figure across all its instances.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio_postgres::types::Type;
use uuid::Uuid;

use secrecy::SecretString;
use shared::cache::{Cache, ReadCounter};
use shared::db::Database;
use shared::error::Error;
use shared::kind::Kind;
use shared::qr::{self, QrSettings, DATA_URL_PREFIX};
use shared::rotating::{self, ROTATING_QR};
use shared::telemetry::{Function, Metric, Metrics};
use shared::token::{self, RotatingSigner};

/// Where an image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Hit,
    Miss,
    /// Redis did not answer: rendered without the cache.
    Bypass,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Miss => "miss",
            Source::Bypass => "bypass",
        }
    }

    /// The record of one static QR read.
    pub fn static_read_metrics(self) -> Metrics {
        Metrics::new(Function::HttpApi)
            .count(Metric::CacheHits, u64::from(self == Source::Hit))
            .count(Metric::CacheMisses, u64::from(self == Source::Miss))
            .count(Metric::CacheUnavailable, u64::from(self == Source::Bypass))
    }

    /// The record of one rotating QR read.
    pub fn rotating_read_metrics(self) -> Metrics {
        Metrics::new(Function::HttpApi)
            .count(Metric::RotatingHits, u64::from(self == Source::Hit))
            .count(Metric::RotatingMisses, u64::from(self == Source::Miss))
    }
}

/// One image as served.
#[derive(Debug, Clone)]
pub struct QrImage {
    pub data_url: String,
    pub source: Source,
}

impl QrImage {
    /// The PNG bytes of the data URL.
    pub fn png(&self) -> Result<Vec<u8>, Error> {
        let encoded = self
            .data_url
            .strip_prefix(DATA_URL_PREFIX)
            .unwrap_or(&self.data_url);
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| Error::InvalidRequest("a cached image is not valid base64".into()))
    }
}

/// The read (GETEX renewing by ARGV[1] seconds, or a plain GET when it is 0) and the hit or
/// miss counter, in one round trip.
const READ_AND_COUNT: &str = "local v if ARGV[1] == '0' then v = redis.call('GET', KEYS[1]) \
    else v = redis.call('GETEX', KEYS[1], 'EX', ARGV[1]) end \
    if v then redis.call('INCR', KEYS[2]) else redis.call('INCR', KEYS[3]) end return v";

/// A student's rotating QR as served: the token in the image and the window it belongs to.
#[derive(Debug, Clone)]
pub struct RotatingImage {
    pub image: QrImage,
    pub token: String,
    pub registration_no: String,
    pub window: i64,
}

type Flight = Arc<OnceCell<Result<String, String>>>;

/// How long a student's registration number is remembered by id. A student opens the rotating
/// QR every 30 seconds; remembering the number keeps Postgres off the hot path, at the price of
/// a number changed in the app showing up to this late (a student's registration number is
/// their login and natural key; it does not change in normal use).
const REGISTRATION_MEMO_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// Students remembered at most; past this the memo starts again empty.
const REGISTRATION_MEMO_MAX: usize = 200_000;

/// Reads QR images; one per process, shared by its requests.
pub struct QrReader {
    db: Database,
    cache: Cache,
    settings: QrSettings,
    in_flight: Mutex<HashMap<String, Flight>>,
    renders: std::sync::atomic::AtomicU64,
    registrations: Mutex<HashMap<Uuid, (String, std::time::Instant)>>,
    /// How long a request waits for Postgres, connecting included, before it answers 503.
    pub database_deadline: std::time::Duration,
}

/// Why an image could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no such {0}")]
    NotFound(Kind),
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(Error),
    #[error(transparent)]
    Other(#[from] Error),
}

impl QrReader {
    pub fn new(db: Database, cache: Cache, settings: QrSettings) -> Self {
        QrReader {
            db,
            cache,
            settings,
            in_flight: Mutex::new(HashMap::new()),
            renders: Default::default(),
            registrations: Mutex::new(HashMap::new()),
            database_deadline: crate::DATABASE_DEADLINE,
        }
    }

    /// Runs `work` on Postgres within [`QrReader::database_deadline`].
    pub async fn database<T>(
        &self,
        context: &'static str,
        work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.db.within(context, self.database_deadline, work).await
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Images this process has rendered (for tests of the single flight).
    pub fn renders(&self) -> u64 {
        self.renders.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The token of a row, minted (in the app's format, never over one the app minted
    /// meanwhile) when the row has none.
    pub async fn token(
        &self,
        kind: Kind,
        id: Uuid,
        secret: &SecretString,
    ) -> Result<String, ReadError> {
        let token = self
            .database("reading a QR token", async |client| {
                shared::mint::token_of(client, secret, kind, id).await
            })
            .await;
        match token {
            Ok(Some(token)) => Ok(token),
            Ok(None) => Err(ReadError::NotFound(kind)),
            Err(error @ (Error::Postgres { .. } | Error::DatabaseTimeout { .. })) => {
                Err(ReadError::DatabaseUnavailable(error))
            }
            Err(error) => Err(ReadError::Other(error)),
        }
    }

    /// The image of a row: cached, or rendered and cached.
    pub async fn image(
        &self,
        kind: Kind,
        id: Uuid,
        secret: &SecretString,
    ) -> Result<QrImage, ReadError> {
        let token = self.token(kind, id, secret).await?;
        Ok(self.image_of_token(&token).await?)
    }

    /// A student's registration number, which names their rotating QR: remembered for
    /// [`REGISTRATION_MEMO_TTL`], else read from Postgres.
    pub async fn registration_no(&self, id: Uuid) -> Result<String, ReadError> {
        let remembered = self.registrations.lock().ok().and_then(|memo| {
            memo.get(&id)
                .filter(|(_, at)| at.elapsed() < REGISTRATION_MEMO_TTL)
                .map(|(number, _)| number.clone())
        });
        if let Some(number) = remembered {
            return Ok(number);
        }
        let number = self.read_registration_no(id).await?;
        if let Ok(mut memo) = self.registrations.lock() {
            if memo.len() >= REGISTRATION_MEMO_MAX {
                memo.clear();
            }
            memo.insert(id, (number.clone(), std::time::Instant::now()));
        }
        Ok(number)
    }

    async fn read_registration_no(&self, id: Uuid) -> Result<String, ReadError> {
        let rows = self
            .database("reading a student", async |client| {
                client
                    .query_typed(
                        "SELECT registration_no FROM students WHERE id = $1",
                        &[(&id, Type::UUID)],
                    )
                    .await
                    .map_err(|e| Error::postgres("reading a student", e))
            })
            .await
            .map_err(ReadError::DatabaseUnavailable)?;
        rows.first()
            .map(|row| row.get::<_, String>(0))
            .ok_or(ReadError::NotFound(Kind::Students))
    }

    /// A student's rotating QR for the window `now_secs` falls in: the entry the warmer
    /// prepared, or rendered and stored until the window's grace ends.
    pub async fn rotating(
        &self,
        signer: &RotatingSigner,
        id: Uuid,
        now_secs: i64,
    ) -> Result<RotatingImage, ReadError> {
        let registration_no = self.registration_no(id).await?;
        let window = token::window_at(now_secs);
        let token = signer.token(&registration_no, window).map_err(|e| {
            Error::InvalidRequest(format!("a rotating token could not be signed: {e}"))
        })?;
        let key = rotating::key(&self.cache.settings().key_prefix, &registration_no, window);
        let image = self
            .read_or_render(
                &key,
                &token,
                ReadCounter::Rotating,
                None,
                ROTATING_QR,
                rotating::ttl(window, now_secs),
            )
            .await?;
        Ok(RotatingImage {
            image,
            token,
            registration_no,
            window,
        })
    }

    /// The image of a token: cached, or rendered and cached.
    pub async fn image_of_token(&self, token: &str) -> Result<QrImage, Error> {
        let ttl = self.cache.settings().ttl;
        self.read_or_render(
            &self.cache.settings().key(token),
            token,
            ReadCounter::Static,
            Some(ttl),
            self.settings,
            ttl,
        )
        .await
    }

    /// Reads `key` (renewing it by `renew`), counting the read under `counter`; on a miss
    /// renders `token` at `settings` and stores it for `store_for`.
    async fn read_or_render(
        &self,
        key: &str,
        token: &str,
        counter: ReadCounter,
        renew: Option<std::time::Duration>,
        settings: QrSettings,
        store_for: std::time::Duration,
    ) -> Result<QrImage, Error> {
        let (hits, misses) = counter.keys(&self.cache.settings().key_prefix);
        let mut read = redis::cmd("EVAL");
        read.arg(READ_AND_COUNT)
            .arg(3)
            .arg(key)
            .arg(hits)
            .arg(misses)
            .arg(renew.map_or(0, |ttl| ttl.as_secs().max(1)));
        let read = match self.cache.query::<Option<String>, _>(&read).await {
            // Redis answered but would not run the script: out of memory under `noeviction`
            // (a script may write, so it is refused; a GET is not), scripting denied by an ACL,
            // a busy script. A plain GET still finds the image, uncounted and unrenewed.
            Err(error)
                if error.kind() != redis::ErrorKind::Io && !error.is_connection_dropped() =>
            {
                tracing::warn!(error = %error, "the read script was refused; reading with GET");
                self.cache
                    .query::<Option<String>, _>(redis::cmd("GET").arg(key))
                    .await
            }
            other => other,
        };
        match read {
            Ok(Some(data_url)) => Ok(QrImage {
                data_url,
                source: Source::Hit,
            }),
            Ok(None) => Ok(QrImage {
                data_url: self
                    .render_once(key, token, settings, Some(store_for))
                    .await?,
                source: Source::Miss,
            }),
            Err(error) => {
                tracing::warn!(error = %error, "Redis unavailable; rendering without the cache");
                Ok(QrImage {
                    data_url: self.render_once(key, token, settings, None).await?,
                    source: Source::Bypass,
                })
            }
        }
    }

    /// Renders `token` once for all concurrent callers of the same key, storing it for
    /// `store_for` when given.
    async fn render_once(
        &self,
        key: &str,
        token: &str,
        settings: QrSettings,
        store_for: Option<std::time::Duration>,
    ) -> Result<String, Error> {
        let flight = {
            let mut in_flight = self
                .in_flight
                .lock()
                .map_err(|_| Error::Stopped("a render of the registry"))?;
            Arc::clone(in_flight.entry(key.to_owned()).or_default())
        };
        let result = flight
            .get_or_init(|| async {
                self.renders
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // In place: one image takes well under a millisecond and an instance serves one
                // request at a time, so a hop to the blocking pool and back costs more than it
                // frees (BENCHMARKS.md, "The rotating QR").
                let rendered = qr::render_data_url(token, &settings)
                    .map(|(url, _)| url)
                    .map_err(|e| e.to_string());
                if let (Ok(url), Some(ttl)) = (&rendered, store_for) {
                    let entry = [(key.to_owned(), url.clone())];
                    if let Err(error) = self.cache.store_for(&entry, ttl).await {
                        tracing::warn!(error = %error, "rendered image not cached");
                    }
                }
                rendered
            })
            .await
            .clone();
        if let Ok(mut in_flight) = self.in_flight.lock() {
            if in_flight
                .get(key)
                .is_some_and(|current| Arc::ptr_eq(current, &flight))
            {
                in_flight.remove(key);
            }
        }
        result.map_err(Error::SharedRender)
    }

    /// The API's own read counts of one kind of image: `(hits, misses)`.
    pub async fn api_counts(&self, counter: ReadCounter) -> Result<(u64, u64), Error> {
        let (hits, misses) = counter.keys(&self.cache.settings().key_prefix);
        let mut connection = self.cache.connection();
        let (hits, misses): (Option<u64>, Option<u64>) = redis::cmd("MGET")
            .arg(hits)
            .arg(misses)
            .query_async(&mut connection)
            .await
            .map_err(|e| Error::redis("reading the API's counters", e))?;
        Ok((hits.unwrap_or(0), misses.unwrap_or(0)))
    }
}

/// What `GET /cache/stats` shows an operator.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStats {
    pub cached_qr_images: u64,
    pub redis_used_memory_bytes: u64,
    pub redis_used_memory_human: String,
    /// Hits / (hits + misses) of every reader of this Redis, the app included.
    pub server_hit_rate: Option<f64>,
    pub server_hits: u64,
    pub server_misses: u64,
    /// This API's own reads of QR images.
    pub api_hits: u64,
    pub api_misses: u64,
    pub api_hit_rate: Option<f64>,
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
        })
        .map(str::trim)
}

fn rate(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 / total as f64)
}

pub async fn cache_stats(reader: &QrReader) -> Result<CacheStats, Error> {
    let cached = reader.cache.count_entries().await?;
    let mut connection = reader.cache.connection();
    // One section per INFO: Redis before 7 refuses `INFO memory stats`.
    let (memory, stats): (String, String) = redis::pipe()
        .cmd("INFO")
        .arg("memory")
        .cmd("INFO")
        .arg("stats")
        .query_async(&mut connection)
        .await
        .map_err(|e| Error::redis("reading INFO", e))?;
    let info = memory + &stats;
    let number = |name: &str| {
        info_field(&info, name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (server_hits, server_misses) = (number("keyspace_hits"), number("keyspace_misses"));
    let (api_hits, api_misses) = reader.api_counts(ReadCounter::Static).await?;
    Ok(CacheStats {
        cached_qr_images: cached,
        redis_used_memory_bytes: number("used_memory"),
        redis_used_memory_human: info_field(&info, "used_memory_human")
            .unwrap_or("")
            .to_owned(),
        server_hit_rate: rate(server_hits, server_misses),
        server_hits,
        server_misses,
        api_hits,
        api_misses,
        api_hit_rate: rate(api_hits, api_misses),
    })
}

/// Postgres and Redis both answer within a second.
pub async fn healthy(reader: &QrReader) -> bool {
    let timeout = std::time::Duration::from_secs(1);
    let postgres = async {
        reader
            .db
            .within("checking health", timeout, async |client| {
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(|e| Error::postgres("checking health", e))
            })
            .await
            .is_ok()
    };
    let redis = async {
        matches!(
            tokio::time::timeout(timeout, reader.cache.ping()).await,
            Ok(Ok(()))
        )
    };
    let (postgres, redis) = tokio::join!(postgres, redis);
    postgres && redis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_name() {
        let info = "# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\n# Stats\r\nkeyspace_hits:9\r\nkeyspace_misses:1\r\n";
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "used_memory_human"), Some("1.00K"));
        assert_eq!(info_field(info, "keyspace_hits"), Some("9"));
        assert_eq!(rate(9, 1), Some(0.9));
        assert_eq!(rate(0, 0), None);
    }
}
