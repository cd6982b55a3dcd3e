//! What every end-to-end suite needs: a fresh database per test, a key prefix of its own, the
//! function binaries, and a QR reader to check images. Services come from TEST_DATABASE_URL
//! (default postgres://postgres@127.0.0.1:5432/postgres) and TEST_REDIS_URL (default
//! redis://127.0.0.1:6379); `.ci/run` starts them.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use secrecy::SecretString;
use shared::cache::{Cache, CacheSettings};
use shared::config::Config;
use shared::db::{Database, DatabaseSettings};

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique(label: &str) -> String {
    format!("{label}_{}", uuid::Uuid::new_v4().simple())
}

/// A database of its own, migrated, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    /// URL of this database, with `sslmode=disable`.
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = unique("qrtest");
        let admin = DatabaseSettings::parse(&admin_url())
            .unwrap()
            .connect()
            .await
            .expect("Postgres reachable at TEST_DATABASE_URL");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = Self::url_of(&name, "disable");
        let mut client = DatabaseSettings::parse(&url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        shared::migrations::apply(&mut client).await.unwrap();
        TestDb { name, url }
    }

    /// This database's URL with another `sslmode`.
    pub fn url_of(name: &str, sslmode: &str) -> String {
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(name);
        url.query_pairs_mut().append_pair("sslmode", sslmode);
        url.to_string()
    }

    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings::parse(&self.url).unwrap()
    }

    pub fn database(&self) -> Database {
        Database::new(self.settings())
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.settings().connect().await.unwrap()
    }

    /// Seeds the demo data set with tokens signed by [`JWT_SECRET`].
    pub async fn seed(&self, students: usize, stalls: usize) {
        let client = self.client().await;
        tools::seed::seed(
            &client,
            &SecretString::from(JWT_SECRET),
            tools::seed::DemoSize { students, stalls },
        )
        .await
        .unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime the test may have; use a small one of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(admin) = DatabaseSettings::parse(&admin_url())
                    .unwrap()
                    .connect()
                    .await
                {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

pub const JWT_SECRET: &str = "end-to-end-test-secret";

/// A cache under a prefix no other test uses.
pub fn test_cache(ttl_secs: u64) -> Cache {
    test_cache_at(&redis_url(), ttl_secs)
}

pub fn test_cache_at(url: &str, ttl_secs: u64) -> Cache {
    let settings = CacheSettings {
        key_prefix: format!("{}:", unique("test")),
        ttl: Duration::from_secs(ttl_secs),
    };
    Cache::connect_lazily(&SecretString::from(url.to_string()), settings).unwrap()
}

/// A loopback port no one listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The configuration the functions would read, for this database and cache.
pub fn config_for(db: &TestDb, cache: &Cache) -> Config {
    config_with(db, cache, &[])
}

/// [`config_for`] with more variables (`IMPORT_BUCKET`, ...).
pub fn config_with(db: &TestDb, cache: &Cache, more: &[(&str, String)]) -> Config {
    let vars = [
        ("NEON_DATABASE_URL", db.url.clone()),
        ("REDIS_URL", redis_url()),
        ("CACHE_KEY_PREFIX", cache.settings().key_prefix.clone()),
        (
            "QR_CACHE_TTL_SECS",
            cache.settings().ttl.as_secs().to_string(),
        ),
        ("JWT_SECRET", JWT_SECRET.to_string()),
    ];
    Config::from_lookup(|name| {
        vars.iter()
            .map(|(k, v)| (*k, v))
            .chain(more.iter().map(|(k, v)| (*k, v)))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap()
}

/// A function binary built beside the test binary (`cargo build --workspace` makes them).
pub fn binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps.parent().and_then(|p| p.parent()).unwrap().join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// The token a cached value's QR image decodes to, checking the value's exact format.
pub fn decode_data_url(value: &str) -> String {
    let encoded = value
        .strip_prefix("data:image/png;base64,")
        .unwrap_or_else(|| panic!("not a PNG data URL: {:.40}", value));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("standard base64");
    decode_png(&bytes)
}

/// What a standard QR reader finds in a PNG.
pub fn decode_png(bytes: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).expect("PNG pixels");
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let width = info.width as usize;
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(width, info.height as usize, |x, y| {
            buf[y * info.line_size + x]
        });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code in the image");
    grids[0].decode().expect("QR decodes").1
}

/// Runs redis commands on the test's Redis.
pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// moto's S3 server (or another S3-compatible one) at TEST_S3_ENDPOINT.
pub fn s3_endpoint() -> String {
    std::env::var("TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// An S3 client for the test server, path-style, with throwaway credentials.
pub fn s3_client() -> aws_sdk_s3::Client {
    let credentials =
        aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(s3_endpoint())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A bucket of the test's own.
pub async fn test_bucket(client: &aws_sdk_s3::Client) -> String {
    let bucket = format!("qrtest-{}", uuid::Uuid::new_v4().simple());
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("S3 server reachable at TEST_S3_ENDPOINT");
    bucket
}

/// Uploads `body` and returns the S3 `ObjectCreated:Put` event for it, key URL-encoded as S3
/// sends it.
pub async fn upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> serde_json::Value {
    let size = body.len();
    let put = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .unwrap();
    let e_tag = put
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    s3_put_event(bucket, key, &e_tag, size)
}

pub fn s3_put_event(bucket: &str, key: &str, e_tag: &str, size: usize) -> serde_json::Value {
    let encoded: String = url::form_urlencoded::byte_serialize(key.as_bytes())
        .collect::<String>()
        .replace("%2F", "/");
    serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-26T06:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "imports",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"}, "arn": format!("arn:aws:s3:::{bucket}")},
               "object": {"key": encoded, "size": size, "eTag": e_tag, "sequencer": "0055AED6DCD90281E5"}}
    }]})
}

/// An object's bytes, if it exists.
pub async fn download(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .ok()?;
    Some(object.body.collect().await.ok()?.into_bytes().to_vec())
}

/// A PgBouncer of the test's own in transaction mode, resetting every server connection after
/// each transaction (DISCARD ALL) as a busy pooler effectively does.
pub struct PgBouncer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl PgBouncer {
    pub fn start() -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("qr-pgbouncer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host=127.0.0.1 port=5432 user=postgres\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 auth_type = any\npool_mode = transaction\nunix_socket_dir =\nlogfile = {log}\n\
                 ignore_startup_parameters = extra_float_digits,application_name\n\
                 server_reset_query = DISCARD ALL\nserver_reset_query_always = 1\n",
                log = dir.join("pgbouncer.log").display()
            ),
        )
        .unwrap();
        // PgBouncer refuses to run as root; CI runs as root, so it drops to the postgres user.
        let _ = std::process::Command::new("chown")
            .arg("-R")
            .arg("postgres")
            .arg(&dir)
            .status();
        let mut command = std::process::Command::new("pgbouncer");
        if is_root() {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pgbouncer on PATH (scripts/services.sh installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pgbouncer did not start; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PgBouncer { port, dir, child }
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An S3 server of the test's own that checks signatures, presigned URLs included (s3s-fs from
/// crates.io; moto does not check them). Files live in a temporary folder.
pub struct SigningS3 {
    pub client: aws_sdk_s3::Client,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl SigningS3 {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("qr-s3s-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new("s3s-fs")
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                "signing-key",
                "--secret-key",
                "signing-secret",
            ])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs on PATH (scripts/services.sh installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let credentials = aws_sdk_s3::config::Credentials::new(
            "signing-key",
            "signing-secret",
            None,
            None,
            "tests",
        );
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(credentials)
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .force_path_style(true)
            .build();
        SigningS3 {
            client: aws_sdk_s3::Client::from_conf(config),
            dir,
            child,
        }
    }
}

impl Drop for SigningS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The warmer's clients over a test database and cache, with the tests' JWT secret.
pub fn warmer_clients(
    db: &TestDb,
    cache: Cache,
    config: shared::config::Config,
) -> warm_qr_cache::Clients {
    let jwt_secret = SecretString::from(JWT_SECRET);
    warm_qr_cache::Clients {
        db: db.database(),
        cache,
        config,
        signer: shared::token::RotatingSigner::new(&jwt_secret).unwrap(),
        jwt_secret,
    }
}

/// A full warm with the default settings, which must succeed.
pub async fn warm_everything(db: &TestDb, cache: &Cache) -> shared::warm::WarmSummary {
    let request = shared::warm::WarmRequest::default();
    shared::warm::warm(
        &db.database(),
        cache,
        &shared::qr::QrSettings::default(),
        Some(&SecretString::from(JWT_SECRET)),
        &request,
        &(),
    )
    .await
    .unwrap_or_else(|failed| panic!("{failed}: {}", failed.summary))
}

/// The claims of a QR token, which must be an HS256 JWT signed with [`JWT_SECRET`], as the
/// app's scanner checks it.
pub fn qr_token_claims(token: &str) -> serde_json::Value {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("a QR token the app's scanner accepts")
    .claims
}

/// The app's `verifyRotatingStudentToken` at `now_secs`, written from its source without the
/// project's token code: node's `jwt.verify` (HS256 signature, then `exp` <= now refused), `t`
/// is `RS`, `h` is the first 12 hex of HMAC-SHA256(secret, "{r}:{w}"), and the window is the
/// current one or one of the two before it. Returns the registration number, or why not.
pub fn app_verifies_rotating(token: &str, now_secs: i64) -> Result<String, &'static str> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{KeyInit, Mac};
    let hmac = |message: &[u8]| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET.as_bytes()).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err("jwt malformed");
    };
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).map_err(|_| "header")?)
            .map_err(|_| "header")?;
    if header["alg"] != "HS256" {
        return Err("invalid algorithm");
    }
    let signed = hmac(format!("{}.{}", parts[0], parts[1]).as_bytes());
    if URL_SAFE_NO_PAD.decode(signature).map_err(|_| "signature")? != signed {
        return Err("invalid signature");
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(|_| "payload")?)
            .map_err(|_| "payload")?;
    if claims["exp"].as_i64().is_some_and(|exp| now_secs >= exp) {
        return Err("jwt expired");
    }
    if claims["t"] != "RS" {
        return Err("not a rotating token");
    }
    let registration_no = claims["r"].as_str().ok_or("no r")?;
    let window = claims["w"].as_i64().ok_or("no w")?;
    let expected = hex::encode(hmac(format!("{registration_no}:{window}").as_bytes()));
    if claims["h"].as_str() != Some(&expected[..12]) {
        return Err("HMAC mismatch");
    }
    let difference = now_secs.div_euclid(30) - window;
    if !(0..=2).contains(&difference) {
        return Err("window out of grace");
    }
    Ok(registration_no.to_owned())
}

/// The width and height of a PNG.
pub fn png_size(bytes: &[u8]) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().expect("a PNG");
    (reader.info().width, reader.info().height)
}

/// The PNG bytes of a data URL.
pub fn data_url_png(value: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(
            value
                .strip_prefix("data:image/png;base64,")
                .expect("a PNG data URL"),
        )
        .expect("standard base64")
}

/// Puts a test's students into an event running today (registered, and paid where it is paid)
/// and returns their registration numbers in `students`' order.
pub async fn register_for_event_today(
    client: &tokio_postgres::Client,
    code: &str,
    status: &str,
    students: &[String],
) -> uuid::Uuid {
    let event: uuid::Uuid = client
        .query_one(
            "INSERT INTO events (event_name, event_code, start_date, end_date,
                                 registration_start_date, registration_end_date, status)
             VALUES ($1, $1, now() - interval '1 day', now() + interval '1 day',
                     now() - interval '7 days', now(), $2) RETURNING id",
            &[&code, &status],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "INSERT INTO event_registrations (event_id, student_id, registration_type, payment_status)
             SELECT $1, id, 'FREE', 'NOT_REQUIRED' FROM students WHERE registration_no = ANY($2)",
            &[&event, &students],
        )
        .await
        .unwrap();
    event
}

/// Runs the release-or-debug `warm-qr-cache` binary as cron would: only `PATH` and `env`.
pub fn run_warmer(env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary("warm-qr-cache"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args)
        .output()
        .unwrap()
}

/// A process's stdout then stderr, as one text.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every log line of this test process, as the functions write them in Lambda (JSON) at the
/// level `LOG_LEVEL` names. Installed process-wide: nextest runs each test in its own process.
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Captures every line at `log_level` from now on.
    pub fn install(log_level: &str) -> Self {
        let captured = CapturedLogs::default();
        let writer = captured.clone();
        let subscriber = shared::telemetry::subscriber(
            log_level,
            shared::telemetry::LogFormat::Json,
            move || writer.clone(),
        );
        tracing::subscriber::set_global_default(subscriber)
            .expect("one capture per test process (run the suite with cargo nextest)");
        captured
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Fails naming the first secret that appears in any line.
    pub fn assert_free_of(&self, secrets: &[(&str, String)]) {
        let text = self.text();
        for (what, secret) in secrets {
            assert!(!secret.is_empty(), "{what} is empty");
            if let Some(line) = text.lines().find(|line| line.contains(secret.as_str())) {
                panic!("{what} logged: {line}");
            }
        }
    }
}

/// Redis 6.2, built by `scripts/test-services.sh`: the oldest Redis with GETEX, which the
/// functions need, and the last before INFO took several sections.
pub const REDIS_6_2_SERVER: &str = "/usr/local/lib/redis-6.2/redis-server";

/// A redis-server of the test's own on a free loopback port, stopped when dropped.
pub struct RedisServer {
    pub port: u16,
    child: std::process::Child,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one with no persistence and `extra` arguments (`--replicaof`, `--maxmemory`, ...).
    pub fn start(extra: &[&str]) -> Self {
        Self::start_binary("redis-server", extra)
    }

    /// The same with another build of redis-server, e.g. [`REDIS_6_2_SERVER`].
    pub fn start_binary(binary: &str, extra: &[&str]) -> Self {
        let port = free_port();
        // A folder of its own: a replica's sync writes a dump there, which another server
        // (another version, even) must never load at its start.
        let dir = std::env::temp_dir().join(unique("redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("redis.log");
        let mut child = std::process::Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || std::time::Instant::now() > deadline {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("{binary} on port {port} did not start ({exited:?}): {said}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { port, child, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy on loopback whose target the test switches, as a DNS name moves to a new primary
/// after a failover: connections already open stay with the old server, new ones reach the new.
pub struct SwitchableProxy {
    pub port: u16,
    target: std::sync::Arc<std::sync::Mutex<u16>>,
}

impl SwitchableProxy {
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(std::sync::Mutex::new(target));
        let current = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let port = *current.lock().unwrap();
                tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        SwitchableProxy { port, target }
    }

    pub fn switch_to(&self, port: u16) {
        *self.target.lock().unwrap() = port;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// What a [`FaultProxy`] does with the traffic it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards both ways.
    Forward,
    /// Accepts connections and resets them at once: a server restarting or a pooler refusing.
    Refuse,
    /// Holds every connection open and forwards nothing, new or old: a silent network path
    /// (a half-open connection, a stuck pooler). The client sees neither data nor a close.
    Stall,
}

/// A TCP proxy on loopback in front of a real server, with faults the test injects: cut every
/// open connection (a restart, a pooler closing its clients), refuse, or stall.
pub struct FaultProxy {
    pub port: u16,
    state: tokio::sync::watch::Sender<(ProxyMode, u64)>,
}

impl FaultProxy {
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (state, _) = tokio::sync::watch::channel((ProxyMode::Forward, 0u64));
        let watch = state.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut changes = watch.subscribe();
                tokio::spawn(async move {
                    let (mode, generation) = *changes.borrow_and_update();
                    match mode {
                        ProxyMode::Refuse => reset(inbound),
                        ProxyMode::Stall => {
                            hold_until_cut(inbound, None, changes, generation).await
                        }
                        ProxyMode::Forward => {
                            let Ok(outbound) =
                                tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                            else {
                                return reset(inbound);
                            };
                            forward(inbound, outbound, changes, generation).await;
                        }
                    }
                });
            }
        });
        FaultProxy { port, state }
    }

    /// From now on, new connections meet `mode`; under `Stall`, open ones go silent too.
    pub fn set(&self, mode: ProxyMode) {
        self.state.send_modify(|(current, _)| *current = mode);
    }

    /// Resets every connection open now, as a restarting server or a pooler does.
    pub fn cut(&self) {
        self.state.send_modify(|(_, generation)| *generation += 1);
    }

    /// The database of `db`, reached through this proxy.
    pub fn database(&self, db: &TestDb) -> Database {
        let mut url = url::Url::parse(&db.url).unwrap();
        url.set_port(Some(self.port)).unwrap();
        Database::new(DatabaseSettings::parse(url.as_str()).unwrap())
    }

    /// A proxy in front of the test Postgres server.
    pub async fn postgres() -> Self {
        let url = url::Url::parse(&admin_url()).unwrap();
        Self::start(url.port().unwrap_or(5432)).await
    }
}

fn reset(stream: tokio::net::TcpStream) {
    // Linger zero turns the close into a reset, as a killed server's kernel sends.
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn forward(
    mut inbound: tokio::net::TcpStream,
    mut outbound: tokio::net::TcpStream,
    mut changes: tokio::sync::watch::Receiver<(ProxyMode, u64)>,
    generation: u64,
) {
    loop {
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let (mode, now) = *changes.borrow_and_update();
                if now != generation {
                    reset(inbound);
                    reset(outbound);
                    return;
                }
                if mode == ProxyMode::Stall {
                    return hold_until_cut(inbound, Some(outbound), changes, generation).await;
                }
            }
        }
    }
}

async fn hold_until_cut(
    inbound: tokio::net::TcpStream,
    outbound: Option<tokio::net::TcpStream>,
    mut changes: tokio::sync::watch::Receiver<(ProxyMode, u64)>,
    generation: u64,
) {
    while changes.changed().await.is_ok() {
        if changes.borrow_and_update().1 != generation {
            break;
        }
    }
    reset(inbound);
    if let Some(outbound) = outbound {
        reset(outbound);
    }
}

/// An SSM client for the test server (moto's serves SSM beside S3), with throwaway credentials.
pub fn ssm_client() -> aws_sdk_ssm::Client {
    let credentials =
        aws_sdk_ssm::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_sdk_ssm::config::Builder::new()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(s3_endpoint())
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// The standard AWS variables that point a function's own SSM client at the test server.
pub fn ssm_environment() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_SSM", s3_endpoint()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

/// A prefix of parameter names no other test uses (`/qrtest_{unique}`).
pub fn parameter_prefix() -> String {
    format!("/{}", unique("qrtest"))
}

/// Stores `value` as a SecureString (over any earlier version) and returns its new version.
pub async fn put_secure_parameter(client: &aws_sdk_ssm::Client, name: &str, value: &str) -> i64 {
    client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .expect("SSM server reachable at TEST_S3_ENDPOINT")
        .version()
}
