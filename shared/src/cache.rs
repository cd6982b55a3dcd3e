//! The cache contract the app reads: key `{prefix}qr:image:{first 16 hex of SHA-256(token)}`,
//! value the PNG's data URL, a TTL renewed on every read. Writes replace an entry in one
//! command and nothing here ever deletes, so a failed run leaves earlier entries readable.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The part of every key after the configured prefix, as the app's QR service writes it.
pub const KEY_NAMESPACE: &str = "qr:image:";

/// What this project counts of the reads it serves, one pair of counters per kind of image,
/// beside the images under the same prefix: the API adds to them, the hit-rate sampler reads
/// them, so the figure covers every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCounter {
    /// Static images (`qr:image:*`) the API served.
    Static,
    /// Rotating images (`qr:rotating:*`) the API served.
    Rotating,
}

impl ReadCounter {
    pub const ALL: [ReadCounter; 2] = [ReadCounter::Static, ReadCounter::Rotating];

    /// The `(hits, misses)` counter keys.
    pub fn keys(self, prefix: &str) -> (String, String) {
        let name = match self {
            ReadCounter::Static => "qr:api:",
            ReadCounter::Rotating => "qr:api:rotating:",
        };
        (
            format!("{prefix}{name}hits"),
            format!("{prefix}{name}misses"),
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReadCounter::Static => "static",
            ReadCounter::Rotating => "rotating",
        }
    }
}

/// Where and for how long entries live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    pub key_prefix: String,
    pub ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            key_prefix: String::new(),
            ttl: Duration::from_secs(86_400),
        }
    }
}

impl CacheSettings {
    /// The key of `token`'s image.
    pub fn key(&self, token: &str) -> String {
        let digest = Sha256::digest(token.as_bytes());
        let mut key = String::with_capacity(self.key_prefix.len() + KEY_NAMESPACE.len() + 16);
        key.push_str(&self.key_prefix);
        key.push_str(KEY_NAMESPACE);
        key.push_str(&hex::encode(&digest[..8]));
        key
    }

    /// A SCAN pattern matching every image key under this prefix (glob characters escaped).
    pub fn scan_pattern(&self) -> String {
        let mut pattern = String::new();
        for c in self.key_prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(KEY_NAMESPACE);
        pattern.push('*');
        pattern
    }

    fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }
}

/// One Redis connection, reused across invocations; it reconnects by itself after a drop, and
/// [`Cache::query`] replaces it when a failed-over primary answers READONLY.
#[derive(Clone)]
pub struct Cache {
    client: redis::Client,
    config: ConnectionManagerConfig,
    connection: std::sync::Arc<std::sync::RwLock<ConnectionManager>>,
    settings: CacheSettings,
}

/// After a failover the old primary, now a replica, refuses writes with READONLY (and GETEX is
/// a write) on a socket that stays open: the connection manager, which reconnects by itself
/// only when a socket breaks, would keep talking to it.
fn is_read_only(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a SCAN-and-renew pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RenewAllOutcome {
    pub scanned: u64,
    pub renewed: u64,
}

impl Cache {
    /// Prepares the connection without waiting for Redis, so a cold start succeeds while Redis
    /// is briefly away; the first command connects.
    pub fn connect_lazily(url: &SecretString, settings: CacheSettings) -> Result<Self, Error> {
        let client = redis::Client::open(url.expose_secret())
            .map_err(|source| Error::redis("parsing REDIS_URL", source))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|source| Error::redis("preparing the Redis connection", source))?;
        Ok(Cache {
            client,
            config,
            connection: std::sync::Arc::new(std::sync::RwLock::new(connection)),
            settings,
        })
    }

    /// Drops the current connection for a new one, which resolves the host again: after a
    /// failover the name points at the new primary.
    pub fn reconnect(&self) -> Result<(), Error> {
        let fresh =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
                .map_err(|source| Error::redis("reconnecting to Redis", source))?;
        if let Ok(mut current) = self.connection.write() {
            *current = fresh;
        }
        tracing::warn!("Redis answered READONLY (a failed-over primary); reconnected");
        Ok(())
    }

    /// Runs `request` (a command or a pipeline); when the server answers READONLY, reconnects
    /// and runs it once more, and when the connection dropped, runs it once more.
    pub async fn query<T, R>(&self, request: &R) -> redis::RedisResult<T>
    where
        T: redis::FromRedisValue + Send + 'static,
        R: Request,
    {
        let first = request.run(&mut self.connection()).await;
        match first {
            Err(error) if is_read_only(&error) => {
                if self.reconnect().is_err() {
                    return Err(error);
                }
                request.run(&mut self.connection()).await
            }
            // A dropped or reset connection: the manager is already reconnecting (resolving the
            // host again), so the same one is asked once more. A refused or timed-out connect is
            // not retried: Redis is away, and a second wait would only double the first.
            Err(error) if error.is_connection_dropped() => {
                request.run(&mut self.connection()).await
            }
            other => other,
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// The current connection, for callers with their own commands (statistics, tests).
    pub fn connection(&self) -> ConnectionManager {
        match self.connection.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub async fn ping(&self) -> Result<(), Error> {
        self.query::<String, _>(&redis::cmd("PING"))
            .await
            .map(|_| ())
            .map_err(|source| Error::redis("PING", source))
    }

    /// Renews the TTL of each key in one round trip; `true` where the key existed.
    pub async fn renew(&self, keys: &[String]) -> Result<Vec<bool>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("EXPIRE").arg(key).arg(self.settings.ttl_secs());
        }
        self.query::<Vec<bool>, _>(&pipe)
            .await
            .map_err(|source| Error::redis("renewing TTLs (EXPIRE)", source))
    }

    /// Stores each `(key, value)` with the TTL in one round trip. `SET` replaces an entry
    /// atomically, so a reader sees the old image or the new one, never none.
    pub async fn store(&self, entries: &[(String, String)]) -> Result<(), Error> {
        self.store_for(entries, self.settings.ttl).await
    }

    /// [`Cache::store`] with another TTL (rotating images live to the end of their window).
    pub async fn store_for(
        &self,
        entries: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .ignore();
        }
        self.query::<(), _>(&pipe)
            .await
            .map_err(|source| Error::redis("storing images (SET)", source))
    }

    /// Reads an entry and renews its TTL in the same command (`GETEX`), as every reader must.
    pub async fn get_renewing(&self, key: &str) -> Result<Option<String>, Error> {
        let mut command = redis::cmd("GETEX");
        command.arg(key).arg("EX").arg(self.settings.ttl_secs());
        self.query::<Option<String>, _>(&command)
            .await
            .map_err(|source| Error::redis("reading an image (GETEX)", source))
    }

    /// Renews every image entry under the prefix, walking the keyspace with SCAN (never KEYS,
    /// which blocks the server the app is using).
    pub async fn renew_all(&self) -> Result<RenewAllOutcome, Error> {
        let mut outcome = RenewAllOutcome::default();
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan_page(cursor).await?;
            outcome.scanned += keys.len() as u64;
            outcome.renewed += self
                .renew(&keys)
                .await?
                .into_iter()
                .filter(|found| *found)
                .count() as u64;
            if next == 0 {
                return Ok(outcome);
            }
            cursor = next;
        }
    }

    /// Counts image entries under the prefix with SCAN.
    pub async fn count_entries(&self) -> Result<u64, Error> {
        let mut count = 0;
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan_page(cursor).await?;
            count += keys.len() as u64;
            if next == 0 {
                return Ok(count);
            }
            cursor = next;
        }
    }

    async fn scan_page(&self, cursor: u64) -> Result<(u64, Vec<String>), Error> {
        let mut command = redis::cmd("SCAN");
        command
            .arg(cursor)
            .arg("MATCH")
            .arg(self.settings.scan_pattern())
            .arg("COUNT")
            .arg(1000);
        self.query(&command)
            .await
            .map_err(|source| Error::redis("scanning cached images (SCAN)", source))
    }
}

/// A command or a pipeline, which [`Cache::query`] can send twice.
pub trait Request: Sync {
    fn run<'a, T: redis::FromRedisValue + Send + 'a>(
        &'a self,
        connection: &'a mut ConnectionManager,
    ) -> redis::RedisFuture<'a, T>;
}

impl Request for redis::Cmd {
    fn run<'a, T: redis::FromRedisValue + Send + 'a>(
        &'a self,
        connection: &'a mut ConnectionManager,
    ) -> redis::RedisFuture<'a, T> {
        Box::pin(self.query_async(connection))
    }
}

impl Request for redis::Pipeline {
    fn run<'a, T: redis::FromRedisValue + Send + 'a>(
        &'a self,
        connection: &'a mut ConnectionManager,
    ) -> redis::RedisFuture<'a, T> {
        Box::pin(self.query_async(connection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_the_apps_format() {
        let settings = CacheSettings {
            key_prefix: "staging:".into(),
            ..CacheSettings::default()
        };
        // SHA-256("hello") = 2cf24dba5fb0a30e26e83b2ac5b9e29e...
        assert_eq!(settings.key("hello"), "staging:qr:image:2cf24dba5fb0a30e");
        assert_eq!(
            CacheSettings::default().key("hello"),
            "qr:image:2cf24dba5fb0a30e"
        );
    }

    #[test]
    fn scan_pattern_escapes_glob_characters_of_the_prefix() {
        let settings = CacheSettings {
            key_prefix: "a*b[1]?".into(),
            ..CacheSettings::default()
        };
        assert_eq!(settings.scan_pattern(), "a\\*b\\[1\\]\\?qr:image:*");
    }
}
