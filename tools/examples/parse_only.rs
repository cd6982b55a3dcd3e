fn hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .collect::<Vec<_>>()
        .join(" ")
}
fn main() {
    let bytes = std::fs::read("/tmp/bench100k.xlsx").unwrap();
    println!("start: {}", hwm());
    let t = std::time::Instant::now();
    let parsed = shared::spreadsheet::read_records(
        &bytes,
        shared::spreadsheet::Format::Xlsx,
        shared::db::Kind::Students,
        &Default::default(),
        chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
    )
    .unwrap();
    println!(
        "parsed {} rows in {:?}: {}",
        parsed.rows_seen,
        t.elapsed(),
        hwm()
    );
    drop(parsed);
    println!("dropped: {}", hwm());
}
