//! Postgres: the connection (TLS as `sslmode` asks, SNI for Neon, reconnect after Neon suspends an
//! idle compute) and the queries the jobs share. Every statement goes through the unnamed
//! statement (`query_typed`), so PgBouncer in transaction mode works as well as a direct
//! connection.

use std::sync::Arc;
use std::time::Duration;

use native_tls::TlsConnector;
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, RowStream};
use url::Url;

use crate::error::{ConfigError, Error};
use crate::kind::Kind;

/// TLS as libpq's `sslmode` defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed `NEON_DATABASE_URL`. `Debug` shows no password (tokio-postgres redacts it).
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub tls: TlsMode,
    config: tokio_postgres::Config,
}

impl DatabaseSettings {
    /// Parses a `postgres://` URL, accepting libpq's `sslmode` values (tokio-postgres itself knows
    /// only disable/prefer/require) and Neon's `options=endpoint%3D...`.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            name: "NEON_DATABASE_URL",
            reason,
        };
        let mut parsed =
            Url::parse(url).map_err(|error| invalid(format!("not a URL ({error})")))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(invalid(
                "must start with postgres:// or postgresql://".into(),
            ));
        }
        let mut tls = TlsMode::Prefer;
        let mut kept = Vec::new();
        for (key, value) in parsed.query_pairs() {
            if key == "sslmode" {
                tls = match value.as_ref() {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => return Err(invalid(format!("sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"))),
                };
            } else {
                kept.push((key.into_owned(), value.into_owned()));
            }
        }
        let sslmode = match tls {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => "require",
        };
        parsed
            .query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("sslmode", sslmode);
        let mut config: tokio_postgres::Config = parsed
            .as_str()
            .parse()
            .map_err(|error: tokio_postgres::Error| invalid(error.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("qr-functions");
        }
        Ok(DatabaseSettings { tls, config })
    }

    /// The session `options` (Neon's `endpoint=...`), for tests and diagnostics.
    pub fn options(&self) -> Option<&str> {
        self.config.get_options()
    }

    /// Where it connects, without credentials: for log lines.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let db = self.config.get_dbname().unwrap_or("(default)");
        format!("{host}/{db} (sslmode {:?})", self.tls)
    }

    fn tls_connector(&self) -> Result<MakeTlsConnector, Error> {
        let mut builder = TlsConnector::builder();
        // libpq checks nothing under prefer/require and only the chain under verify-ca; SNI is
        // sent in every mode, which Neon's proxy routes on.
        match self.tls {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => {
                builder
                    .danger_accept_invalid_certs(true)
                    .danger_accept_invalid_hostnames(true);
            }
            TlsMode::VerifyCa => {
                builder.danger_accept_invalid_hostnames(true);
            }
            TlsMode::VerifyFull => {}
        }
        Ok(MakeTlsConnector::new(builder.build()?))
    }

    /// Opens a connection and drives it on the runtime.
    pub async fn connect(&self) -> Result<Client, Error> {
        let connecting = |source| Error::postgres("connecting", source);
        // Making a TLS connector parses the system's CA bundle, which a connection without TLS
        // never uses: 7-9 ms of a 12-16 ms cold start (BENCHMARKS.md, "Cold start and size").
        if self.tls == TlsMode::Disable {
            let (client, connection) = self.config.connect(NoTls).await.map_err(connecting)?;
            drive(connection);
            return Ok(client);
        }
        let (client, connection) = self
            .config
            .connect(self.tls_connector()?)
            .await
            .map_err(connecting)?;
        drive(connection);
        Ok(client)
    }
}

/// Runs a connection's I/O on the runtime until it closes.
fn drive<T>(connection: tokio_postgres::Connection<tokio_postgres::Socket, T>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %error, "Postgres connection closed");
        }
    });
}

/// One connection kept across invocations: made at cold start when it can be, checked before
/// each use, and made again when the server has closed it.
pub struct Database {
    settings: DatabaseSettings,
    /// The kept client and when it last answered.
    client: tokio::sync::Mutex<Option<(Arc<Client>, std::time::Instant)>>,
}

/// A kept connection that answered this recently is used without asking again: requests a
/// second apart need no extra round trip, and one idle longer (Neon closes idle ones) is checked.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// How long a cancel request for a timed-out statement may take; past it, the server's own
/// timeouts end the statement.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

impl Database {
    pub fn new(settings: DatabaseSettings) -> Self {
        Database {
            settings,
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &DatabaseSettings {
        &self.settings
    }

    /// A live client: the kept one if it still answers, else a new one.
    pub async fn client(&self) -> Result<Arc<Client>, Error> {
        let mut slot = self.client.lock().await;
        if let Some((client, answered)) = slot.as_mut() {
            if !client.is_closed() {
                if answered.elapsed() < TRUSTED_FOR {
                    return Ok(Arc::clone(client));
                }
                if Self::answers(client).await {
                    *answered = std::time::Instant::now();
                    return Ok(Arc::clone(client));
                }
            }
            tracing::info!("Postgres connection lost; reconnecting");
        }
        *slot = None;
        let client = Arc::new(self.settings.connect().await?);
        *slot = Some((Arc::clone(&client), std::time::Instant::now()));
        Ok(client)
    }

    /// Runs `work` on a live client, giving up after `deadline` (connecting included) with
    /// [`Error::DatabaseTimeout`]. A path that stopped answering (a pooler gone silent, a
    /// half-open connection after a failover) would otherwise hold this call, and every later
    /// one queued behind the kept connection, until the function timed out: so the connection
    /// is dropped, the next call connects afresh, and the statement is cancelled on the server.
    ///
    /// A kept connection the server has just closed (a restart, a pooler recycling it) may not
    /// know it yet: `work` is run once more on a new connection when the first fails so.
    pub async fn within<T, Work>(
        &self,
        context: &'static str,
        deadline: Duration,
        work: impl Fn(Arc<Client>) -> Work,
    ) -> Result<T, Error>
    where
        Work: std::future::Future<Output = Result<T, Error>>,
    {
        let mut used: Option<Arc<Client>> = None;
        let attempt = async {
            let client = self.client().await?;
            used = Some(Arc::clone(&client));
            match work(Arc::clone(&client)).await {
                Err(Error::Postgres { source, .. }) if connection_lost(&source) => {
                    self.forget(&client).await;
                    let client = self.client().await?;
                    used = Some(Arc::clone(&client));
                    work(client).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => {
                self.abandon(used);
                Err(Error::DatabaseTimeout {
                    context,
                    after: deadline,
                })
            }
        }
    }

    /// Forgets the kept connection if it is `client`: the next call connects afresh.
    pub async fn forget(&self, client: &Arc<Client>) {
        let mut slot = self.client.lock().await;
        if slot
            .as_ref()
            .is_some_and(|(kept, _)| Arc::ptr_eq(kept, client))
        {
            *slot = None;
        }
    }

    /// Forgets the kept connection when it is the one that did not answer (or when the check
    /// of it did not), and asks the server to cancel what it was running.
    fn abandon(&self, used: Option<Arc<Client>>) {
        // Held only by a caller that is connecting afresh, which replaces the slot anyway.
        if let Ok(mut slot) = self.client.try_lock() {
            let stuck = match (slot.as_ref(), used.as_ref()) {
                (Some((kept, _)), Some(used)) => Arc::ptr_eq(kept, used),
                (Some(_), None) => true,
                (None, _) => false,
            };
            if stuck {
                *slot = None;
            }
        }
        let (Some(client), Ok(tls)) = (used, self.settings.tls_connector()) else {
            return;
        };
        let cancel = client.cancel_token();
        tokio::spawn(async move {
            if let Ok(Err(error)) =
                tokio::time::timeout(CANCEL_WAIT, cancel.cancel_query(tls)).await
            {
                tracing::debug!(error = %error, "cancelling a timed-out statement failed");
            }
        });
    }

    async fn answers(client: &Client) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(3), client.simple_query("")).await,
            Ok(Ok(_))
        )
    }
}

/// Whether `error` says the connection is gone (closed, reset, the server shutting down)
/// rather than that the statement failed.
fn connection_lost(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    error.is_closed()
        || error.code().is_some_and(|code| {
            *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN
        })
        || std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
}

/// Runs `work` in a transaction on `client`: committed when it succeeds, rolled back when it
/// fails, so the kept connection is never left inside an aborted transaction.
pub async fn in_transaction<T, E: From<Error>>(
    client: &Client,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| Error::postgres("starting a transaction", e))?;
    match work.await {
        Ok(value) => {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| Error::postgres("committing", e))?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = client.batch_execute("ROLLBACK").await {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(error)
        }
    }
}

/// Which rows a warm covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFilter {
    /// Only these ids (after a token regeneration); empty means every row.
    pub ids: Vec<uuid::Uuid>,
    /// This invocation's share of the rows.
    pub shard: Option<Shard>,
}

/// Shard `index` of `count`: rows are split by a hash of their id, so the shards of one split
/// cover every row exactly once. Read back from a summary (the sharded warm's merge step)
/// through [`Shard::new`], so a shard that cannot exist is refused there too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "ShardFields")]
pub struct Shard {
    index: i64,
    count: i64,
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index} of {count} does not exist: need 0 <= shard < shards"
            ));
        }
        Ok(Shard {
            index: index.into(),
            count: count.into(),
        })
    }

    pub fn index(&self) -> i64 {
        self.index
    }

    pub fn count(&self) -> i64 {
        self.count
    }
}

/// A [`Shard`] as serialized, before it is checked.
#[derive(serde::Deserialize)]
struct ShardFields {
    index: u32,
    count: u32,
}

impl TryFrom<ShardFields> for Shard {
    type Error = String;

    fn try_from(fields: ShardFields) -> Result<Self, Self::Error> {
        Shard::new(fields.index, fields.count)
    }
}

type Params<'a> = Vec<(&'a (dyn ToSql + Sync), Type)>;

/// Rows that have a token, as the warm reads them.
const HAS_TOKEN: &str = "qr_code_token IS NOT NULL AND qr_code_token <> ''";
/// Rows the app would mint a token for on their first view (`if (!row.qr_code_token)`).
const LACKS_TOKEN: &str = "(qr_code_token IS NULL OR qr_code_token = '')";

impl RowFilter {
    fn condition(&self) -> (String, Params<'_>) {
        self.condition_on(HAS_TOKEN)
    }

    fn condition_on(&self, tokens: &str) -> (String, Params<'_>) {
        let mut sql = String::from(tokens);
        let mut params: Params<'_> = Vec::new();
        if !self.ids.is_empty() {
            params.push((&self.ids, Type::UUID_ARRAY));
            sql.push_str(&format!(" AND id = ANY(${})", params.len()));
        }
        if let Some(shard) = &self.shard {
            params.push((&shard.count, Type::INT8));
            params.push((&shard.index, Type::INT8));
            // hashtext is stable across servers and versions, so every shard agrees on the split.
            sql.push_str(&format!(
                " AND mod(abs(hashtext(id::text)::bigint), ${}) = ${}",
                params.len() - 1,
                params.len()
            ));
        }
        (sql, params)
    }
}

/// How many rows of `kind` match `filter`, for progress and the "Found N" line.
pub async fn count_tokens(client: &Client, kind: Kind, filter: &RowFilter) -> Result<u64, Error> {
    let (condition, params) = filter.condition();
    let sql = format!("SELECT count(*) FROM {} WHERE {condition}", kind.table());
    let rows = client
        .query_typed(&sql, &params)
        .await
        .map_err(|source| Error::postgres("counting rows with QR tokens", source))?;
    let count: i64 = rows.first().map(|row| row.get(0)).unwrap_or(0);
    Ok(count.max(0) as u64)
}

/// Streams `(id, qr_code_token)` of the matching rows; rows arrive as the server sends them, so
/// memory stays flat whatever the table's size.
pub async fn stream_tokens(
    client: &Client,
    kind: Kind,
    filter: &RowFilter,
) -> Result<RowStream, Error> {
    let (condition, params) = filter.condition();
    let sql = format!(
        "SELECT id::text, qr_code_token FROM {} WHERE {condition}",
        kind.table()
    );
    client
        .query_typed_raw(&sql, params)
        .await
        .map_err(|source| Error::postgres("reading QR tokens", source))
}

/// Natural keys (`registration_no`, `stall_number`) and ids of the matching rows that have no
/// token yet, for minting.
pub async fn rows_lacking_tokens(
    client: &Client,
    kind: Kind,
    filter: &RowFilter,
) -> Result<Vec<(uuid::Uuid, String)>, Error> {
    let (condition, params) = filter.condition_on(LACKS_TOKEN);
    let sql = format!(
        "SELECT id, {} FROM {} WHERE {condition}",
        kind.natural_key(),
        kind.table()
    );
    let rows = client
        .query_typed(&sql, &params)
        .await
        .map_err(|source| Error::postgres("reading rows without QR tokens", source))?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|source| Error::postgres("reading rows without QR tokens", source))
}

/// Stores minted tokens, each only where the row still has none: a token the app minted
/// meanwhile wins (under READ COMMITTED the condition is checked again on the row as the
/// other transaction left it). Returns the ids that took ours.
pub async fn store_minted(
    client: &Client,
    kind: Kind,
    minted: &[(uuid::Uuid, String)],
) -> Result<Vec<uuid::Uuid>, Error> {
    let (ids, tokens): (Vec<uuid::Uuid>, Vec<&str>) = minted
        .iter()
        .map(|(id, token)| (*id, token.as_str()))
        .unzip();
    let sql = format!(
        "UPDATE {table} AS t SET qr_code_token = m.token, updated_at = NOW() \
         FROM unnest($1::uuid[], $2::text[]) AS m(id, token) \
         WHERE t.id = m.id AND (t.qr_code_token IS NULL OR t.qr_code_token = '') RETURNING t.id",
        table = kind.table()
    );
    let rows = client
        .query_typed(
            &sql,
            &[(&ids, Type::UUID_ARRAY), (&tokens, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|source| Error::postgres("storing minted QR tokens", source))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_sslmodes_map_to_tls_modes() {
        for (mode, expected) in [
            ("disable", TlsMode::Disable),
            ("prefer", TlsMode::Prefer),
            ("require", TlsMode::Require),
            ("verify-ca", TlsMode::VerifyCa),
            ("verify-full", TlsMode::VerifyFull),
        ] {
            let settings =
                DatabaseSettings::parse(&format!("postgres://u:p@h/db?sslmode={mode}")).unwrap();
            assert_eq!(settings.tls, expected, "{mode}");
        }
        assert_eq!(
            DatabaseSettings::parse("postgres://h/db").unwrap().tls,
            TlsMode::Prefer
        );
    }

    #[test]
    fn neon_urls_keep_their_endpoint_option_and_channel_binding() {
        let url = "postgresql://neondb_owner:npg_pw@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require&channel_binding=require&options=endpoint%3Dep-cool-darkness-123456";
        let settings = DatabaseSettings::parse(url).unwrap();
        assert_eq!(settings.tls, TlsMode::Require);
        assert_eq!(settings.options(), Some("endpoint=ep-cool-darkness-123456"));
        let described = settings.describe();
        assert_eq!(
            described,
            "ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb (sslmode Require)"
        );
        assert!(!format!("{settings:?}").contains("npg_pw"));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        assert!(DatabaseSettings::parse("mysql://h/db").is_err());
        assert!(DatabaseSettings::parse("postgres://h/db?sslmode=bogus").is_err());
        assert!(DatabaseSettings::parse("postgres://h/db?nonsense=1").is_err());
    }

    #[test]
    fn filter_adds_ids_and_shard_conditions() {
        let filter = RowFilter {
            ids: vec![uuid::Uuid::nil()],
            shard: Some(Shard::new(1, 4).unwrap()),
        };
        let (sql, params) = filter.condition();
        assert!(sql.contains("id = ANY($1)"), "{sql}");
        assert!(
            sql.contains("mod(abs(hashtext(id::text)::bigint), $2) = $3"),
            "{sql}"
        );
        assert_eq!(params.len(), 3);
    }

    #[test]
    fn shards_must_exist() {
        assert!(Shard::new(0, 0).is_err());
        assert!(Shard::new(4, 4).is_err());
        assert!(Shard::new(3, 4).is_ok());
    }

    #[test]
    fn kinds_parse_loosely() {
        assert_eq!("Students".parse::<Kind>().unwrap(), Kind::Students);
        assert_eq!("stall".parse::<Kind>().unwrap(), Kind::Stalls);
        assert!("teachers".parse::<Kind>().is_err());
    }
}
