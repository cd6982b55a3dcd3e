//! A function's cold start, the same for each: the configuration (with the settings this
//! function cannot do without), logging, the database and the Redis connection; and the exit
//! status when the runtime stops.

use std::process::ExitCode;

use crate::cache::Cache;
use crate::config::Config;
use crate::db::Database;
use crate::error::ConfigError;
use crate::telemetry::{self, LogFormat};

/// Settings only some functions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    JwtSecret,
    #[cfg(feature = "imports")]
    ImportBucket,
}

/// What every function makes once.
pub struct Started {
    pub config: Config,
    pub db: Database,
    pub cache: Cache,
}

fn configure(needs: &[Needs]) -> Result<Config, ConfigError> {
    let config = Config::from_env()?;
    for need in needs {
        match need {
            Needs::JwtSecret => config.jwt_secret().map(|_| ())?,
            #[cfg(feature = "imports")]
            Needs::ImportBucket => config.import_bucket().map(|_| ())?,
        }
    }
    Ok(config)
}

/// Reads the configuration and makes the clients; a configuration error is printed with the
/// function's name and becomes exit status 2. Postgres is connected now when it can be, so the
/// first invocation finds it ready; when it cannot, invocations connect (and say why).
pub fn start(function: &str, needs: &[Needs]) -> Result<Started, ExitCode> {
    let config = configure(needs).map_err(|error| {
        eprintln!("{function}: {error}");
        ExitCode::from(2)
    })?;
    telemetry::init(&config.log_filter, LogFormat::detect());
    let cache =
        Cache::connect_lazily(&config.redis_url, config.cache.clone()).map_err(|error| {
            eprintln!("{function}: {error}");
            ExitCode::from(2)
        })?;
    Ok(Started {
        db: Database::new(config.database.clone()),
        cache,
        config,
    })
}

/// Connects the kept Postgres connection ahead of the first invocation, if it can.
pub async fn warm_up(db: &Database) {
    if let Err(error) = db.client().await {
        tracing::warn!(error = %error, "Postgres not reachable at cold start");
    }
}

/// The process's exit status once the Lambda runtime has stopped.
pub fn exit_status<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}
