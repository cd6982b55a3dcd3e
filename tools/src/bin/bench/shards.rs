//! `bench shards`: what one shard of a sharded warm does per vCPU, and what that makes of an
//! event of a million rows. Seeds app-format rows (HS256 JWTs, the app's 400 px ECC H images),
//! then runs the release `warm-qr-cache` as shard processes (`--shard i --shards 2`):
//!
//! - 1 CPU, alone: shard 0 pinned to one core (`taskset`), the other core left to Postgres and
//!   Redis, as a 1769 MB Lambda has one vCPU and the servers are elsewhere;
//! - 1 CPU each, 2 at once: both shards in parallel, each pinned to its own core (they share the
//!   machine with Postgres and Redis, so this understates a shard);
//! - 2 CPUs: shard 0 alone on both cores (a 3538 MB Lambda).
//!
//! Each configuration runs cold (a fresh key prefix: every image rendered), then unchanged (every
//! entry renewed). Rows/s per shard is the shard's rows over its process's wall time (start,
//! connect, query, render, store). The projection for 1,000,000 rows at N shards is
//! 1,000,000 / N / (rows/s per shard): the shards of a Lambda run are separate machines, and
//! Postgres and Redis are far from busy at these rates (BENCHMARKS.md).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use shared::db::DatabaseSettings;
use tools::seed::{self, DemoSize};

use super::{admin_database_url, flag, machine, redis_url, Failure};

const SHARDS: u32 = 2;
const PROJECTED_ROWS: f64 = 1_000_000.0;
const PROJECTED_SHARDS: [u32; 5] = [1, 2, 4, 8, 16];

/// How a shard process gets its CPUs.
#[derive(Clone, Copy)]
enum Cpus {
    /// Pinned to this core alone.
    Core(u32),
    /// Every core of the machine.
    All,
}

/// A configuration: its name, its vCPUs per shard, and the shards it runs at once.
type Configuration = (&'static str, u32, Vec<(u32, Cpus)>);

/// One shard process's outcome.
struct ShardRun {
    rows: u64,
    wall: Duration,
    summary: Value,
}

impl ShardRun {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64()
    }
}

fn rows_of(summary: &Value, field: &str) -> u64 {
    summary["kinds"]
        .as_array()
        .map(|kinds| kinds.iter().filter_map(|k| k[field].as_u64()).sum())
        .unwrap_or(0)
}

fn run_shard(env: &[(&str, String)], index: u32, cpus: Cpus) -> Result<ShardRun, Failure> {
    let exe = crate::warmer_binary()?;
    let mut command = match cpus {
        Cpus::Core(core) => {
            let mut taskset = Command::new("taskset");
            taskset.arg("-c").arg(core.to_string()).arg(&exe);
            taskset
        }
        Cpus::All => Command::new(&exe),
    };
    command
        .args(["--json", "--shard", &index.to_string()])
        .args(["--shards", &SHARDS.to_string()])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let output: Output = command.output()?;
    let wall = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "shard {index} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let summary: Value = serde_json::from_slice(&output.stdout)?;
    Ok(ShardRun {
        rows: rows_of(&summary, "cached"),
        wall,
        summary,
    })
}

/// Runs the shards given at once, each on its CPUs; returns their runs in order.
fn run_at_once(env: &[(&str, String)], shards: &[(u32, Cpus)]) -> Result<Vec<ShardRun>, Failure> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter()
            .map(|&(index, cpus)| {
                scope.spawn(move || run_shard(env, index, cpus).map_err(|e| e.to_string()))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle.join() {
                Ok(Ok(run)) => Ok(run),
                Ok(Err(error)) => Err(error.into()),
                Err(_) => Err("a shard's thread panicked".into()),
            })
            .collect()
    })
}

/// A configuration measured cold, then unchanged.
struct Measured {
    name: &'static str,
    vcpus: u32,
    cold: Vec<ShardRun>,
    unchanged: Vec<ShardRun>,
}

impl Measured {
    fn rate(runs: &[ShardRun]) -> f64 {
        runs.iter().map(ShardRun::rate).sum::<f64>() / runs.len() as f64
    }
}

pub async fn run(args: &[String]) -> Result<(), Failure> {
    let students = flag(args, "--students", 200_000)?;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Err("bench shards needs 2 cores or more".into());
    }
    let admin_url = admin_database_url();
    let redis_url = redis_url();
    let database = format!("qr_bench_shards_{}", std::process::id());
    let admin = DatabaseSettings::parse(&admin_url)?.connect().await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await?;
    let mut url = url::Url::parse(&admin_url)?;
    url.set_path(&database);
    let result = measure(url.as_str(), &redis_url, students).await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await;
    result
}

async fn measure(db_url: &str, redis_url: &str, students: usize) -> Result<(), Failure> {
    let secret = SecretString::from("bench-secret");
    let mut client = DatabaseSettings::parse(db_url)?.connect().await?;
    shared::migrations::apply(&mut client).await?;
    let seeded = Instant::now();
    seed::seed(
        &client,
        &secret,
        DemoSize {
            students,
            stalls: 0,
        },
    )
    .await?;
    eprintln!("seeded {students} students in {:.1?}", seeded.elapsed());
    for table in ["students", "stalls"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await?;
    }
    let mut redis = redis::aio::ConnectionManager::new(redis::Client::open(redis_url)?).await?;

    let configurations: [Configuration; 3] = [
        ("1 CPU, alone", 1, vec![(0, Cpus::Core(1))]),
        (
            "1 CPU each, 2 at once",
            1,
            vec![(0, Cpus::Core(0)), (1, Cpus::Core(1))],
        ),
        ("2 CPUs, alone", 2, vec![(0, Cpus::All)]),
    ];
    let mut measured = Vec::new();
    for (number, (name, vcpus, shards)) in configurations.into_iter().enumerate() {
        // A prefix of its own: the cold run finds nothing cached.
        let prefix = format!("bench-shards:{}:{number}:", std::process::id());
        let env = [
            ("NEON_DATABASE_URL", db_url.to_string()),
            ("REDIS_URL", redis_url.to_string()),
            ("CACHE_KEY_PREFIX", prefix.clone()),
            ("JWT_SECRET", "bench-secret".to_string()),
            ("LOG_LEVEL", "warn".to_string()),
        ];
        let cold = run_at_once(&env, &shards)?;
        let unchanged = run_at_once(&env, &shards)?;
        tools::cleanup::unlink_matching(&mut redis, &format!("{prefix}*")).await?;
        for (run, again) in cold.iter().zip(&unchanged) {
            if rows_of(&run.summary, "rendered") != run.rows
                || rows_of(&again.summary, "renewed") != run.rows
            {
                return Err(format!(
                    "{name}: a cold shard must render every row and the re-run renew them: {} / {}",
                    run.summary, again.summary
                )
                .into());
            }
        }
        measured.push(Measured {
            name,
            vcpus,
            cold,
            unchanged,
        });
    }

    println!("machine: {}", machine());
    println!(
        "rows: {students} students (app-format HS256 JWTs, ECC H, 400 px, margin 4), split in {SHARDS} shards"
    );
    println!("| configuration | vCPUs per shard | shard | rows | cold: wall, rows/s | unchanged: wall, rows/s | peak memory (cold) |");
    println!("|---|---|---|---|---|---|---|");
    for m in &measured {
        for (run, again) in m.cold.iter().zip(&m.unchanged) {
            println!(
                "| {} | {} | {} | {} | {:.2} s, {:.0} | {:.3} s, {:.0} | {:.1} MiB |",
                m.name,
                m.vcpus,
                run.summary["shard"]["index"],
                run.rows,
                run.wall.as_secs_f64(),
                run.rate(),
                again.wall.as_secs_f64(),
                again.rate(),
                run.summary["peak_memory_mib"].as_f64().unwrap_or(0.0)
            );
        }
    }
    // The projection takes a shard alone on its vCPUs: a Lambda shard has its own machine.
    let one = &measured[0];
    let two = &measured[2];
    println!();
    println!(
        "projected wall time for {PROJECTED_ROWS:.0} rows (rows / shards / rows/s per shard):"
    );
    println!("| shards | 1 vCPU cold | 1 vCPU unchanged | 2 vCPUs cold | 2 vCPUs unchanged |");
    println!("|---|---|---|---|---|");
    let project = |shards: u32, rate: f64| PROJECTED_ROWS / f64::from(shards) / rate;
    for shards in PROJECTED_SHARDS {
        println!(
            "| {shards} | {:.1} s | {:.2} s | {:.1} s | {:.2} s |",
            project(shards, Measured::rate(&one.cold)),
            project(shards, Measured::rate(&one.unchanged)),
            project(shards, Measured::rate(&two.cold)),
            project(shards, Measured::rate(&two.unchanged)),
        );
    }
    Ok(())
}
