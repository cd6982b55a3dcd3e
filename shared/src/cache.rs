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

/// One Redis connection, reused across invocations; it reconnects by itself after a drop.
#[derive(Clone)]
pub struct Cache {
    connection: ConnectionManager,
    settings: CacheSettings,
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
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|source| Error::redis("preparing the Redis connection", source))?;
        Ok(Cache {
            connection,
            settings,
        })
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// The raw connection, for callers with their own commands (statistics, tests).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    pub async fn ping(&self) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
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
        let mut connection = self.connection.clone();
        pipe.query_async::<Vec<bool>>(&mut connection)
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
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|source| Error::redis("storing images (SET)", source))
    }

    /// Reads an entry and renews its TTL in the same command (`GETEX`), as every reader must.
    pub async fn get_renewing(&self, key: &str) -> Result<Option<String>, Error> {
        let mut connection = self.connection.clone();
        redis::cmd("GETEX")
            .arg(key)
            .arg("EX")
            .arg(self.settings.ttl_secs())
            .query_async::<Option<String>>(&mut connection)
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
        let mut connection = self.connection.clone();
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(self.settings.scan_pattern())
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .map_err(|source| Error::redis("scanning cached images (SCAN)", source))
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
