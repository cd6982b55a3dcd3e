//! `bench import`: a 100,000-row students workbook through the importer (S3 get, parse and
//! validate, chunked binary COPY load), then the QR caching of the new rows, in a child process that
//! reports its own peak memory; and in the same run a row-by-row INSERT load of the same rows, and the cost
//! of the legacy bcrypt password setting. Needs Postgres, Redis and moto's S3 server
//! (BENCH_S3_ENDPOINT, default http://127.0.0.1:4566).

use std::process::{Command, Stdio};
use std::time::Instant;

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use secrecy::SecretString;
use shared::cache::{Cache, CacheSettings};
use shared::config::Config;
use shared::db::{Database, DatabaseSettings};
use shared::import::event::ImportTarget;
use shared::import::Importer;
use shared::kind::Kind;
use shared::spreadsheet::{self, Records};
use shared::storage::Storage;

use super::{admin_database_url, flag, machine, redis_url, Failure};

const SCHOOL: &str = "School of Computer Science and Engineering";

pub(crate) fn s3_client() -> aws_sdk_s3::Client {
    let endpoint =
        std::env::var("BENCH_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let credentials = aws_sdk_s3::config::Credentials::new("bench", "bench", None, None, "bench");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn workbook(rows: usize) -> Result<Vec<u8>, Failure> {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    let headers = [
        "registration_no*",
        "email",
        "full_name*",
        "school*",
        "date_of_birth*",
        "pincode*",
        "phone",
        "address",
        "program_name",
        "batch",
    ];
    for (c, header) in headers.iter().enumerate() {
        sheet.write_string(0, c as u16, *header)?;
    }
    let date = Format::new().set_num_format("dd/mm/yyyy");
    for i in 0..rows {
        let r = i as u32 + 1;
        sheet.write_string(r, 0, format!("{}{:06}", 2021 + i % 4, i))?;
        sheet.write_string(r, 1, format!("student{i}@campus.example.in"))?;
        sheet.write_string(r, 2, format!("Student {i}"))?;
        sheet.write_string(r, 3, SCHOOL)?;
        sheet.write_datetime_with_format(
            r,
            4,
            ExcelDateTime::from_ymd(
                2000 + (i % 6) as u16,
                1 + (i % 12) as u8,
                1 + (i % 28) as u8,
            )?,
            &date,
        )?;
        sheet.write_number(r, 5, (110_001 + i % 800_000) as f64)?;
        sheet.write_string(r, 6, format!("98{:08}", i))?;
        sheet.write_string(r, 7, "Hostel Block C")?;
        sheet.write_string(r, 8, "B.Tech CSE")?;
        sheet.write_number(r, 9, (2021 + i % 4) as f64)?;
    }
    Ok(workbook.save_to_buffer()?)
}

async fn fresh_database(admin_url: &str, name: &str) -> Result<String, Failure> {
    let admin = DatabaseSettings::parse(admin_url)?.connect().await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut url = url::Url::parse(admin_url)?;
    url.set_path(name);
    let mut client = DatabaseSettings::parse(url.as_str())?.connect().await?;
    shared::migrations::apply(&mut client).await?;
    client
        .batch_execute(&format!(
            "INSERT INTO schools (school_name) VALUES ('{SCHOOL}')"
        ))
        .await?;
    Ok(url.to_string())
}

pub async fn run(args: &[String]) -> Result<(), Failure> {
    let rows = flag(args, "--rows", 100_000)?;
    let rounds = flag(args, "--repeat", 1)?.max(1);
    let admin_url = admin_database_url();
    let pid = std::process::id();
    let (copy_db, insert_db, floor_db) = (
        format!("qr_bench_import_{pid}"),
        format!("qr_bench_insert_{pid}"),
        format!("qr_bench_floor_{pid}"),
    );
    let mut databases = vec![copy_db.clone(), insert_db.clone(), floor_db.clone()];
    let result = async {
        let generated = Instant::now();
        let bytes = workbook(rows)?;
        eprintln!("generated a {rows}-row .xlsx of {:.1} MiB in {:.1?}", bytes.len() as f64 / 1_048_576.0, generated.elapsed());
        let s3 = s3_client();
        let bucket = format!("qr-bench-{pid}");
        s3.create_bucket().bucket(&bucket).send().await?;
        let key = "imports/students/bench.xlsx";
        let put = s3.put_object().bucket(&bucket).key(key).body(bytes.clone().into()).send().await?;
        let e_tag = put.e_tag().unwrap_or_default().trim_matches('"').to_string();

        let copy_url = fresh_database(&admin_url, &copy_db).await?;
        let exe = std::env::current_exe()?;
        // The admin's preview of the same file first: the import's own reading and planning,
        // nothing written.
        let output = Command::new(&exe).args(["import-child", &copy_url, &bucket, key, &e_tag, "preview"]).stderr(Stdio::inherit()).output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!("the preview child failed: {text}").into());
        }
        let preview: serde_json::Value = serde_json::from_str(text.trim())?;
        let preview_line = format!(
            "preview (dry run) of the same file: {:.2} s, {} rows to insert, peak memory {:.1} MiB",
            preview["preview_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            preview["counts"]["inserted"],
            preview["peak_memory_mib"].as_f64().unwrap_or(0.0)
        );
        checkpoint(&admin_url).await?;
        let (report, wall) = import_in_child(&copy_url, &bucket, key, &e_tag)?;
        let t = &report["timings"];
        let get = |name: &str| t[name].as_f64().unwrap_or(0.0);
        let mut imports = vec![(get("parse_ms") + get("load_ms")) / 1000.0];
        println!("machine: {}", machine());
        println!("{rows}-row students .xlsx ({:.1} MiB), status {}, inserted {}", bytes.len() as f64 / 1_048_576.0, report["status"], report["counts"]["inserted"]);
        println!(
            "  S3 get {:.0} ms, then parse + validate (rows loaded meanwhile) {:.0} ms, rest of the load {:.0} ms: parse+validate+load {:.2} s",
            get("download_ms"),
            get("parse_ms"),
            get("load_ms"),
            imports[0]
        );
        println!("  report {:.0} ms; QR caching of {} new rows {:.0} ms ({:.0} QRs/s)", get("report_ms"), report["qr_cached"], get("cache_ms"), report["qr_cached"].as_f64().unwrap_or(0.0) / get("cache_ms") * 1000.0);
        println!("  whole child process {:.2} s wall, peak memory {:.1} MiB", wall.as_secs_f64(), report["peak_memory_mib"].as_f64().unwrap_or(0.0));
        println!("{preview_line}");

        // The same file uploaded again under another name: every row exists and is unchanged,
        // the update path an admin's re-upload takes.
        let again = "imports/students/bench-again.xlsx";
        let put = s3.put_object().bucket(&bucket).key(again).body(bytes.clone().into()).send().await?;
        let again_tag = put.e_tag().unwrap_or_default().trim_matches('"').to_string();
        checkpoint(&admin_url).await?;
        let (report, _) = import_in_child(&copy_url, &bucket, again, &again_tag)?;
        let t = &report["timings"];
        let get = |name: &str| t[name].as_f64().unwrap_or(0.0);
        println!(
            "the same file again: unchanged {}, parse+validate+load {:.2} s, peak memory {:.1} MiB",
            report["counts"]["unchanged"],
            (get("parse_ms") + get("load_ms")) / 1000.0,
            report["peak_memory_mib"].as_f64().unwrap_or(0.0)
        );

        // The same rows, one INSERT each (in one transaction), as the Node app did.
        let insert_url = fresh_database(&admin_url, &insert_db).await?;
        let parsed = spreadsheet::read_records(&bytes, spreadsheet::Format::Xlsx, Kind::Students, &Default::default(), chrono::Utc::now().date_naive())
            .map_err(|e| e.to_string())?;
        let Records::Students(records) = parsed.records else { return Err("expected students".into()) };
        let mut client = DatabaseSettings::parse(&insert_url)?.connect().await?;
        let school: uuid::Uuid = client.query_one("SELECT id FROM schools", &[]).await?.get(0);
        let started = Instant::now();
        let tx = client.transaction().await?;
        let statement = tx
            .prepare(
                "INSERT INTO students (registration_no, email, full_name, school_id, phone, date_of_birth, pincode,
                                       address, program_name, batch, password_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, '!') ON CONFLICT (registration_no) DO NOTHING",
            )
            .await?;
        for (_, r) in &records {
            tx.execute(
                &statement,
                &[
                    &r.registration_no.as_str(), &r.email.value().map(|e| e.as_str()), &r.full_name, &school,
                    &r.phone.value().map(|p| p.as_str()), &r.date_of_birth, &r.pincode.as_str(), &r.address.as_deref(), &r.program_name.as_deref(), &r.batch.value(),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        println!("row-by-row INSERT load of the same {} rows: {:.2} s", records.len(), started.elapsed().as_secs_f64());

        let mut floors = vec![copy_floor(&admin_url, &floor_db, &records).await?];
        println!("binary COPY alone of the same {} rows into the app's empty students table (to the end of the COPY, as the import): {:.2} s", records.len(), floors[0]);
        // More rounds of the import and its floor, each into fresh databases, in alternating
        // order: one round's ratio moves with what else the machine did meanwhile.
        for round in 1..rounds {
            let (import_db, copy_db) = (format!("qr_bench_import_{pid}_{round}"), format!("qr_bench_floor_{pid}_{round}"));
            databases.extend([import_db.clone(), copy_db.clone()]);
            let import_url = fresh_database(&admin_url, &import_db).await?;
            let import = || async {
                checkpoint(&admin_url).await?;
                let (report, _) = import_in_child(&import_url, &bucket, key, &e_tag)?;
                let t = &report["timings"];
                Ok::<f64, Failure>((t["parse_ms"].as_f64().unwrap_or(0.0) + t["load_ms"].as_f64().unwrap_or(0.0)) / 1000.0)
            };
            if round % 2 == 1 {
                floors.push(copy_floor(&admin_url, &copy_db, &records).await?);
                imports.push(import().await?);
            } else {
                imports.push(import().await?);
                floors.push(copy_floor(&admin_url, &copy_db, &records).await?);
            }
        }
        if rounds > 1 {
            let ratios: Vec<f64> = imports.iter().zip(&floors).map(|(i, f)| i / f).collect();
            let list = |values: &[f64], unit: &str| values.iter().map(|v| format!("{v:.2}{unit}")).collect::<Vec<_>>().join(", ");
            println!("{rounds} rounds, import (parse+validate+load): {}", list(&imports, " s"));
            println!("{rounds} rounds, binary COPY floor:             {}", list(&floors, " s"));
            println!("{rounds} rounds, ratio to the floor:            {}; median {:.2}x", list(&ratios, "x"), median(&ratios));
        }

        // The legacy password setting: bcrypt cost 12 on every core.
        let sample = 64;
        let started = Instant::now();
        {
            use rayon::prelude::*;
            (0..sample).into_par_iter().map(|i| bcrypt::hash(format!("20040309{i:06}"), 12)).collect::<Result<Vec<_>, _>>()?;
        }
        let per_10k = started.elapsed().as_secs_f64() / sample as f64 * 10_000.0;
        println!("legacy passwords (bcrypt cost 12, all {} cores): {:.0} s per 10,000 new students", rayon::current_num_threads(), per_10k);
        Ok::<(), Failure>(())
    }
    .await;
    if let Ok(admin) = DatabaseSettings::parse(&admin_url)?.connect().await {
        for name in &databases {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
    remove_bucket(&s3_client(), &format!("qr-bench-{pid}")).await;
    result
}

/// Runs the import in a child process: its report as JSON, and the child's wall time.
fn import_in_child(
    url: &str,
    bucket: &str,
    key: &str,
    e_tag: &str,
) -> Result<(serde_json::Value, std::time::Duration), Failure> {
    let started = Instant::now();
    let output = Command::new(std::env::current_exe()?)
        .args(["import-child", url, bucket, key, e_tag])
        .stderr(Stdio::inherit())
        .output()?;
    let wall = started.elapsed();
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("the import child failed: {text}").into());
    }
    Ok((serde_json::from_str(text.trim())?, wall))
}

/// The floor any loader has on this server, in seconds: the same rows binary-COPied, in one
/// statement, into the app's empty students table of a fresh database, nothing checked or read;
/// up to the end of the COPY, before the commit, as the import's figure.
async fn copy_floor(
    admin_url: &str,
    name: &str,
    records: &[(u32, spreadsheet::StudentRecord)],
) -> Result<f64, Failure> {
    use tokio_postgres::types::{ToSql, Type};
    let url = fresh_database(admin_url, name).await?;
    let mut client = DatabaseSettings::parse(&url)?.connect().await?;
    let school: uuid::Uuid = client
        .query_one("SELECT id FROM schools", &[])
        .await?
        .get(0);
    let started = Instant::now();
    let tx = client.transaction().await?;
    let sink = tx
        .copy_in(
            "COPY students (id, registration_no, email, full_name, school_id, phone, date_of_birth, pincode,
                            address, program_name, batch, qr_code_token, password_hash)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    let mut writer = Box::pin(tokio_postgres::binary_copy::BinaryCopyInWriter::new(
        sink,
        &[
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::UUID,
            Type::TEXT,
            Type::DATE,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
        ],
    ));
    let token = "x".repeat(150);
    for (_, r) in records {
        writer
            .as_mut()
            .write(&[
                &uuid::Uuid::now_v7() as &(dyn ToSql + Sync),
                &r.registration_no.as_str(),
                &r.email.value().map(|e| e.as_str()),
                &r.full_name,
                &school,
                &r.phone.value().map(|p| p.as_str()),
                &r.date_of_birth,
                &r.pincode.as_str(),
                &r.address.as_deref(),
                &r.program_name.as_deref(),
                &r.batch.value(),
                &token,
                &"!",
            ])
            .await?;
    }
    writer.as_mut().finish().await?;
    // The import's own figure stops before its commit too (the commit follows the report).
    let loaded = started.elapsed().as_secs_f64();
    tx.commit().await?;
    Ok(loaded)
}

/// Writes out what earlier steps left in Postgres's buffers, so that no measured load shares the
/// disk with a checkpoint another step started: the import and its floor each start from one.
async fn checkpoint(admin_url: &str) -> Result<(), Failure> {
    let admin = DatabaseSettings::parse(admin_url)?.connect().await?;
    admin.batch_execute("CHECKPOINT").await?;
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Deletes the bench's bucket and everything in it (the uploads and the import's reports), as
/// the databases are dropped: best effort, a bench that failed early has none.
async fn remove_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    while let Ok(listed) = s3.list_objects_v2().bucket(bucket).send().await {
        let keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|object| object.key().map(str::to_owned))
            .collect();
        if keys.is_empty() {
            break;
        }
        let mut deleted = 0;
        for key in keys {
            if s3
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .is_ok()
            {
                deleted += 1;
            }
        }
        // Nothing could be deleted: stop rather than list the same keys for ever.
        if deleted == 0 {
            break;
        }
    }
    let _ = s3.delete_bucket().bucket(bucket).send().await;
}

/// The import alone, in its own process so its peak memory is its own: prints the report as JSON.
pub async fn child(args: &[String]) -> Result<(), Failure> {
    let (db_url, bucket, key, e_tag, preview) = match args {
        [_, db_url, bucket, key, e_tag] => (db_url, bucket, key, e_tag, false),
        [_, db_url, bucket, key, e_tag, mode] if mode == "preview" => {
            (db_url, bucket, key, e_tag, true)
        }
        _ => return Err("usage: bench import-child DB_URL BUCKET KEY ETAG [preview]".into()),
    };
    let redis_url = redis_url();
    let vars = [
        ("NEON_DATABASE_URL", db_url.clone()),
        ("REDIS_URL", redis_url.clone()),
        ("JWT_SECRET", "bench-secret".to_string()),
        (
            "CACHE_KEY_PREFIX",
            format!("bench-import:{}:", std::process::id()),
        ),
    ];
    let config = Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })?;
    let cache = Cache::connect_lazily(
        &SecretString::from(redis_url),
        CacheSettings {
            ..config.cache.clone()
        },
    )?;
    let db = Database::new(config.database.clone());
    let storage = Storage::with_client(s3_client());
    let importer = Importer {
        db: &db,
        cache: &cache,
        storage: &storage,
        settings: &config.import,
        qr: &config.qr,
        jwt_secret: config.jwt_secret()?,
    };
    let target = ImportTarget {
        bucket: bucket.clone(),
        key: key.clone(),
        version: e_tag.clone(),
        version_id: None,
        kind: Kind::Students,
        format: spreadsheet::Format::Xlsx,
    };
    if preview {
        let started = Instant::now();
        let dry = importer
            .dry_run(bucket, key, shared::import::ImportOptions::default())
            .await?;
        let json = serde_json::json!({
            "preview_ms": started.elapsed().as_secs_f64() * 1000.0,
            "counts": dry.counts,
            "peak_memory_mib": shared::telemetry::peak_memory_mib(),
        });
        println!("{json}");
        return Ok(());
    }
    let report = importer.import(&target).await?;
    // Leave Redis as found.
    let mut connection = cache.connection();
    let pattern = cache.settings().scan_pattern();
    tools::cleanup::unlink_matching(&mut connection, &pattern).await?;
    // The child's own high-water mark: a parent's wait4 would also count the pages it shared
    // with the child before exec (the workbook the parent generated).
    let mut json = serde_json::to_value(report.trimmed())?;
    json["peak_memory_mib"] = serde_json::json!(shared::telemetry::peak_memory_mib());
    println!("{json}");
    Ok(())
}
