//! Failures never cost the app its cache: Redis dropping mid-run, Postgres unreachable.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use end_to_end::{decode_data_url, free_port, test_cache, test_cache_at, warm_everything, TestDb};
use redis::AsyncCommands;
use shared::db::{Database, DatabaseSettings};
use shared::qr::QrSettings;
use shared::warm::{warm, Progress, WarmRequest};

/// A Redis server of the test's own, which it may shut down; it saves to `dir` so a restart
/// shows what survived.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start(port: u16, dir: &std::path::Path) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        // Ready once it answers PING: while it loads a dump it accepts connections but
        // answers every command with LOADING.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut reply = [0u8; 5];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG"
}

/// Shuts the server down (saving first) as soon as the first batch is stored.
struct ShutDownAfterFirstBatch {
    port: u16,
    fired: AtomicBool,
}

impl Progress for ShutDownAfterFirstBatch {
    fn advance(&self, _rows: u64) {
        if !self.fired.swap(true, Ordering::SeqCst) {
            let status = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "shutdown", "save"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(status.is_ok(), "redis-cli on PATH");
        }
    }
}

#[tokio::test]
async fn redis_dropping_mid_run_fails_the_run_and_leaves_earlier_entries_intact() {
    let db = TestDb::create().await;
    db.seed(5000, 0).await;
    let dir = std::env::temp_dir().join(format!("qr-redis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut server = OwnRedis::start(port, &dir);
    let cache = test_cache_at(&server.url(), 3600);
    let first = warm_everything(&db, &cache).await;
    assert_eq!(first.cached(), 5000);

    let forced = WarmRequest {
        force: true,
        ..WarmRequest::default()
    };
    let killer = ShutDownAfterFirstBatch {
        port,
        fired: AtomicBool::new(false),
    };
    let failed = warm(
        &db.database(),
        &cache,
        &QrSettings::default(),
        None,
        &forced,
        &killer,
    )
    .await
    .unwrap_err();
    assert!(
        failed.error.to_string().starts_with("Redis: "),
        "{}",
        failed.error
    );
    assert!(
        failed.summary.cached() < 5000,
        "stopped part-way: {}",
        failed.summary
    );
    let _ = server.child.wait();

    // Every entry of the first run is still there and still an image of its token.
    let server = OwnRedis::start(port, &dir);
    let mut redis = end_to_end::redis_connection(&server.url()).await;
    let client = db.client().await;
    let rows = client
        .query("SELECT qr_code_token FROM students", &[])
        .await
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        let token: String = row.get(0);
        let value: Option<String> = redis.get(cache.settings().key(&token)).await.unwrap();
        let value = value.unwrap_or_else(|| panic!("entry of {token} lost"));
        if i % 50 == 0 {
            assert_eq!(decode_data_url(&value), token);
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn postgres_unreachable_renews_what_is_cached_and_fails() {
    let db = TestDb::create().await;
    db.seed(30, 5).await;
    let cache = test_cache(1000);
    warm_everything(&db, &cache).await;
    let mut redis = cache.connection();
    let client = db.client().await;
    let tokens: Vec<String> = client
        .query(
            "SELECT qr_code_token FROM students UNION ALL SELECT qr_code_token FROM stalls",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for token in &tokens {
        let _: () = redis.expire(cache.settings().key(token), 60).await.unwrap();
    }

    let unreachable = Database::new(
        DatabaseSettings::parse(
            "postgres://postgres@127.0.0.1:1/gone?sslmode=disable&connect_timeout=2",
        )
        .unwrap(),
    );
    let failed = warm(
        &unreachable,
        &cache,
        &QrSettings::default(),
        None,
        &WarmRequest::default(),
        &(),
    )
    .await
    .unwrap_err();
    assert!(
        failed.error.to_string().starts_with("Postgres: connecting"),
        "{}",
        failed.error
    );
    assert_eq!(failed.summary.outage_renewal.map(|o| o.renewed), Some(35));
    assert!(failed
        .summary
        .to_string()
        .contains("Postgres unreachable: renewed the TTL of 35 cached images"));
    for token in &tokens {
        let ttl: i64 = redis.ttl(cache.settings().key(token)).await.unwrap();
        assert!(ttl > 990, "TTL of {token} renewed, got {ttl}");
    }
}
