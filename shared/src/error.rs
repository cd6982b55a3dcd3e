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

    #[error("Redis: {context}: {source}")]
    Redis {
        context: &'static str,
        #[source]
        source: redis::RedisError,
    },

    #[error("TLS setup: {0}")]
    Tls(#[from] native_tls::Error),

    #[error("QR rendering: {0}")]
    Render(#[from] RenderError),

    #[error("invalid request: {0}")]
    InvalidRequest(String),

    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub fn postgres(context: &'static str, source: tokio_postgres::Error) -> Self {
        Error::Postgres { context, source }
    }

    pub fn redis(context: &'static str, source: redis::RedisError) -> Self {
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
    name: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match value {
        None => Ok(default),
        Some(text) => text.parse().map_err(|error: T::Err| ConfigError::Invalid {
            name,
            reason: format!("`{text}`: {error}"),
        }),
    }
}
