//! The app's own Redis variables (REDIS_HOST, REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD,
//! REDIS_DB) in place of REDIS_URL, through the plain command: the database it selects, the
//! passwords it sends, and what it says when REDIS_URL shadows them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use end_to_end::{
    decode_data_url, free_port, output_text, redis_connection, redis_url, run_warmer, test_cache,
    TestDb, JWT_SECRET,
};
use redis::AsyncCommands;
use shared::cache::Cache;
use shared::config::Config;

/// Both carry the characters a URL would take for delimiters, an escape and a space.
const ADMIN_PASSWORD: &str = "Adm1n@:/%41 pass";
const USER_PASSWORD: &str = "Us3r@:/%2F pass#?";
const WRONG_PASSWORD: &str = "Wr0ng@:/%25 pass";
const USERNAME: &str = "qr-warmer@app:1";

/// Everything but Redis's address, logging all it can so a leak would show.
fn base_env(db: &TestDb, cache: &Cache) -> Vec<(&'static str, String)> {
    vec![
        ("NEON_DATABASE_URL", db.url.clone()),
        ("CACHE_KEY_PREFIX", cache.settings().key_prefix.clone()),
        ("QR_CACHE_TTL_SECS", "600".into()),
        ("JWT_SECRET", JWT_SECRET.into()),
        ("LOG_LEVEL", "trace".into()),
    ]
}

/// The test Redis (TEST_REDIS_URL, which carries no credentials) as the app's own variables.
fn host_and_port() -> Vec<(&'static str, String)> {
    let url = url::Url::parse(&redis_url()).unwrap();
    let host = url.host_str().unwrap().trim_matches(['[', ']']).to_string();
    vec![
        ("REDIS_HOST", host),
        ("REDIS_PORT", url.port().unwrap_or(6379).to_string()),
    ]
}

/// The seeded rows' tokens and the cache keys of their images.
async fn tokens_and_keys(db: &TestDb, cache: &Cache) -> Vec<(String, String)> {
    db.client()
        .await
        .query(
            "SELECT qr_code_token FROM students UNION ALL SELECT qr_code_token FROM stalls",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let token: String = row.get(0);
            let key = cache.settings().key(&token);
            (token, key)
        })
        .collect()
}

async fn select(connection: &mut redis::aio::MultiplexedConnection, index: u32) {
    let () = redis::cmd("SELECT")
        .arg(index)
        .query_async(connection)
        .await
        .unwrap();
}

/// Every image is in the selected database, as an image of its token.
async fn assert_cached(
    connection: &mut redis::aio::MultiplexedConnection,
    tokens_and_keys: &[(String, String)],
) {
    for (token, key) in tokens_and_keys {
        let value: Option<String> = connection.get(key).await.unwrap();
        let value = value.unwrap_or_else(|| panic!("no entry for {token}"));
        assert_eq!(decode_data_url(&value), *token);
    }
}

fn assert_no_password(all: &str) {
    for password in [ADMIN_PASSWORD, USER_PASSWORD, WRONG_PASSWORD] {
        assert!(
            !all.contains(password),
            "a Redis password reached the output"
        );
        // Also as it is written into the URL.
        let encoded: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
        assert!(
            !all.contains(&encoded) && !all.contains(&encoded.replace('+', "%20")),
            "an encoded Redis password reached the output"
        );
    }
}

#[tokio::test]
async fn redis_host_with_redis_db_puts_every_image_in_that_database() {
    let db = TestDb::create().await;
    db.seed(12, 3).await;
    let cache = test_cache(600);
    let mut env = base_env(&db, &cache);
    env.extend(host_and_port());
    env.push(("REDIS_DB", "5".into()));

    let output = run_warmer(&env, &[]);
    let all = output_text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("Students: 12/12 cached (0 failed)"), "{all}");
    assert!(!all.contains("RedisUrlShadowsHost"), "{all}");

    let entries = tokens_and_keys(&db, &cache).await;
    assert_eq!(entries.len(), 15);
    let mut db5 = redis_connection(&redis_url()).await;
    select(&mut db5, 5).await;
    assert_cached(&mut db5, &entries).await;
    let mut db0 = redis_connection(&redis_url()).await;
    select(&mut db0, 0).await;
    for (token, key) in &entries {
        let exists: bool = db0.exists(key).await.unwrap();
        assert!(!exists, "the entry of {token} went to database 0");
    }
    let keys: Vec<&String> = entries.iter().map(|(_, key)| key).collect();
    let _: i64 = db5.del(keys).await.unwrap();
}

/// A Redis server of the test's own that requires a password; killed when dropped.
struct PasswordRedis {
    port: u16,
    child: Child,
}

impl PasswordRedis {
    fn start(password: &str) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                password,
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = PasswordRedis { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// A connection as the default user, logged in without any URL.
    async fn admin(&self) -> redis::aio::MultiplexedConnection {
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::Tcp("127.0.0.1".into(), self.port)
            .into_connection_info()
            .unwrap()
            .set_redis_settings(redis::RedisConnectionInfo::default().set_password(ADMIN_PASSWORD));
        redis::Client::open(info)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn passwords_and_users_with_url_delimiters_log_in_and_a_wrong_one_is_refused_unshown() {
    let db = TestDb::create().await;
    db.seed(8, 2).await;
    let server = PasswordRedis::start(ADMIN_PASSWORD);
    let mut admin = server.admin().await;
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(USERNAME)
        .arg("on")
        .arg(format!(">{USER_PASSWORD}"))
        .arg("~*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let address = [
        ("REDIS_HOST", "127.0.0.1".to_string()),
        ("REDIS_PORT", server.port.to_string()),
    ];

    // The default user, by its password alone, in database 3.
    let cache = test_cache(600);
    let mut env = base_env(&db, &cache);
    env.extend(address.clone());
    env.push(("REDIS_PASSWORD", ADMIN_PASSWORD.into()));
    env.push(("REDIS_DB", "3".into()));
    let output = run_warmer(&env, &[]);
    let all = output_text(&output);
    assert!(output.status.success(), "{all}");
    assert_no_password(&all);
    select(&mut admin, 3).await;
    assert_cached(&mut admin, &tokens_and_keys(&db, &cache).await).await;

    // An ACL user, whose password only it has, in database 0.
    let cache = test_cache(600);
    let mut env = base_env(&db, &cache);
    env.extend(address.clone());
    env.push(("REDIS_USERNAME", USERNAME.into()));
    env.push(("REDIS_PASSWORD", USER_PASSWORD.into()));
    let output = run_warmer(&env, &[]);
    let all = output_text(&output);
    assert!(output.status.success(), "{all}");
    assert_no_password(&all);
    select(&mut admin, 0).await;
    assert_cached(&mut admin, &tokens_and_keys(&db, &cache).await).await;

    // The wrong password: the run fails on Redis and says so, without the password.
    let cache = test_cache(600);
    let mut env = base_env(&db, &cache);
    env.extend(address.clone());
    env.push(("REDIS_USERNAME", USERNAME.into()));
    env.push(("REDIS_PASSWORD", WRONG_PASSWORD.into()));
    let output = run_warmer(&env, &[]);
    let all = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("warm-qr-cache: Redis: "), "{all}");
    assert_no_password(&all);

    // The same in process: neither the error nor its Debug form carries the password.
    let config =
        Config::from_lookup(|name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
            .unwrap();
    let cache = Cache::connect_lazily(&config.redis_url, config.cache.clone()).unwrap();
    let error = cache.ping().await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(shown.starts_with("Redis: PING: "), "{shown}");
    assert_no_password(&shown);
}

#[tokio::test]
async fn redis_url_beside_redis_host_is_used_and_the_start_warns_once() {
    let db = TestDb::create().await;
    db.seed(2, 2).await;
    let cache = test_cache(600);
    let mut env = base_env(&db, &cache);
    env.push(("REDIS_URL", redis_url()));
    // Names a server that does not exist: the run succeeds only if REDIS_URL is what connects.
    env.push(("REDIS_HOST", "127.0.0.1".into()));
    env.push(("REDIS_PORT", free_port().to_string()));
    env.push(("REDIS_PASSWORD", ADMIN_PASSWORD.into()));
    let output = run_warmer(&env, &["--kinds", "stalls"]);
    let all = output_text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("Stalls: 2/2 cached (0 failed)"), "{all}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("RedisUrlShadowsHost"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("WARN")
            && warnings[0]
                .contains("REDIS_URL is set, and so are REDIS_HOST, REDIS_PORT, REDIS_PASSWORD")
            && warnings[0].contains("ignores REDIS_URL"),
        "{stderr}"
    );
    assert_no_password(&all);
}
