//! Benchmarks, run on the machine at hand; figures go in BENCHMARKS.md.
//!
//!   bench warm [--students N] [--stalls N]   the warmer end to end (default 25000 + 200)
//!   bench render [--count N]                  QR encoders and PNG settings, per core
//!   bench import [--rows N] [--repeat N]      a students .xlsx imported end to end (default 100000),
//!                                             and N rounds of the import against its COPY floor
//!   bench http [--requests N]                 the API handler in-process: QR hits and misses (default 10000)
//!   bench rotating [--students N] [--prewarm-only]
//!                                             rotating QRs: one window's pre-warm, the route's hits,
//!                                             misses and a paced 30-second refresh (default 11000)
//!   bench shards [--students N]               one shard of a sharded warm at 1 and 2 CPUs, and
//!                                             1,000,000 rows projected (default 200000)
//!   bench coldstart [--runs N]                each function's release binary started as Lambda
//!                                             starts it: init and first response (default 20 runs)
//!
//! `warm` seeds a fresh database, runs the release `warm-qr-cache` binary beside this one (cold,
//! then unchanged) and reads its JSON summary (peak memory included) and what it left in Redis. Services:
//! BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) and BENCH_REDIS_URL
//! (default redis://127.0.0.1:6379).

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use shared::db::DatabaseSettings;
use shared::qr::{self, ModuleGrid, QrSettings};
use tools::seed::{self, DemoSize};

mod coldstart;
mod http;
mod import;
mod rotating;
mod shards;

type Failure = Box<dyn std::error::Error>;

pub(crate) fn flag(args: &[String], name: &str, default: usize) -> Result<usize, Failure> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => {
            let text = args.get(i + 1).ok_or(format!("{name} needs a number"))?;
            Ok(text
                .parse()
                .map_err(|_| format!("{name} needs a number, got `{text}`"))?)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `http` measures the API on the API's own runtime, one thread (functions/http-api's main);
    // the rest run as the warmer and the importer do.
    let mut builder = if args.first().map(String::as_str) == Some("http") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(error) => {
            eprintln!("bench: no runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> ExitCode {
    let result = match args.first().map(String::as_str) {
        Some("warm") => warm(&args).await,
        Some("render") => render(&args),
        Some("import") => import::run(&args).await,
        Some("http") => http::run(&args).await,
        Some("rotating") => rotating::run(&args).await,
        Some("shards") => shards::run(&args).await,
        Some("coldstart") => coldstart::run(&args).await,
        Some("import-child") => import::child(&args).await,
        _ => {
            eprintln!("usage: bench warm [--students N] [--stalls N] | bench render [--count N] | bench import [--rows N] [--repeat N] | bench http [--requests N] | bench rotating [--students N] [--prewarm-only] | bench shards [--students N] | bench coldstart [--runs N]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The Postgres server the benches make their scratch databases on (BENCH_DATABASE_URL).
pub(crate) fn admin_database_url() -> String {
    std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis server the benches use (BENCH_REDIS_URL).
pub(crate) fn redis_url() -> String {
    std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{} cores, {cpu}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    )
}

/// The release warmer beside this binary, which the warm and shards benchmarks run.
fn warmer_binary() -> Result<std::path::PathBuf, Failure> {
    let exe = std::env::current_exe()?.with_file_name("warm-qr-cache");
    if !exe.exists() {
        return Err(format!(
            "{} not found: build it first (cargo build --release -p warm-qr-cache)",
            exe.display()
        )
        .into());
    }
    Ok(exe)
}

/// Runs the warmer binary; returns its JSON summary (which carries its own peak memory) and
/// the wall time.
fn run_warmer(env: &[(&str, String)]) -> Result<(Value, Duration), Failure> {
    let exe = warmer_binary()?;
    let started = Instant::now();
    let output = Command::new(&exe)
        .arg("--json")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(Stdio::null())
        .output()?;
    let wall = started.elapsed();
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("warm-qr-cache failed ({}): {text}", output.status).into());
    }
    Ok((serde_json::from_str(text.trim())?, wall))
}

async fn redis_used_memory(connection: &mut redis::aio::ConnectionManager) -> Result<i64, Failure> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(connection)
        .await?;
    let line = info
        .lines()
        .find(|l| l.starts_with("used_memory:"))
        .ok_or("INFO memory has no used_memory")?;
    Ok(line.trim_start_matches("used_memory:").trim().parse()?)
}

async fn warm(args: &[String]) -> Result<(), Failure> {
    let size = DemoSize {
        students: flag(args, "--students", 25_000)?,
        stalls: flag(args, "--stalls", 200)?,
    };
    let admin_url = admin_database_url();
    let redis_url = redis_url();
    let database = format!("qr_bench_{}", std::process::id());
    let prefix = format!("bench:{}:", std::process::id());

    let admin = DatabaseSettings::parse(&admin_url)?.connect().await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await?;
    let mut url = url::Url::parse(&admin_url)?;
    url.set_path(&database);
    let result = warm_in(url.as_str(), &redis_url, &prefix, size).await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await;
    result
}

async fn warm_in(
    db_url: &str,
    redis_url: &str,
    prefix: &str,
    size: DemoSize,
) -> Result<(), Failure> {
    let secret = SecretString::from("bench-secret");
    let mut client = DatabaseSettings::parse(db_url)?.connect().await?;
    shared::migrations::apply(&mut client).await?;
    let seeded = Instant::now();
    seed::seed(&client, &secret, size).await?;
    eprintln!(
        "seeded {} students + {} stalls in {:.1?}",
        size.students,
        size.stalls,
        seeded.elapsed()
    );
    for table in ["students", "stalls"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await?;
    }

    let mut redis = redis::aio::ConnectionManager::new(redis::Client::open(redis_url)?).await?;
    let memory_before = redis_used_memory(&mut redis).await?;
    let env = [
        ("NEON_DATABASE_URL", db_url.to_string()),
        ("REDIS_URL", redis_url.to_string()),
        ("CACHE_KEY_PREFIX", prefix.to_string()),
        ("JWT_SECRET", "bench-secret".to_string()),
        ("LOG_LEVEL", "warn".to_string()),
    ];
    let (cold, cold_wall) = run_warmer(&env)?;
    let memory_after = redis_used_memory(&mut redis).await?;
    let (warm, warm_wall) = run_warmer(&env)?;

    let rows = (size.students + size.stalls) as f64;
    let rendered = cold["kinds"]
        .as_array()
        .map(|k| {
            k.iter()
                .map(|k| k["rendered"].as_f64().unwrap_or(0.0))
                .sum::<f64>()
        })
        .unwrap_or(0.0);
    let renewed = warm["kinds"]
        .as_array()
        .map(|k| {
            k.iter()
                .map(|k| k["renewed"].as_f64().unwrap_or(0.0))
                .sum::<f64>()
        })
        .unwrap_or(0.0);

    // Bytes per entry: the stored string of a sample of keys.
    let mut cursor = 0u64;
    let (mut sampled, mut bytes) = (0u64, 0u64);
    while sampled < 1000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(500)
            .query_async(&mut redis)
            .await?;
        for key in keys {
            let length: u64 = redis::cmd("STRLEN")
                .arg(&key)
                .query_async(&mut redis)
                .await?;
            bytes += length;
            sampled += 1;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // Leave Redis as found: remove this run's keys.
    tools::cleanup::unlink_matching(&mut redis, &format!("{prefix}*")).await?;

    let stages = &cold["stages"];
    println!("machine: {}", machine());
    println!(
        "rows: {} students + {} stalls (app-format HS256 JWT tokens, ECC H, 400 px, margin 4)",
        size.students, size.stalls
    );
    println!(
        "cold warm: {rendered:.0} rendered in {:.2} s wall = {:.0} QRs/s end to end (warmer's own figure {:.0} QRs/s), peak memory {:.1} MiB",
        cold_wall.as_secs_f64(),
        rendered / cold_wall.as_secs_f64(),
        cold["qrs_per_second"].as_f64().unwrap_or(0.0),
        cold["peak_memory_mib"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  stage time summed over workers (ms): query {:.0}, matrix {:.0}, png {:.0}, base64 {:.0}, redis {:.0}",
        stages["query_ms"].as_f64().unwrap_or(0.0),
        stages["matrix_ms"].as_f64().unwrap_or(0.0),
        stages["png_ms"].as_f64().unwrap_or(0.0),
        stages["base64_ms"].as_f64().unwrap_or(0.0),
        stages["redis_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "unchanged re-warm: {renewed:.0} renewed in {:.3} s wall = {:.0} rows/s end to end (warmer's own figure {:.0} rows/s), peak memory {:.1} MiB",
        warm_wall.as_secs_f64(),
        rows / warm_wall.as_secs_f64(),
        warm["qrs_per_second"].as_f64().unwrap_or(0.0),
        warm["peak_memory_mib"].as_f64().unwrap_or(0.0)
    );
    println!(
        "bytes per cached entry (data URL, mean of {sampled}): {:.0}",
        bytes as f64 / sampled.max(1) as f64
    );
    println!(
        "Redis memory per 10,000 entries: {:.2} MiB",
        (memory_after - memory_before) as f64 / rows * 10_000.0 / 1_048_576.0
    );
    Ok(())
}

/// fast_qr's matrix, drawn by the same PNG code as ours.
struct FastQrGrid(fast_qr::QRCode);

impl ModuleGrid for FastQrGrid {
    fn size(&self) -> usize {
        self.0.size
    }
    fn is_dark(&self, x: usize, y: usize) -> bool {
        self.0[y][x].value()
    }
}

fn fast_qr_level(ecc: qr::Ecc) -> fast_qr::ECL {
    match ecc {
        qr::Ecc::L => fast_qr::ECL::L,
        qr::Ecc::M => fast_qr::ECL::M,
        qr::Ecc::Q => fast_qr::ECL::Q,
        qr::Ecc::H => fast_qr::ECL::H,
    }
}

/// The `qrcode` crate's matrix, drawn by the same PNG code as ours.
struct QrcodeGrid(qrcode::QrCode);

impl ModuleGrid for QrcodeGrid {
    fn size(&self) -> usize {
        self.0.width()
    }
    fn is_dark(&self, x: usize, y: usize) -> bool {
        self.0[(x, y)] == qrcode::Color::Dark
    }
}

/// Bytes of a PNG's image data (its IDAT chunks).
fn idat_len(png: &[u8]) -> usize {
    let mut at = 8;
    let mut total = 0;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]) as usize;
        if &png[at + 4..at + 8] == b"IDAT" {
            total += len;
        }
        at += 12 + len;
    }
    total
}

/// A 1-bit PNG's scanlines as a PNG encoder compresses them: each a filter byte (none) and
/// the row.
fn raw_scanlines(png_bytes: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("PNG too large")?];
    let info = reader.next_frame(&mut buf)?;
    let mut raw = Vec::with_capacity(buf.len() + info.height as usize);
    for row in buf.chunks(info.line_size).take(info.height as usize) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    Ok(raw)
}

fn decode(png_bytes: &[u8]) -> Result<String, Failure> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("PNG too large")?];
    let info = reader.next_frame(&mut buf)?;
    let (width, row_bytes) = (info.width as usize, info.line_size);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, width, |x, y| {
        if buf[y * row_bytes + x / 8] & (0x80 >> (x % 8)) != 0 {
            255
        } else {
            0
        }
    });
    let grids = image.detect_grids();
    let grid = grids.first().ok_or("no QR code found")?;
    Ok(grid.decode()?.1)
}

fn render(args: &[String]) -> Result<(), Failure> {
    let count = flag(args, "--count", 2_000)?;
    let secret = SecretString::from("bench-secret");
    let tokens: Vec<String> = (0..count)
        .map(|i| seed::student_token(&secret, i))
        .collect::<Result<_, _>>()?;
    let settings = QrSettings::default();
    let mean_len = tokens.iter().map(String::len).sum::<usize>() as f64 / count as f64;
    println!("machine: {}", machine());
    println!("{count} app-format student tokens, mean {mean_len:.0} chars, ECC H, 400 px, margin 4; one core");

    // Matrix encoders: ours (`qr::encode_matrix`), fast_qr and the `qrcode` crate.
    let started = Instant::now();
    let ours: Vec<_> = tokens
        .iter()
        .map(|t| qr::encode_matrix(t, settings.ecc))
        .collect::<Result<_, _>>()?;
    let our_matrix = started.elapsed();
    let started = Instant::now();
    let fast: Vec<_> = tokens
        .iter()
        .map(|t| {
            fast_qr::QRBuilder::new(t.as_bytes())
                .ecl(fast_qr_level(settings.ecc))
                .build()
                .map(FastQrGrid)
        })
        .collect::<Result<_, _>>()?;
    let fast_matrix = started.elapsed();
    let started = Instant::now();
    let slow: Vec<_> = tokens
        .iter()
        .map(|t| {
            qrcode::QrCode::with_error_correction_level(t.as_bytes(), qrcode::EcLevel::H)
                .map(QrcodeGrid)
        })
        .collect::<Result<_, _>>()?;
    let slow_matrix = started.elapsed();
    let started = Instant::now();
    let our_png: Vec<Vec<u8>> = ours
        .iter()
        .map(|m| qr::png_from_grid(m, &settings))
        .collect::<Result<_, _>>()?;
    let png_time = started.elapsed();
    let fast_png: Vec<Vec<u8>> = fast
        .iter()
        .map(|m| qr::png_from_grid(m, &settings))
        .collect::<Result<_, _>>()?;
    let slow_png: Vec<Vec<u8>> = slow
        .iter()
        .map(|m| qr::png_from_grid(m, &settings))
        .collect::<Result<_, _>>()?;
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / count as f64;
    println!(
        "matrix, ms each: ours {:.3}; fast_qr {:.3} ({:.1}x ours); qrcode {:.3} ({:.1}x ours)",
        per(our_matrix),
        per(fast_matrix),
        fast_matrix.as_secs_f64() / our_matrix.as_secs_f64(),
        per(slow_matrix),
        slow_matrix.as_secs_f64() / our_matrix.as_secs_f64()
    );
    println!("1-bit PNG: {:.3} ms each", per(png_time));
    println!(
        "images/s per core: ours {:.0}, fast_qr {:.0}, qrcode {:.0}",
        count as f64 / (our_matrix + png_time).as_secs_f64(),
        count as f64 / (fast_matrix + png_time).as_secs_f64(),
        count as f64 / (slow_matrix + png_time).as_secs_f64()
    );
    let checked = count.min(200);
    for (i, token) in tokens.iter().take(checked).enumerate() {
        for png in [&our_png[i], &fast_png[i], &slow_png[i]] {
            if decode(png)? != *token {
                return Err(format!("token {i} did not decode back from every encoder").into());
            }
        }
    }
    println!("decoded {checked} images of each encoder back to their tokens: all identical");

    // The rotating QR (ECC M, margin 1, 300 px) of a token per student and window.
    let signer = shared::token::RotatingSigner::new(&secret)?;
    let window = shared::token::window_at(chrono::Utc::now().timestamp());
    let started = Instant::now();
    let mut rotating_len = 0;
    for i in 0..count {
        let image = shared::rotating::render(&signer, &seed::registration_no(i), window)?;
        rotating_len += image.token.len();
    }
    let rotating = started.elapsed();
    let started = Instant::now();
    for i in 0..count {
        let token = signer.token(&seed::registration_no(i), window)?;
        qr::encode_matrix(&token, shared::rotating::ROTATING_QR.ecc)?;
    }
    println!(
        "rotating QR (mean token {:.0} chars, ECC M, 300 px, margin 1): {:.3} ms per image ({:.3} ms of it the matrix), {:.0} images/s per core",
        rotating_len as f64 / count as f64,
        per(rotating),
        per(started.elapsed()),
        count as f64 / rotating.as_secs_f64()
    );

    // The PNG's pixels compressed: ours (the image's own Huffman codes, repeats as copies)
    // against miniz_oxide, a general compressor, at each level, on the same scanlines.
    let data_url_bytes: usize = our_png.iter().map(|png| qr::data_url(png).len()).sum();
    println!(
        "PNG ours: {:.3} ms each (drawing, compressing, framing), IDAT {:.0} bytes, data URL {:.0} bytes",
        per(png_time),
        our_png.iter().map(|png| idat_len(png)).sum::<usize>() as f64 / count as f64,
        data_url_bytes as f64 / count as f64
    );
    let scanlines: Vec<Vec<u8>> = our_png
        .iter()
        .map(|png| raw_scanlines(png))
        .collect::<Result<_, _>>()?;
    for level in [1u8, 2, 3, 6, 9] {
        let started = Instant::now();
        let total: usize = scanlines
            .iter()
            .map(|raw| miniz_oxide::deflate::compress_to_vec_zlib(raw, level).len())
            .sum();
        println!(
            "miniz_oxide level {level}: {:.3} ms each (compressing alone), IDAT {:.0} bytes",
            per(started.elapsed()),
            total as f64 / count as f64
        );
    }
    Ok(())
}
