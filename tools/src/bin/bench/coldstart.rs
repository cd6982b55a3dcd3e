//! `bench coldstart`: each function's release binary (beside this one) started as Lambda starts
//! it, against a Lambda Runtime API emulator on loopback, `--runs` times (default 20). Measured
//! per start: spawn -> the first `GET .../invocation/next` (init: configuration, logging, the
//! clients made, Postgres connected) and spawn -> the first response posted for one cheap event.
//! Services as the other modes: a fresh database with the schema and a small demo set, Redis
//! under a key prefix of its own, a bucket on moto's S3 server (BENCH_S3_ENDPOINT); all removed
//! afterwards. Builds nothing: build each function first, each with its own `-p` (built together,
//! or with `--bin` alone, cargo unifies `shared`'s features and the warmer gets the importer's).
//!
//! `--bin-dir DIR` takes the binaries from DIR instead (another build, or wrappers that run them
//! under strace); `--log-level L` is the functions' `LOG_LEVEL` (default info). Each function's
//! stderr of its last start is left in `$TMPDIR/qr-bench-coldstart/<function>.log`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use shared::db::DatabaseSettings;
use tools::seed::{self, DemoSize};

use super::{admin_database_url, flag, machine, redis_url, Failure};

/// A function, the cheapest event that still goes through its handler, and its memory size in
/// template.yaml (which Lambda passes as `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
struct Function {
    binary: &'static str,
    event_file: &'static str,
    event: &'static str,
    memory_mb: u32,
}

const FUNCTIONS: [Function; 3] = [
    Function {
        binary: "warm-qr-cache",
        event_file: "events/warm-hit-rate-sample.json",
        event: include_str!("../../../../events/warm-hit-rate-sample.json"),
        memory_mb: 1769,
    },
    Function {
        binary: "import-spreadsheet",
        event_file: "events/import-not-an-import.json",
        event: include_str!("../../../../events/import-not-an-import.json"),
        memory_mb: 1769,
    },
    Function {
        binary: "http-api",
        event_file: "events/api-health.json",
        event: include_str!("../../../../events/api-health.json"),
        memory_mb: 1024,
    },
];

/// How long one start may take before the run is called failed.
const START_LIMIT: Duration = Duration::from_secs(20);

const JWT_SECRET: &str = "bench-coldstart-secret";

/// What the emulator saw, in order.
enum Seen {
    Next(Instant),
    Response { at: Instant, ok: bool, body: String },
    InitError(String),
}

/// One start of one function.
struct Sample {
    init: Duration,
    first_response: Duration,
    body: String,
}

pub async fn run(args: &[String]) -> Result<(), Failure> {
    let runs = flag(args, "--runs", 20)?.max(1);
    let bin_dir = match text_flag(args, "--bin-dir")? {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()?
            .parent()
            .ok_or("the bench binary has no directory")?
            .to_path_buf(),
    };
    let log_level = text_flag(args, "--log-level")?.unwrap_or("info");
    let binaries: Vec<PathBuf> = FUNCTIONS.iter().map(|f| bin_dir.join(f.binary)).collect();
    if let Some(missing) = binaries.iter().find(|b| !b.exists()) {
        return Err(format!(
            "{} not found: build the functions first (cargo build --release -p import-spreadsheet -p http-api, then cargo build --release -p warm-qr-cache on its own)",
            missing.display()
        )
        .into());
    }
    let admin_url = admin_database_url();
    let redis_url = redis_url();
    let s3_endpoint =
        std::env::var("BENCH_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let pid = std::process::id();
    let database = format!("qr_bench_coldstart_{pid}");
    let prefix = format!("bench:coldstart:{pid}:");
    let bucket = format!("qr-bench-coldstart-{pid}");

    let admin = DatabaseSettings::parse(&admin_url)?.connect().await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await?;
    let s3 = super::import::s3_client();
    let result = async {
        s3.create_bucket().bucket(&bucket).send().await?;
        let mut url = url::Url::parse(&admin_url)?;
        url.set_path(&database);
        let mut client = DatabaseSettings::parse(url.as_str())?.connect().await?;
        shared::migrations::apply(&mut client).await?;
        let size = DemoSize {
            students: 200,
            stalls: 20,
        };
        seed::seed(&client, &SecretString::from(JWT_SECRET), size).await?;
        // TLS off, as a local Postgres has it; Neon's `sslmode=require` adds a handshake.
        let mut function_url = url.clone();
        function_url.set_query(Some("sslmode=disable"));
        let mut env = environment(
            function_url.as_str(),
            &redis_url,
            &prefix,
            &bucket,
            &s3_endpoint,
        );
        env.push(("LOG_LEVEL".into(), log_level.into()));
        // Processes, threads and blocking sockets: nothing else runs on the runtime meanwhile.
        tokio::task::block_in_place(|| measure_all(&binaries, &env, runs))
    }
    .await;
    if let Ok(client) = redis::Client::open(redis_url.as_str()) {
        if let Ok(mut redis) = redis::aio::ConnectionManager::new(client).await {
            let _ = tools::cleanup::unlink_matching(&mut redis, &format!("{prefix}*")).await;
        }
    }
    let _ = s3.delete_bucket().bucket(&bucket).send().await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await;
    result
}

fn text_flag<'a>(args: &'a [String], name: &str) -> Result<Option<&'a str>, Failure> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => Ok(Some(
            args.get(i + 1)
                .ok_or(format!("{name} needs a value"))?
                .as_str(),
        )),
    }
}

/// The project's settings plus what Lambda's own environment holds; nothing else of this
/// process's environment reaches the function (`env_clear`), as in a Lambda sandbox.
fn environment(
    database_url: &str,
    redis_url: &str,
    prefix: &str,
    bucket: &str,
    s3_endpoint: &str,
) -> Vec<(String, String)> {
    [
        ("NEON_DATABASE_URL", database_url),
        ("REDIS_URL", redis_url),
        ("CACHE_KEY_PREFIX", prefix),
        ("JWT_SECRET", JWT_SECRET),
        ("IMPORT_BUCKET", bucket),
        ("STAGE", "bench"),
        ("AWS_ENDPOINT_URL", s3_endpoint),
        ("S3_FORCE_PATH_STYLE", "true"),
        // Lambda puts the role's credentials in the environment.
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_SESSION_TOKEN", "bench"),
        ("AWS_REGION", "ap-south-1"),
        ("AWS_DEFAULT_REGION", "ap-south-1"),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
        ("TZ", ":UTC"),
        ("LANG", "en_US.UTF-8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn measure_all(binaries: &[PathBuf], env: &[(String, String)], runs: usize) -> Result<(), Failure> {
    println!("machine: {}", machine());
    println!(
        "{runs} starts per function (after one untimed start that loads the binary into the page cache)"
    );
    println!(
        "| function | event | release binary | init median / p90 | first response median / p90 |"
    );
    println!("|---|---|---|---|---|");
    for (function, binary) in FUNCTIONS.iter().zip(binaries) {
        let bytes = std::fs::metadata(binary)?.len();
        let first =
            start_once(function, binary, env).map_err(|e| format!("{}: {e}", function.binary))?;
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            samples.push(
                start_once(function, binary, env)
                    .map_err(|e| format!("{}: {e}", function.binary))?,
            );
        }
        let init = quantiles(samples.iter().map(|s| s.init));
        let response = quantiles(samples.iter().map(|s| s.first_response));
        println!(
            "| {} | `{}` | {} bytes | {} / {} | {} / {} |",
            function.binary,
            function.event_file,
            thousands(bytes),
            ms(init.0),
            ms(init.1),
            ms(response.0),
            ms(response.1)
        );
        eprintln!("{} answered: {}", function.binary, shorten(&first.body));
    }
    Ok(())
}

/// Median and p90 (nearest rank).
fn quantiles(durations: impl Iterator<Item = Duration>) -> (Duration, Duration) {
    let mut sorted: Vec<Duration> = durations.collect();
    sorted.sort();
    let rank =
        |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    (rank(0.5), rank(0.9))
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// Starts the function against a fresh emulator, hands it one event, and stops it once it has
/// answered.
fn start_once(
    function: &Function,
    binary: &Path,
    env: &[(String, String)],
) -> Result<Sample, Failure> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let (seen_tx, seen) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = Arc::clone(&stop);
        let name = function.binary;
        let event = function.event;
        std::thread::spawn(move || {
            let served = Arc::new(AtomicBool::new(false));
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (seen_tx, served) = (seen_tx.clone(), Arc::clone(&served));
                std::thread::spawn(move || serve(stream, name, event, &served, &seen_tx));
            }
        })
    };

    let log_dir = std::env::temp_dir().join("qr-bench-coldstart");
    std::fs::create_dir_all(&log_dir)?;
    let log = log_dir.join(format!("{}.log", function.binary));
    // A file, not a pipe: a chatty start (debug logs) cannot block on a full pipe.
    let stderr = std::fs::File::create(&log)?;
    let spawned = Instant::now();
    let child = Command::new(binary)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function.binary)
        .env(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            function.memory_mb.to_string(),
        )
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", function.binary),
        )
        .env(
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2025/02/14/[$LATEST]0123456789abcdef0123456789abcdef",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?;
    let outcome = watch(child, spawned, &seen, &log);
    stop.store(true, Ordering::SeqCst);
    // Wakes the accept loop so it sees `stop`; the connection threads end with the child's
    // sockets.
    let _ = TcpStream::connect(address);
    let _ = server.join();
    outcome
}

/// Waits for the init and the first response, then stops the child (and says what it printed
/// when it failed).
fn watch(
    mut child: Child,
    spawned: Instant,
    seen: &mpsc::Receiver<Seen>,
    log: &Path,
) -> Result<Sample, Failure> {
    let mut init = None;
    let result: Result<Sample, Failure> = loop {
        if spawned.elapsed() > START_LIMIT {
            break Err(format!("no response within {START_LIMIT:?}").into());
        }
        match seen.recv_timeout(Duration::from_millis(20)) {
            Ok(Seen::Next(at)) => init = Some(at - spawned),
            Ok(Seen::Response { at, ok, body }) => match init {
                Some(init) if ok => {
                    break Ok(Sample {
                        init,
                        first_response: at - spawned,
                        body,
                    })
                }
                _ => break Err(format!("the invocation failed: {}", shorten(&body)).into()),
            },
            Ok(Seen::InitError(body)) => {
                break Err(format!("init failed: {}", shorten(&body)).into())
            }
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    break Err(format!("exited ({status}) before answering").into());
                }
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(|error| {
        let stderr = std::fs::read_to_string(log).unwrap_or_default();
        format!("{error}; its stderr: {}", shorten(&stderr)).into()
    })
}

/// One HTTP/1.1 connection of the function's runtime client: the Runtime API's routes, one
/// event, then nothing (a second `next` waits until the child is stopped).
fn serve(
    stream: TcpStream,
    function: &str,
    event: &str,
    served: &AtomicBool,
    seen: &mpsc::Sender<Seen>,
) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Ok(Some((method, path, body))) = read_request(&mut reader) {
        let at = Instant::now();
        let answer = match (method.as_str(), path.as_str()) {
            ("GET", "/2018-06-01/runtime/invocation/next") => {
                if served.swap(true, Ordering::SeqCst) {
                    let _ = reader.read(&mut [0u8; 1]);
                    return;
                }
                let _ = seen.send(Seen::Next(at));
                invocation(function, event)
            }
            ("POST", "/2018-06-01/runtime/init/error") => {
                let _ = seen.send(Seen::InitError(body));
                accepted()
            }
            ("POST", path) if path.starts_with("/2018-06-01/runtime/invocation/") => {
                let ok = path.ends_with("/response");
                if !ok && !path.ends_with("/error") {
                    not_found()
                } else {
                    let _ = seen.send(Seen::Response { at, ok, body });
                    accepted()
                }
            }
            _ => not_found(),
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn invocation(function: &str, event: &str) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
         Lambda-Runtime-Aws-Request-Id: 8476a536-e9f4-11e8-9739-2dfe598c3fcd\r\n\
         Lambda-Runtime-Deadline-Ms: {}\r\n\
         Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:ap-south-1:123456789012:function:{function}\r\n\
         Lambda-Runtime-Trace-Id: Root=1-67aec21d-2b7f4c1e9a0d3e5f6a7b8c9d;Parent=53995c3f42cd8ad8;Sampled=0\r\n\
         Content-Length: {}\r\n\r\n{event}",
        now_ms + 30_000,
        event.len()
    )
}

fn accepted() -> String {
    let body = r#"{"status":"OK"}"#;
    format!(
        "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn not_found() -> String {
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
}

/// Reads one request: method, path and body (by Content-Length or chunked); `None` at the end
/// of the connection.
fn read_request(
    reader: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<(String, String, String)>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size_text = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
            })?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(Some((
        method,
        path,
        String::from_utf8_lossy(&body).into_owned(),
    )))
}
