//! The environment becomes a typed `Config`, read in one place. Names are the Node app's, so one
//! `.env` serves both. Secrets are wrapped so `Debug` and logs cannot show them.
//!
//! Each secret variable `X` may instead be named by `X_PARAMETER`: the value then comes from
//! SSM Parameter Store (read by `secrets` at cold start) and is used exactly as if `X` held it,
//! so precedence, trimming and checks are the same for both sources.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

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
/// The Node app's own Redis variables (its `config/redis.js`); it never reads `REDIS_URL`.
const REDIS_HOST: &str = "REDIS_HOST";
const REDIS_PORT: &str = "REDIS_PORT";
const REDIS_USERNAME: &str = "REDIS_USERNAME";
const REDIS_PASSWORD: &str = "REDIS_PASSWORD";
const REDIS_DB: &str = "REDIS_DB";
const REDIS_APP_VARIABLES: [&str; 5] = [
    REDIS_HOST,
    REDIS_PORT,
    REDIS_USERNAME,
    REDIS_PASSWORD,
    REDIS_DB,
];
const QR_MARGIN: &str = "QR_MARGIN";
const QR_WIDTH_PX: &str = "QR_WIDTH_PX";
const QR_CACHE_TTL_SECS: &str = "QR_CACHE_TTL_SECS";
const LOG_LEVEL: &str = "LOG_LEVEL";
const STAGE: &str = "STAGE";
const JWT_SECRET: &str = "JWT_SECRET";
#[cfg(feature = "imports")]
const IMPORT_BUCKET: &str = "IMPORT_BUCKET";

/// The secret variables, each with the variable that may name an SSM parameter holding it.
const SECRET_VARIABLES: [(&str, &str); 5] = [
    (DATABASE_URL, "NEON_DATABASE_URL_PARAMETER"),
    (DATABASE_URL_ALIAS, "DATABASE_URL_PARAMETER"),
    (REDIS_URL, "REDIS_URL_PARAMETER"),
    (REDIS_PASSWORD, "REDIS_PASSWORD_PARAMETER"),
    (JWT_SECRET, "JWT_SECRET_PARAMETER"),
];

/// A secret variable whose value lives in SSM Parameter Store: `named_by` (`JWT_SECRET_PARAMETER`)
/// holds the parameter's name, and its value stands in for `variable` (`JWT_SECRET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretReference {
    pub variable: &'static str,
    pub named_by: &'static str,
    /// The parameter's name (`/qr/prod/jwt-secret`) or ARN, as given; not a secret.
    pub parameter: String,
}

impl SecretReference {
    /// Every reference `lookup` makes, in a fixed order.
    pub fn all_in(lookup: impl Fn(&str) -> Option<String>) -> Vec<SecretReference> {
        SECRET_VARIABLES
            .iter()
            .filter_map(|&(variable, named_by)| {
                let parameter = lookup(named_by)?.trim().to_owned();
                (!parameter.is_empty()).then_some(SecretReference {
                    variable,
                    named_by,
                    parameter,
                })
            })
            .collect()
    }
}

/// One parameter's value as read from the store.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub value: SecretString,
    /// The parameter's version, logged at cold start so a rotation can be seen taking effect.
    pub version: i64,
    /// Whether it is a SecureString (encrypted at rest with KMS).
    pub encrypted: bool,
}

/// The values read from the store, by parameter as referenced.
#[derive(Debug, Clone, Default)]
pub struct StoredSecrets(HashMap<String, StoredSecret>);

impl StoredSecrets {
    pub fn insert(&mut self, parameter: String, secret: StoredSecret) {
        self.0.insert(parameter, secret);
    }

    pub fn get(&self, parameter: &str) -> Option<&StoredSecret> {
        self.0.get(parameter)
    }
}

/// A secret this configuration took from the store: which variable, from where, which version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretOrigin {
    pub variable: &'static str,
    pub parameter: String,
    pub version: i64,
}

/// Everything the functions read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseSettings,
    /// `REDIS_URL`, or the URL of the server the app's `REDIS_HOST`, `REDIS_PORT`,
    /// `REDIS_USERNAME`, `REDIS_PASSWORD` and `REDIS_DB` name.
    pub redis_url: SecretString,
    pub cache: CacheSettings,
    pub qr: QrSettings,
    /// `LOG_LEVEL`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`.
    pub log_filter: String,
    /// `STAGE` (the template's `Stage`), the `Stage` dimension of every metric; `local` when
    /// unset.
    pub stage: String,
    #[cfg(feature = "imports")]
    pub import: ImportSettings,
    #[cfg(feature = "imports")]
    pub s3: S3Settings,
    /// Needed by the importer and the HTTP API only; see [`Config::jwt_secret`].
    jwt_secret: Option<SecretString>,
    /// Needed by the importer and the HTTP API only; see [`Config::import_bucket`].
    #[cfg(feature = "imports")]
    import_bucket: Option<String>,
    /// What start-up should say about settings that work but may not do what was meant; kept as
    /// data so reading the configuration stays free of side effects.
    pub warnings: Vec<ConfigWarning>,
    /// The secrets read from SSM Parameter Store, for start-up to log (never their values).
    pub from_store: Vec<SecretOrigin>,
}

/// A setting that works but may not do what its author meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// `REDIS_URL` is used while some of the app's own Redis variables, named here, are set
    /// too: the app reads only those, so it and these functions may use different servers.
    RedisUrlShadowsHost { ignored: Vec<&'static str> },
    /// `X` and `X_PARAMETER` are both set: the parameter's value is used and `X` ignored.
    ParameterShadowsVariable {
        variable: &'static str,
        named_by: &'static str,
        parameter: String,
    },
    /// A secret's parameter is a plain `String`, stored unencrypted in Parameter Store.
    ParameterNotEncrypted {
        named_by: &'static str,
        parameter: String,
    },
}

impl ConfigWarning {
    /// A stable name, for filtering logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigWarning::RedisUrlShadowsHost { .. } => "RedisUrlShadowsHost",
            ConfigWarning::ParameterShadowsVariable { .. } => "ParameterShadowsVariable",
            ConfigWarning::ParameterNotEncrypted { .. } => "ParameterNotEncrypted",
        }
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::RedisUrlShadowsHost { ignored } => write!(
                f,
                "REDIS_URL is set, and so {} {}: these functions use REDIS_URL and ignore {}, \
                 while the Node app reads REDIS_HOST/REDIS_PORT/REDIS_USERNAME/REDIS_PASSWORD/\
                 REDIS_DB and ignores REDIS_URL, so the two may be using different Redis \
                 servers; keep one form",
                if ignored.len() == 1 { "is" } else { "are" },
                ignored.join(", "),
                if ignored.len() == 1 { "it" } else { "them" },
            ),
            ConfigWarning::ParameterShadowsVariable {
                variable,
                named_by,
                parameter,
            } => write!(
                f,
                "{variable} and {named_by} are both set: the value of parameter {parameter} is \
                 used and {variable} is ignored; unset {variable} so the environment holds no \
                 secret"
            ),
            ConfigWarning::ParameterNotEncrypted {
                named_by,
                parameter,
            } => write!(
                f,
                "{named_by} names {parameter}, a plain String parameter: its secret is stored \
                 unencrypted; store it as a SecureString (aws ssm put-parameter --type \
                 SecureString --overwrite)"
            ),
        }
    }
}

impl Config {
    /// Reads the configuration through `lookup`, so tests never touch the process environment.
    /// A variable naming a parameter is refused: only start-up reads the store.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_sources(lookup, &StoredSecrets::default())
    }

    /// Reads the configuration through `lookup`, each secret variable named by an `X_PARAMETER`
    /// taking its value from `stored`. When `X` is set too, the parameter wins (with a warning):
    /// the store is where a rotation happens, so it must not be silently overridden.
    pub fn from_sources(
        lookup: impl Fn(&str) -> Option<String>,
        stored: &StoredSecrets,
    ) -> Result<Self, ConfigError> {
        let references = SecretReference::all_in(&lookup);
        let mut warnings = Vec::new();
        let mut from_store = Vec::new();
        for reference in &references {
            let secret = stored
                .get(&reference.parameter)
                .ok_or(ConfigError::ParameterUnread {
                    named_by: reference.named_by,
                    variable: reference.variable,
                })?;
            if lookup(reference.variable).is_some_and(|value| !value.trim().is_empty()) {
                warnings.push(ConfigWarning::ParameterShadowsVariable {
                    variable: reference.variable,
                    named_by: reference.named_by,
                    parameter: reference.parameter.clone(),
                });
            }
            if !secret.encrypted {
                warnings.push(ConfigWarning::ParameterNotEncrypted {
                    named_by: reference.named_by,
                    parameter: reference.parameter.clone(),
                });
            }
            from_store.push(SecretOrigin {
                variable: reference.variable,
                parameter: reference.parameter.clone(),
                version: secret.version,
            });
        }
        let lookup = |name: &str| match references.iter().find(|r| r.variable == name) {
            Some(reference) => stored
                .get(&reference.parameter)
                .map(|secret| secret.value.expose_secret().to_owned()),
            None => lookup(name),
        };

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

        // The app hands its username and password to Redis untrimmed; so do we.
        let exact = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let redis_url = match get(REDIS_URL) {
            Some(url) => {
                check_redis_url(&url)?;
                let ignored: Vec<&'static str> = REDIS_APP_VARIABLES
                    .into_iter()
                    .filter(|name| exact(name).is_some())
                    .collect();
                if !ignored.is_empty() {
                    warnings.push(ConfigWarning::RedisUrlShadowsHost { ignored });
                }
                url
            }
            None => redis_url_from_app_variables(&get, &exact)?,
        };

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

        let stage = get(STAGE).unwrap_or_else(|| crate::telemetry::LOCAL_STAGE.into());
        // A CloudWatch dimension value, and what an alarm names: plain characters keep the
        // template's `!Ref Stage` and the emitted value comparable.
        if stage.len() > 64
            || !stage
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::Invalid {
                name: STAGE,
                reason: "use at most 64 letters, digits, '-' or '_' (e.g. dev, staging, prod)"
                    .into(),
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
            stage,
            jwt_secret: get(JWT_SECRET).map(SecretString::from),
            #[cfg(feature = "imports")]
            import_bucket: get(IMPORT_BUCKET),
            warnings,
            from_store,
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

fn check_redis_url(url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(ConfigError::Invalid {
            name: REDIS_URL,
            reason: "must start with redis:// or rediss://".into(),
        });
    }
    redis::Client::open(url).map_err(|_| ConfigError::Invalid {
        name: REDIS_URL,
        reason: "not a valid Redis URL".into(),
    })?;
    Ok(())
}

/// The URL of the server the Node app's own variables name, read as its `config/redis.js`
/// reads them: plain TCP (the app sets no TLS), port 6379 and database 0 unless set. Building a
/// URL keeps one way to connect, and redis-rs selects the URL's database on every reconnection.
fn redis_url_from_app_variables(
    get: &impl Fn(&str) -> Option<String>,
    exact: &impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let host = get(REDIS_HOST).ok_or(ConfigError::Missing(
        REDIS_URL,
        "set it to redis://host:6379 (rediss://... for TLS), or set REDIS_HOST, with \
         REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD and REDIS_DB as needed, as the Node app \
         reads them",
    ))?;
    let host = url_host(&host)?;
    let port = match get(REDIS_PORT) {
        None => 6379,
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| ConfigError::Invalid {
                name: REDIS_PORT,
                reason: format!("`{text}` is not a port number from 1 to 65535"),
            })?,
    };
    let db = match get(REDIS_DB) {
        None => 0,
        Some(text) => text.parse::<u32>().map_err(|_| ConfigError::Invalid {
            name: REDIS_DB,
            reason: format!("`{text}` is not a database index (0, 1, 2, ...)"),
        })?,
    };
    let credentials = match (exact(REDIS_USERNAME), exact(REDIS_PASSWORD)) {
        (None, None) => String::new(),
        (None, Some(password)) => format!(":{}@", percent_encode(&password)),
        (Some(username), Some(password)) => {
            format!(
                "{}:{}@",
                percent_encode(&username),
                percent_encode(&password)
            )
        }
        // redis-rs logs in only when there is a password: the username alone would be dropped
        // and the connection would run as the default user, not the one named.
        (Some(_), None) => {
            return Err(ConfigError::Missing(
                REDIS_PASSWORD,
                "REDIS_USERNAME is set, and that user logs in with its password",
            ))
        }
    };
    let url = format!("redis://{credentials}{host}:{port}/{db}");
    // What the host can still get wrong (a wildcard address such as 0.0.0.0) shows here.
    redis::Client::open(url.as_str()).map_err(|_| ConfigError::Invalid {
        name: REDIS_HOST,
        reason: "is not an address a client can connect to".into(),
    })?;
    Ok(url)
}

/// `REDIS_HOST` as the host part of a URL. The app gives it to the socket as it is, so only a
/// bare name or address means anything there, and any other character could change what the URL
/// says (`a@b`, `a/b`, `a#b`). The value is never echoed: a pasted URL may carry a password.
fn url_host(host: &str) -> Result<String, ConfigError> {
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
    {
        return Err(ConfigError::Invalid {
            name: REDIS_HOST,
            reason: "must be a host name or IP address alone, e.g. redis.example.com or \
                     10.0.0.5: no scheme, credentials, path or spaces (REDIS_PORT, \
                     REDIS_USERNAME, REDIS_PASSWORD and REDIS_DB carry the rest)"
                .into(),
        });
    }
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{host}]"));
    }
    if host.contains(':') {
        return Err(ConfigError::Invalid {
            name: REDIS_HOST,
            reason: "must be a host name or IP address alone: put the port in REDIS_PORT".into(),
        });
    }
    Ok(host.to_owned())
}

/// Percent-encodes all but RFC 3986's unreserved characters, so any username or password comes
/// back intact from the URL (redis-rs percent-decodes both).
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
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
        assert_eq!(config.stage, "local");
        assert!(config.jwt_secret().is_err());
    }

    #[test]
    fn stage_is_read_and_checked() {
        assert_eq!(config(&[("STAGE", "prod")]).unwrap().stage, "prod");
        let error = config(&[("STAGE", "prod stage")]).unwrap_err().to_string();
        assert_eq!(
            error,
            "STAGE is invalid: use at most 64 letters, digits, '-' or '_' (e.g. dev, staging, prod)"
        );
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

    /// The app's own Redis variables in place of REDIS_URL.
    fn config_from_host(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all = vec![("REDIS_URL", "")];
        all.extend_from_slice(vars);
        config(&all)
    }

    fn connection_info(config: &Config) -> redis::ConnectionInfo {
        redis::Client::open(config.redis_url.expose_secret())
            .unwrap()
            .get_connection_info()
            .clone()
    }

    #[test]
    fn redis_url_is_used_as_it_is() {
        let config = config(&[("REDIS_URL", "rediss://:pw@cache.example.com:6380/2")]).unwrap();
        assert_eq!(
            config.redis_url.expose_secret(),
            "rediss://:pw@cache.example.com:6380/2"
        );
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn redis_host_alone_takes_the_apps_defaults() {
        let config = config_from_host(&[("REDIS_HOST", "redis.internal")]).unwrap();
        assert_eq!(
            config.redis_url.expose_secret(),
            "redis://redis.internal:6379/0"
        );
        assert!(config.warnings.is_empty());
        let info = connection_info(&config);
        assert_eq!(
            info.addr(),
            &redis::ConnectionAddr::Tcp("redis.internal".into(), 6379)
        );
        let redis = info.redis_settings();
        assert_eq!(
            (redis.db(), redis.username(), redis.password()),
            (0, None, None)
        );
    }

    #[test]
    fn every_app_variable_reaches_the_connection() {
        let password = "p@ss:w/rd %41?#[]+&=~é";
        let config = config_from_host(&[
            ("REDIS_HOST", "10.0.0.5"),
            ("REDIS_PORT", "6380"),
            ("REDIS_USERNAME", "warm:er@app"),
            ("REDIS_PASSWORD", password),
            ("REDIS_DB", "5"),
        ])
        .unwrap();
        let info = connection_info(&config);
        assert_eq!(
            info.addr(),
            &redis::ConnectionAddr::Tcp("10.0.0.5".into(), 6380),
            "plain TCP, as the app connects"
        );
        let redis = info.redis_settings();
        assert_eq!(redis.db(), 5);
        assert_eq!(redis.username(), Some("warm:er@app"));
        assert_eq!(redis.password(), Some(password));
    }

    #[test]
    fn a_password_alone_logs_in_as_the_default_user() {
        let config =
            config_from_host(&[("REDIS_HOST", "h"), ("REDIS_PASSWORD", " spaced out ")]).unwrap();
        let info = connection_info(&config);
        assert_eq!(info.redis_settings().username(), None);
        assert_eq!(
            info.redis_settings().password(),
            Some(" spaced out "),
            "untrimmed, as the app passes it"
        );
    }

    #[test]
    fn an_ipv6_host_is_bracketed_in_the_url() {
        let config = config_from_host(&[("REDIS_HOST", "::1"), ("REDIS_PORT", "7000")]).unwrap();
        assert_eq!(
            connection_info(&config).addr(),
            &redis::ConnectionAddr::Tcp("::1".into(), 7000)
        );
    }

    #[test]
    fn any_username_and_password_come_back_intact() {
        bolero::check!()
            .with_type::<(String, String)>()
            .for_each(|(username, password)| {
                let mut vars = vec![("REDIS_HOST", "h"), ("REDIS_PASSWORD", password.as_str())];
                if !username.is_empty() {
                    vars.push(("REDIS_USERNAME", username.as_str()));
                }
                let result = config_from_host(&vars);
                if password.is_empty() {
                    if username.is_empty() {
                        assert!(result.is_ok());
                    } else {
                        assert!(result.is_err());
                    }
                    return;
                }
                let info = connection_info(&result.unwrap());
                let redis = info.redis_settings();
                assert_eq!(redis.password(), Some(password.as_str()));
                assert_eq!(
                    redis.username(),
                    (!username.is_empty()).then_some(username.as_str())
                );
            });
    }

    #[test]
    fn without_redis_url_or_host_both_forms_are_named() {
        for vars in [
            &[][..],
            &[("REDIS_PORT", "6379"), ("REDIS_PASSWORD", "pw")][..],
        ] {
            let error = config_from_host(vars).unwrap_err().to_string();
            assert!(error.starts_with("REDIS_URL is not set"), "{error}");
            for name in [
                "REDIS_HOST",
                "REDIS_PORT",
                "REDIS_USERNAME",
                "REDIS_PASSWORD",
                "REDIS_DB",
            ] {
                assert!(error.contains(name), "{name}: {error}");
            }
        }
    }

    #[test]
    fn malformed_app_redis_variables_name_the_variable() {
        for (name, value) in [
            ("REDIS_PORT", "0"),
            ("REDIS_PORT", "65536"),
            ("REDIS_PORT", "-1"),
            ("REDIS_PORT", "6379x"),
            ("REDIS_PORT", "six"),
            ("REDIS_DB", "-1"),
            ("REDIS_DB", "one"),
            ("REDIS_DB", "1.5"),
            ("REDIS_HOST", "a/b"),
            ("REDIS_HOST", "user@h"),
            ("REDIS_HOST", "my host"),
            ("REDIS_HOST", "my\thost"),
            ("REDIS_HOST", "redis://h"),
            ("REDIS_HOST", "h#x"),
            ("REDIS_HOST", "h?x"),
            ("REDIS_HOST", "h%41"),
            ("REDIS_HOST", "h:6380"),
            ("REDIS_HOST", "0.0.0.0"),
        ] {
            let mut vars = vec![(name, value)];
            if name != "REDIS_HOST" {
                vars.push(("REDIS_HOST", "h"));
            }
            let error = config_from_host(&vars).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!("{name} is invalid")),
                "{name}={value}: {error}"
            );
        }
        let error = config_from_host(&[("REDIS_HOST", "h:6380")]).unwrap_err();
        assert!(error.to_string().contains("REDIS_PORT"), "{error}");
    }

    #[test]
    fn a_username_without_its_password_is_refused() {
        let error = config_from_host(&[("REDIS_HOST", "h"), ("REDIS_USERNAME", "warmer")])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("REDIS_PASSWORD is not set"), "{error}");
    }

    #[test]
    fn the_warning_appears_exactly_when_both_forms_are_set() {
        assert!(config(&[]).unwrap().warnings.is_empty());
        assert!(config_from_host(&[
            ("REDIS_HOST", "h"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "pw")
        ])
        .unwrap()
        .warnings
        .is_empty());
        for name in [
            "REDIS_HOST",
            "REDIS_PORT",
            "REDIS_USERNAME",
            "REDIS_PASSWORD",
            "REDIS_DB",
        ] {
            // The shadowed value is not checked: REDIS_URL is what connects.
            let config = config(&[(name, "not checked")]).unwrap();
            assert_eq!(
                config.warnings,
                [ConfigWarning::RedisUrlShadowsHost {
                    ignored: vec![name]
                }],
                "{name}"
            );
            assert_eq!(
                config.redis_url.expose_secret(),
                "redis://127.0.0.1:6379",
                "REDIS_URL wins"
            );
        }
        let config = config(&[
            ("REDIS_HOST", "h"),
            ("REDIS_PORT", "1"),
            ("REDIS_USERNAME", "u"),
            ("REDIS_PASSWORD", "pw"),
            ("REDIS_DB", "3"),
        ])
        .unwrap();
        assert_eq!(config.warnings.len(), 1);
        let warning = &config.warnings[0];
        assert_eq!(warning.kind(), "RedisUrlShadowsHost");
        assert_eq!(
            warning.to_string(),
            "REDIS_URL is set, and so are REDIS_HOST, REDIS_PORT, REDIS_USERNAME, \
             REDIS_PASSWORD, REDIS_DB: these functions use REDIS_URL and ignore them, while the \
             Node app reads REDIS_HOST/REDIS_PORT/REDIS_USERNAME/REDIS_PASSWORD/REDIS_DB and \
             ignores REDIS_URL, so the two may be using different Redis servers; keep one form"
        );
    }

    #[test]
    fn redis_passwords_never_show_in_debug_warnings_or_errors() {
        let password = "Redis-P@ss:word/%";
        let encoded = "Redis-P%40ss%3Aword%2F%25";
        let config = config_from_host(&[
            ("REDIS_HOST", "h"),
            ("REDIS_USERNAME", "warmer"),
            ("REDIS_PASSWORD", password),
        ])
        .unwrap();
        assert!(config.redis_url.expose_secret().contains(encoded));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("P@ss") && !shown.contains(encoded),
            "{shown}"
        );

        let config = self::config(&[
            ("REDIS_URL", "redis://:url-P@ss@127.0.0.1:6379"),
            ("REDIS_PASSWORD", password),
        ])
        .unwrap();
        let shown = format!("{config:?} {}", config.warnings[0]);
        assert!(
            !shown.contains("P@ss") && !shown.contains(encoded),
            "{shown}"
        );

        for vars in [
            &[("REDIS_HOST", "redis://:host-P@ss@h")][..],
            &[
                ("REDIS_HOST", "h"),
                ("REDIS_PORT", "x"),
                ("REDIS_PASSWORD", password),
            ],
            &[("REDIS_HOST", "0.0.0.0"), ("REDIS_PASSWORD", password)],
        ] {
            let error = config_from_host(vars).unwrap_err();
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("P@ss"), "{shown}");
        }
        let error = self::config(&[("REDIS_URL", "redis://:url-P@ss@h:6379/x")]).unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("P@ss"), "{shown}");
    }

    fn stored(entries: &[(&str, &str, bool)]) -> StoredSecrets {
        let mut stored = StoredSecrets::default();
        for (i, (parameter, value, encrypted)) in entries.iter().enumerate() {
            stored.insert(
                parameter.to_string(),
                StoredSecret {
                    value: SecretString::from(value.to_string()),
                    version: i as i64 + 1,
                    encrypted: *encrypted,
                },
            );
        }
        stored
    }

    fn from_sources(vars: &[(&str, &str)], stored: &StoredSecrets) -> Result<Config, ConfigError> {
        Config::from_sources(
            |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            },
            stored,
        )
    }

    #[test]
    fn a_parameters_value_stands_for_its_variable() {
        let stored = stored(&[
            (
                "/qr/db",
                "postgres://app:db-pw@db.example.com/app?sslmode=require",
                true,
            ),
            ("/qr/redis-password", " spaced pw ", true),
            ("/qr/jwt", "  jwt-from-store\n", true),
        ]);
        let config = from_sources(
            &[
                ("DATABASE_URL_PARAMETER", " /qr/db "),
                ("REDIS_HOST", "redis.internal"),
                ("REDIS_PASSWORD_PARAMETER", "/qr/redis-password"),
                ("JWT_SECRET_PARAMETER", "/qr/jwt"),
            ],
            &stored,
        )
        .unwrap();
        assert!(config.database.describe().starts_with("db.example.com/app"));
        assert_eq!(
            connection_info(&config).redis_settings().password(),
            Some(" spaced pw "),
            "untrimmed, as REDIS_PASSWORD itself is"
        );
        assert_eq!(
            config.jwt_secret().unwrap().expose_secret(),
            "jwt-from-store",
            "trimmed, as JWT_SECRET itself is"
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(
            config.from_store,
            [
                SecretOrigin {
                    variable: "DATABASE_URL",
                    parameter: "/qr/db".into(),
                    version: 1
                },
                SecretOrigin {
                    variable: "REDIS_PASSWORD",
                    parameter: "/qr/redis-password".into(),
                    version: 2
                },
                SecretOrigin {
                    variable: "JWT_SECRET",
                    parameter: "/qr/jwt".into(),
                    version: 3
                },
            ]
        );
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("db-pw")
                && !shown.contains("spaced pw")
                && !shown.contains("jwt-from-store"),
            "{shown}"
        );
    }

    #[test]
    fn the_parameter_wins_over_its_variable_with_a_warning_naming_no_value() {
        let stored = stored(&[("/qr/jwt", "jwt-from-store", true)]);
        let config = from_sources(
            &[
                ("NEON_DATABASE_URL", "postgres://127.0.0.1/app"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("JWT_SECRET", "jwt-from-env"),
                ("JWT_SECRET_PARAMETER", "/qr/jwt"),
            ],
            &stored,
        )
        .unwrap();
        assert_eq!(
            config.jwt_secret().unwrap().expose_secret(),
            "jwt-from-store"
        );
        assert_eq!(
            config.warnings,
            [ConfigWarning::ParameterShadowsVariable {
                variable: "JWT_SECRET",
                named_by: "JWT_SECRET_PARAMETER",
                parameter: "/qr/jwt".into()
            }]
        );
        assert_eq!(
            config.warnings[0].to_string(),
            "JWT_SECRET and JWT_SECRET_PARAMETER are both set: the value of parameter /qr/jwt \
             is used and JWT_SECRET is ignored; unset JWT_SECRET so the environment holds no \
             secret"
        );
    }

    #[test]
    fn a_plain_string_parameter_works_with_a_warning() {
        let stored = stored(&[("/qr/redis", "redis://:pw@127.0.0.1:6379", false)]);
        let config = from_sources(
            &[
                ("NEON_DATABASE_URL", "postgres://127.0.0.1/app"),
                ("REDIS_URL_PARAMETER", "/qr/redis"),
            ],
            &stored,
        )
        .unwrap();
        assert_eq!(
            config.redis_url.expose_secret(),
            "redis://:pw@127.0.0.1:6379"
        );
        assert_eq!(config.warnings.len(), 1);
        assert_eq!(config.warnings[0].kind(), "ParameterNotEncrypted");
        assert!(!config.warnings[0].to_string().contains("pw@"));
    }

    #[test]
    fn a_stored_value_is_checked_as_the_variable_would_be() {
        let stored = stored(&[("/qr/redis", "http://:pw@127.0.0.1", true)]);
        let error = from_sources(
            &[
                ("NEON_DATABASE_URL", "postgres://127.0.0.1/app"),
                ("REDIS_URL_PARAMETER", "/qr/redis"),
            ],
            &stored,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "REDIS_URL is invalid: must start with redis:// or rediss://"
        );
    }

    #[test]
    fn a_parameter_named_where_no_store_is_read_is_refused() {
        let error = config(&[("JWT_SECRET_PARAMETER", "/qr/jwt")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "JWT_SECRET_PARAMETER is set, but this program does not read SSM Parameter Store: \
             set JWT_SECRET itself"
        );
    }
}
