//! A function's cold start, the same for each: the configuration (its secrets read from SSM
//! Parameter Store when the environment names parameters, with the settings this function cannot
//! do without), logging, the database and the Redis connection; and the exit status when the
//! runtime stops.

use std::process::ExitCode;

use crate::cache::Cache;
use crate::config::{Config, ConfigWarning, SecretOrigin, SecretReference, StoredSecrets};
use crate::db::Database;
use crate::error::ConfigError;
use crate::secrets::{ParameterStore, SecretsError};
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

/// Why a function cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// The configuration read through `lookup`, the secrets its `X_PARAMETER` variables name read
/// from `store` in one call. With no `store`, one is made from the standard AWS environment, and
/// only when a parameter is named: a run with plain values never touches AWS.
///
/// Secrets are read here, once per cold start, and kept for the life of the instance: a rotated
/// secret reaches a function when its instances are replaced (see the README).
pub async fn configure(
    lookup: impl Fn(&str) -> Option<String>,
    needs: &[Needs],
    store: Option<&ParameterStore>,
) -> Result<Config, StartupError> {
    let references = SecretReference::all_in(&lookup);
    let stored = match (references.is_empty(), store) {
        (true, _) => StoredSecrets::default(),
        (false, Some(store)) => store.fetch(&references).await?,
        (false, None) => ParameterStore::from_env().await.fetch(&references).await?,
    };
    let config = Config::from_sources(lookup, &stored)?;
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
pub async fn start(function: &str, needs: &[Needs]) -> Result<Started, ExitCode> {
    let config = configure(|name| std::env::var(name).ok(), needs, None)
        .await
        .map_err(|error| {
            eprintln!("{function}: {error}");
            ExitCode::from(2)
        })?;
    telemetry::init(&config.log_filter, LogFormat::detect());
    telemetry::set_stage(&config.stage);
    log_secret_origins(&config.from_store);
    log_warnings(&config.warnings);
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

/// Said once per cold start, and only once logging is set up, so they reach the function's logs.
pub fn log_warnings(warnings: &[ConfigWarning]) {
    for warning in warnings {
        tracing::warn!(warning = warning.kind(), "{warning}");
    }
}

/// Which parameter and version each secret came from (never its value): after a rotation, the
/// new version in a cold start's log shows that instance has the new secret.
pub fn log_secret_origins(origins: &[SecretOrigin]) {
    for origin in origins {
        tracing::info!(
            variable = origin.variable,
            parameter = %origin.parameter,
            version = origin.version,
            "secret read from SSM Parameter Store"
        );
    }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_configuration_warning_is_logged_once_without_secrets() {
        let vars = [
            ("NEON_DATABASE_URL", "postgres://127.0.0.1/app"),
            ("REDIS_URL", "redis://:url-secret@127.0.0.1:6379"),
            ("REDIS_HOST", "redis.internal"),
            ("REDIS_PASSWORD", "host-secret"),
        ];
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            telemetry::subscriber("info", LogFormat::Text { ansi: false }, move || {
                writer.clone()
            });
        tracing::subscriber::with_default(subscriber, || log_warnings(&config.warnings));
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("WARN"), "{text}");
        assert!(text.contains("warning=\"RedisUrlShadowsHost\""), "{text}");
        assert!(
            text.contains("REDIS_URL is set, and so are REDIS_HOST, REDIS_PASSWORD"),
            "{text}"
        );
        assert!(text.contains("ignores REDIS_URL"), "{text}");
        assert!(
            !text.contains("url-secret") && !text.contains("host-secret"),
            "{text}"
        );
    }
}
