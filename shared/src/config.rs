//! The environment becomes a typed `Config`, read in one place. Names are the Node app's, so one
//! `.env` serves both. Secrets are wrapped so `Debug` and logs cannot show them.

use std::time::Duration;

use secrecy::SecretString;

use crate::cache::CacheSettings;
use crate::db::DatabaseSettings;
use crate::error::{parse_or, ConfigError};
#[cfg(feature = "imports")]
use crate::import::ImportSettings;
use crate::qr::{Ecc, QrSettings};
#[cfg(feature = "imports")]
use crate::storage::S3Settings;

/// Names of the variables read in more than one place; the app's own names.
const DATABASE_URL: &str = "NEON_DATABASE_URL";
const DATABASE_URL_ALIAS: &str = "DATABASE_URL";
const REDIS_URL: &str = "REDIS_URL";
const QR_MARGIN: &str = "QR_MARGIN";
const QR_WIDTH_PX: &str = "QR_WIDTH_PX";
const QR_CACHE_TTL_SECS: &str = "QR_CACHE_TTL_SECS";
const LOG_LEVEL: &str = "LOG_LEVEL";
const JWT_SECRET: &str = "JWT_SECRET";
#[cfg(feature = "imports")]
const IMPORT_BUCKET: &str = "IMPORT_BUCKET";

/// Everything the functions read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseSettings,
    pub redis_url: SecretString,
    pub cache: CacheSettings,
    pub qr: QrSettings,
    /// `LOG_LEVEL`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`.
    pub log_filter: String,
    #[cfg(feature = "imports")]
    pub import: ImportSettings,
    #[cfg(feature = "imports")]
    pub s3: S3Settings,
    /// Needed by the importer and the HTTP API only; see [`Config::jwt_secret`].
    jwt_secret: Option<SecretString>,
    /// Needed by the importer and the HTTP API only; see [`Config::import_bucket`].
    #[cfg(feature = "imports")]
    import_bucket: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests never touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let database_url = get(DATABASE_URL).or_else(|| get(DATABASE_URL_ALIAS)).ok_or(
            ConfigError::Missing(
                DATABASE_URL,
                "set it (or DATABASE_URL) to the Postgres URL, e.g. postgres://user:pass@host/db?sslmode=require",
            ),
        )?;
        let database = DatabaseSettings::parse(&database_url)?;

        let redis_url = get(REDIS_URL).ok_or(ConfigError::Missing(
            REDIS_URL,
            "set it to redis://host:6379 or rediss://... for TLS",
        ))?;
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            return Err(ConfigError::Invalid {
                name: REDIS_URL,
                reason: "must start with redis:// or rediss://".into(),
            });
        }
        redis::Client::open(redis_url.as_str()).map_err(|_| ConfigError::Invalid {
            name: REDIS_URL,
            reason: "not a valid Redis URL".into(),
        })?;

        let ttl_secs: u64 = parse_or(&get, QR_CACHE_TTL_SECS, 86_400)?;
        if ttl_secs == 0 {
            return Err(ConfigError::Invalid {
                name: QR_CACHE_TTL_SECS,
                reason: "must be at least 1 second".into(),
            });
        }
        let cache = CacheSettings {
            key_prefix: get("CACHE_KEY_PREFIX").unwrap_or_default(),
            ttl: Duration::from_secs(ttl_secs),
        };

        let defaults = QrSettings::default();
        let qr = QrSettings {
            width_px: parse_or(&get, QR_WIDTH_PX, defaults.width_px)?,
            margin_modules: parse_or(&get, QR_MARGIN, defaults.margin_modules)?,
            ecc: parse_or::<Ecc>(&get, "QR_ECC", defaults.ecc)?,
        };
        if !(21..=4096).contains(&qr.width_px) {
            return Err(ConfigError::Invalid {
                name: QR_WIDTH_PX,
                reason: "must be between 21 and 4096 pixels".into(),
            });
        }
        if qr.margin_modules > 32 {
            return Err(ConfigError::Invalid {
                name: QR_MARGIN,
                reason: "must be at most 32 modules".into(),
            });
        }

        let log_filter = get(LOG_LEVEL)
            .or_else(|| get("AWS_LAMBDA_LOG_LEVEL"))
            .unwrap_or_else(|| "info".into())
            .to_ascii_lowercase();
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            return Err(ConfigError::Invalid {
                name: LOG_LEVEL,
                reason: "use error, warn, info, debug, trace or a RUST_LOG-style filter".into(),
            });
        }

        #[cfg(feature = "imports")]
        let import = ImportSettings::from_lookup(&get)?;
        #[cfg(feature = "imports")]
        let s3 = S3Settings {
            force_path_style: parse_or(&get, "S3_FORCE_PATH_STYLE", false)?,
        };

        Ok(Config {
            database,
            #[cfg(feature = "imports")]
            import,
            #[cfg(feature = "imports")]
            s3,
            redis_url: SecretString::from(redis_url),
            cache,
            qr,
            log_filter,
            jwt_secret: get(JWT_SECRET).map(SecretString::from),
            #[cfg(feature = "imports")]
            import_bucket: get(IMPORT_BUCKET),
        })
    }

    /// The HS256 key; required by the functions that mint or verify JWTs.
    pub fn jwt_secret(&self) -> Result<&SecretString, ConfigError> {
        self.jwt_secret.as_ref().ok_or(ConfigError::Missing(
            JWT_SECRET,
            "set it to the same secret the Node app signs its JWTs with",
        ))
    }

    /// The bucket of uploads and reports; required by the importer and the HTTP API.
    #[cfg(feature = "imports")]
    pub fn import_bucket(&self) -> Result<&str, ConfigError> {
        self.import_bucket.as_deref().ok_or(ConfigError::Missing(
            IMPORT_BUCKET,
            "set it to the S3 bucket that receives uploads under imports/",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<String, String> = [
            (
                "NEON_DATABASE_URL",
                "postgres://app:s3cr3t-pw@db.example.com/app?sslmode=require",
            ),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in vars {
            map.insert(k.to_string(), v.to_string());
        }
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_apps() {
        let config = config(&[]).unwrap();
        assert_eq!(config.cache.ttl, Duration::from_secs(86_400));
        assert_eq!(config.cache.key_prefix, "");
        assert_eq!(
            config.qr,
            QrSettings {
                width_px: 400,
                margin_modules: 4,
                ecc: Ecc::H
            }
        );
        assert_eq!(config.log_filter, "info");
        assert!(config.jwt_secret().is_err());
    }

    #[test]
    fn missing_variables_are_named() {
        let error = Config::from_lookup(|_| None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("NEON_DATABASE_URL is not set"),
            "{error}"
        );
        let error = Config::from_lookup(|name| {
            (name == "DATABASE_URL").then(|| "postgres://localhost/db".to_string())
        })
        .unwrap_err();
        assert!(
            error.to_string().starts_with("REDIS_URL is not set"),
            "{error}"
        );
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (name, value) in [
            ("QR_CACHE_TTL_SECS", "a day"),
            ("QR_CACHE_TTL_SECS", "0"),
            ("QR_WIDTH_PX", "-4"),
            ("QR_WIDTH_PX", "5"),
            ("QR_MARGIN", "lots"),
            ("QR_ECC", "Z"),
            ("REDIS_URL", "http://127.0.0.1"),
            ("LOG_LEVEL", "loud[["),
            ("NEON_DATABASE_URL", "not a url"),
            ("NEON_DATABASE_URL", "postgres://h/db?sslmode=sometimes"),
        ] {
            let error = config(&[(name, value)]).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!("{name} is invalid")),
                "{name}={value}: {error}"
            );
        }
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let config = config(&[("JWT_SECRET", "jwt-topsecret-value")]).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(!shown.contains("jwt-topsecret-value"), "{shown}");
        assert_eq!(
            config.jwt_secret().unwrap().expose_secret(),
            "jwt-topsecret-value"
        );
        let error = config_error_with_password();
        assert!(!error.contains("hunter2"), "{error}");
    }

    fn config_error_with_password() -> String {
        config(&[(
            "NEON_DATABASE_URL",
            "postgres://u:hunter2@h/db?sslmode=maybe",
        )])
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn log_level_falls_back_to_lambdas_setting() {
        let config = config(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]).unwrap();
        assert_eq!(config.log_filter, "debug");
        let config = config_with_both();
        assert_eq!(config.log_filter, "warn");
    }

    fn config_with_both() -> Config {
        config(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG"), ("LOG_LEVEL", "warn")]).unwrap()
    }
}
