//! One error type for the jobs, with the context a person needs to act (which step, which key).
//! Messages never carry secrets: connection strings are not part of any variant.

use crate::qr::RenderError;

/// A variable of the environment that is missing or malformed: a leaf every settings type
/// reports with, so no module needs `config` to say what is wrong with its settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set: {1}")]
    Missing(&'static str, &'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// `X_PARAMETER` is set where nothing reads SSM Parameter Store (a tool, not a function).
    #[error("{named_by} is set, but this program does not read SSM Parameter Store: set {variable} itself")]
    ParameterUnread {
        named_by: &'static str,
        variable: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("Postgres: {context}: {}", describe_postgres(.source))]
    Postgres {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    /// Postgres did not answer in time: a silent network path, a stuck pooler, a statement
    /// held by a lock. The connection was dropped and its statement cancelled on the server.
    #[error("Postgres did not answer within {} ms ({context}); the connection was dropped and its statement cancelled", .after.as_millis())]
    DatabaseTimeout {
        context: &'static str,
        after: std::time::Duration,
    },

    #[error("Redis: {context}: {source}")]
    Redis {
        context: &'static str,
        #[source]
        source: redis::RedisError,
    },

    /// Redis reached `maxmemory` under `noeviction` and refuses every write.
    #[error("Redis is out of memory ({context}): it refuses every write because maxmemory is reached and its policy is noeviction; the images already cached stay readable. Raise maxmemory, or choose an eviction policy such as allkeys-lru")]
    CacheFull { context: &'static str },

    #[error("TLS setup: {0}")]
    Tls(#[from] native_tls::Error),

    #[error("QR rendering: {0}")]
    Render(#[from] RenderError),

    #[error("invalid request: {0}")]
    InvalidRequest(String),

    #[error("S3: {0}")]
    #[cfg(feature = "imports")]
    Storage(#[from] crate::storage::StorageError),

    #[error("signing a token: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),

    #[error("drawing random bytes: {0}")]
    Random(#[from] getrandom::Error),

    #[error("signing a stall token: {0}")]
    Mac(#[from] hmac::digest::InvalidLength),

    #[error("hashing a password: {0}")]
    #[cfg(feature = "imports")]
    Hashing(#[from] bcrypt::BcryptError),

    #[error("writing the report: {0}")]
    Report(String),

    #[error("import {id} was taken over by another run (attempt {attempt} is no longer current); this run's work is discarded")]
    ImportTakenOver { id: uuid::Uuid, attempt: i32 },

    #[error("import {0} is still being processed by another run; the event will be retried")]
    ImportBusy(uuid::Uuid),

    #[error("import {0}: {1}")]
    ImportState(uuid::Uuid, &'static str),

    #[error("the import of {key} could not be registered: its row changed under three attempts")]
    Unregistered { key: String },

    /// Another request's render, which this one waited on, failed.
    #[error("a shared render failed: {0}")]
    SharedRender(String),

    /// A worker thread or task ended without an answer (it panicked or was cancelled).
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),

    /// Images the warm could not cache, after the rest were.
    #[error("{0} QR images could not be cached")]
    Uncached(u64),

    /// Shards of a sharded warm that failed (their invocations' errors are in the merged
    /// summary); the other shards' images are cached.
    #[error("{failed} of {shards} warm shards failed")]
    ShardsFailed { failed: u32, shards: u32 },

    /// Postgres was unreachable and the cache could not be renewed either.
    #[error("{postgres}; and renewing the cache failed too: {cache}")]
    Outage {
        postgres: Box<Error>,
        cache: Box<Error>,
    },
}

impl Error {
    /// The variant's name, for Lambda's `errorType` and for filtering logs and alarms.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "ConfigError",
            Error::Postgres { .. } => "PostgresError",
            Error::DatabaseTimeout { .. } => "PostgresTimeout",
            Error::Redis { .. } => "RedisError",
            Error::CacheFull { .. } => "RedisOutOfMemory",
            Error::Tls(_) => "TlsError",
            Error::Render(_) => "RenderError",
            Error::InvalidRequest(_) => "InvalidRequest",
            #[cfg(feature = "imports")]
            Error::Storage(_) => "StorageError",
            Error::Jwt(_) | Error::Mac(_) => "SigningError",
            Error::Random(_) => "RandomError",
            #[cfg(feature = "imports")]
            Error::Hashing(_) => "HashingError",
            Error::Report(_) => "ReportError",
            Error::ImportTakenOver { .. } => "ImportTakenOver",
            Error::ImportBusy(_) => "ImportBusy",
            Error::ImportState(..) => "ImportStateError",
            Error::Unregistered { .. } => "ImportUnregistered",
            Error::SharedRender(_) => "RenderError",
            Error::Stopped(_) => "WorkerStopped",
            Error::Uncached(_) => "QrImagesUncached",
            Error::ShardsFailed { .. } => "WarmShardsFailed",
            Error::Outage { .. } => "PostgresOutage",
        }
    }

    pub fn postgres(context: &'static str, source: tokio_postgres::Error) -> Self {
        Error::Postgres { context, source }
    }

    pub fn redis(context: &'static str, source: redis::RedisError) -> Self {
        // A pipeline gathers its commands' errors into one, whose code is not OOM itself.
        if source.code() == Some("OOM") || source.to_string().contains("\"OOM\"") {
            return Error::CacheFull { context };
        }
        Error::Redis { context, source }
    }
}

/// tokio-postgres prints only "db error" for server errors; the server's message is what a
/// person needs ("relation \"students\" does not exist").
fn describe_postgres(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// A variable's value parsed, or `default` when it is not set; a malformed value names the
/// variable.
pub fn parse_or<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|error: T::Err| ConfigError::Invalid {
            name,
            reason: format!("`{text}`: {error}"),
        }),
    }
}
