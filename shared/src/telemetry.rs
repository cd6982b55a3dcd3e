//! Logs and metrics. Logs are `tracing` events: JSON lines in Lambda (each carrying the
//! invocation's `requestId` span), readable text on a terminal. Metrics are CloudWatch Embedded
//! Metric Format lines, which CloudWatch turns into metrics with no API call.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The CloudWatch namespace of every metric the functions emit.
pub const METRICS_NAMESPACE: &str = "QrFunctions";

/// The stage of a run outside AWS (no `STAGE` set): its metrics, if they ever reach
/// CloudWatch, stay apart from every deployed stage's.
pub const LOCAL_STAGE: &str = "local";

static STAGE: OnceLock<String> = OnceLock::new();

/// Sets the stage every metric record carries from now on (`Config::stage`, at cold start).
/// The first call wins: one process serves one stage.
pub fn set_stage(stage: &str) {
    let _ = STAGE.set(stage.to_owned());
}

/// The stage metric records carry: the one set at cold start, else [`LOCAL_STAGE`].
pub fn stage() -> &'static str {
    STAGE.get().map_or(LOCAL_STAGE, String::as_str)
}

/// The function a metric record comes from: its `Function` dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    WarmQrCache,
    ImportSpreadsheet,
    HttpApi,
}

impl Function {
    pub const ALL: [Function; 3] = [
        Function::WarmQrCache,
        Function::ImportSpreadsheet,
        Function::HttpApi,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Function::WarmQrCache => "warm-qr-cache",
            Function::ImportSpreadsheet => "import-spreadsheet",
            Function::HttpApi => "http-api",
        }
    }
}

/// Every metric the functions can emit: the one list of names, which the alarms in
/// `template.yaml` must come from (`tests/template` checks them against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    // The static warm.
    QrCached,
    QrRendered,
    QrRenewed,
    QrTokensMinted,
    QrFailed,
    WarmFailed,
    WarmDuration,
    QrsPerSecond,
    PeakMemory,
    // One shard of a sharded static warm (the whole run's figures above come from its merge).
    ShardDuration,
    ShardQrsPerSecond,
    ShardsFailed,
    // The rotating pre-warm.
    RotatingRendered,
    RotatingFailed,
    RotatingDuration,
    // The hit-rate sampler.
    CacheReads,
    CacheHitRate,
    ApiStaticHitRate,
    ApiRotatingHitRate,
    // Imports.
    ImportErrors,
    ImportRowsInserted,
    ImportRowsUpdated,
    ImportRowsUnchanged,
    ImportRowsRejected,
    ImportFailed,
    ImportDuration,
    // The API's QR reads.
    CacheHits,
    CacheMisses,
    CacheUnavailable,
    RotatingHits,
    RotatingMisses,
}

impl Metric {
    pub const ALL: [Metric; 31] = [
        Metric::QrCached,
        Metric::QrRendered,
        Metric::QrRenewed,
        Metric::QrTokensMinted,
        Metric::QrFailed,
        Metric::WarmFailed,
        Metric::WarmDuration,
        Metric::QrsPerSecond,
        Metric::PeakMemory,
        Metric::ShardDuration,
        Metric::ShardQrsPerSecond,
        Metric::ShardsFailed,
        Metric::RotatingRendered,
        Metric::RotatingFailed,
        Metric::RotatingDuration,
        Metric::CacheReads,
        Metric::CacheHitRate,
        Metric::ApiStaticHitRate,
        Metric::ApiRotatingHitRate,
        Metric::ImportErrors,
        Metric::ImportRowsInserted,
        Metric::ImportRowsUpdated,
        Metric::ImportRowsUnchanged,
        Metric::ImportRowsRejected,
        Metric::ImportFailed,
        Metric::ImportDuration,
        Metric::CacheHits,
        Metric::CacheMisses,
        Metric::CacheUnavailable,
        Metric::RotatingHits,
        Metric::RotatingMisses,
    ];

    /// The CloudWatch metric name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::QrCached => "QrCached",
            Metric::QrRendered => "QrRendered",
            Metric::QrRenewed => "QrRenewed",
            Metric::QrTokensMinted => "QrTokensMinted",
            Metric::QrFailed => "QrFailed",
            Metric::WarmFailed => "WarmFailed",
            Metric::WarmDuration => "WarmDuration",
            Metric::QrsPerSecond => "QrsPerSecond",
            Metric::PeakMemory => "PeakMemory",
            Metric::ShardDuration => "ShardDuration",
            Metric::ShardQrsPerSecond => "ShardQrsPerSecond",
            Metric::ShardsFailed => "ShardsFailed",
            Metric::RotatingRendered => "RotatingRendered",
            Metric::RotatingFailed => "RotatingFailed",
            Metric::RotatingDuration => "RotatingDuration",
            Metric::CacheReads => "CacheReads",
            Metric::CacheHitRate => "CacheHitRate",
            Metric::ApiStaticHitRate => "ApiStaticHitRate",
            Metric::ApiRotatingHitRate => "ApiRotatingHitRate",
            Metric::ImportErrors => "ImportErrors",
            Metric::ImportRowsInserted => "ImportRowsInserted",
            Metric::ImportRowsUpdated => "ImportRowsUpdated",
            Metric::ImportRowsUnchanged => "ImportRowsUnchanged",
            Metric::ImportRowsRejected => "ImportRowsRejected",
            Metric::ImportFailed => "ImportFailed",
            Metric::ImportDuration => "ImportDuration",
            Metric::CacheHits => "CacheHits",
            Metric::CacheMisses => "CacheMisses",
            Metric::CacheUnavailable => "CacheUnavailable",
            Metric::RotatingHits => "RotatingHits",
            Metric::RotatingMisses => "RotatingMisses",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text { ansi: bool },
}

/// True inside Lambda (and under `cargo lambda watch`, which sets the same variables).
pub fn in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
}

impl LogFormat {
    /// JSON in Lambda unless its log format is set to Text; text elsewhere, coloured on a terminal.
    pub fn detect() -> Self {
        let lambda_format = std::env::var("AWS_LAMBDA_LOG_FORMAT").unwrap_or_default();
        if in_lambda() && !lambda_format.eq_ignore_ascii_case("text")
            || lambda_format.eq_ignore_ascii_case("json")
        {
            LogFormat::Json
        } else {
            LogFormat::Text {
                ansi: !in_lambda() && std::io::stderr().is_terminal(),
            }
        }
    }
}

/// This project's crates, which a plain `LOG_LEVEL` applies to.
const OWN_CRATES: [&str; 5] = [
    "shared",
    "warm_qr_cache",
    "import_spreadsheet",
    "http_api",
    "tools",
];

/// The filter a `LOG_LEVEL` means. A plain level (`error`..`trace`) applies to this project's
/// code; its dependencies log at `info` at most, because at debug and trace some of them write
/// what crosses the wire (the Lambda runtime's invocation payloads with session cookies, HTTP
/// headers, signed S3 requests). A `RUST_LOG`-style filter naming crates is taken as written:
/// whoever names a dependency asks for its own lines.
pub fn effective_filter(log_level: &str) -> String {
    let level = log_level.trim().to_ascii_lowercase();
    if !matches!(level.as_str(), "debug" | "trace") {
        return level;
    }
    let mut filter = String::from("info");
    for name in OWN_CRATES {
        filter.push_str(&format!(",{name}={level}"));
    }
    filter
}

/// Installs the global subscriber. `filter` is the validated `Config::log_filter`.
pub fn init(filter: &str, format: LogFormat) {
    let _ = tracing::subscriber::set_global_default(subscriber(filter, format, std::io::stderr));
}

/// The subscriber `init` installs, writing to `writer` (tests capture it).
pub fn subscriber<W>(
    filter: &str,
    format: LogFormat,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_new(effective_filter(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .finish(),
        ),
        LogFormat::Text { ansi } => Box::new(builder.with_ansi(ansi).compact().finish()),
    }
}

/// The process's peak resident memory (`VmHWM`), on Linux. Measured by the process itself,
/// because a parent's `wait4` also counts the pages the child shared with it before `exec`.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// The dimensions of every record, in the order EMF declares them. The stage is one so that
/// stages sharing an account (and a namespace) never feed each other's alarms.
pub const DIMENSIONS: [&str; 2] = ["Function", "Stage"];

/// One EMF record: a set of metrics sharing the dimensions [`DIMENSIONS`].
#[derive(Debug, Clone)]
pub struct Metrics {
    function: Function,
    stage: &'static str,
    values: Vec<(Metric, &'static str, f64)>,
}

impl Metrics {
    /// A record of `function` in this process's [`stage`].
    pub fn new(function: Function) -> Self {
        Metrics {
            function,
            stage: stage(),
            values: Vec::new(),
        }
    }

    pub fn count(mut self, metric: Metric, value: u64) -> Self {
        self.values.push((metric, "Count", value as f64));
        self
    }

    pub fn milliseconds(mut self, metric: Metric, value: f64) -> Self {
        self.values.push((metric, "Milliseconds", value));
        self
    }

    pub fn megabytes(mut self, metric: Metric, value: f64) -> Self {
        self.values.push((metric, "Megabytes", value));
        self
    }

    pub fn percent(mut self, metric: Metric, value: f64) -> Self {
        self.values.push((metric, "Percent", value));
        self
    }

    pub fn per_second(mut self, metric: Metric, value: f64) -> Self {
        self.values.push((metric, "Count/Second", value));
        self
    }

    /// The EMF JSON line.
    pub fn to_emf(&self, timestamp_ms: u128) -> String {
        let definitions: Vec<Value> = self
            .values
            .iter()
            .map(|(metric, unit, _)| json!({"Name": metric.as_str(), "Unit": unit}))
            .collect();
        let mut record = Map::new();
        record.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms as u64,
                "CloudWatchMetrics": [{
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [DIMENSIONS],
                    "Metrics": definitions,
                }],
            }),
        );
        record.insert(DIMENSIONS[0].into(), json!(self.function.as_str()));
        record.insert(DIMENSIONS[1].into(), json!(self.stage));
        for (metric, _, value) in &self.values {
            record.insert(metric.as_str().into(), json!(value));
        }
        Value::Object(record).to_string()
    }

    /// Prints the record to stdout in Lambda, where CloudWatch picks it up; elsewhere logs it at
    /// debug so a terminal stays readable.
    pub fn emit(&self) {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let line = self.to_emf(timestamp);
        if in_lambda() {
            println!("{line}");
        } else {
            tracing::debug!(emf = %line, "metrics");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn plain_verbose_levels_reach_only_our_crates() {
        assert_eq!(
            effective_filter("TRACE"),
            "info,shared=trace,warm_qr_cache=trace,import_spreadsheet=trace,http_api=trace,tools=trace"
        );
        assert!(effective_filter("debug").starts_with("info,shared=debug,"));
        assert_eq!(effective_filter("warn"), "warn");
        assert_eq!(effective_filter("info"), "info");
        assert_eq!(effective_filter("hyper=trace"), "hyper=trace");
    }

    #[test]
    fn emf_line_declares_every_metric_and_its_dimension() {
        let line = Metrics::new(Function::WarmQrCache)
            .count(Metric::QrCached, 3)
            .milliseconds(Metric::WarmDuration, 12.5)
            .to_emf(1_700_000_000_000);
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["_aws"]["Timestamp"], 1_700_000_000_000u64);
        let directive = &value["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], METRICS_NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Function", "Stage"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "QrCached", "Unit": "Count"}, {"Name": "WarmDuration", "Unit": "Milliseconds"}])
        );
        assert_eq!(value["Function"], "warm-qr-cache");
        // No test in this binary sets a stage: a run outside AWS is `local`.
        assert_eq!(value["Stage"], LOCAL_STAGE);
        assert_eq!(value["QrCached"], 3.0);
        assert_eq!(value["WarmDuration"], 12.5);
    }

    #[test]
    fn metric_names_are_distinct() {
        let names: std::collections::HashSet<&str> =
            Metric::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(names.len(), Metric::ALL.len());
        let names: std::collections::HashSet<&str> =
            Function::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names.len(), Function::ALL.len());
    }

    #[test]
    fn peak_memory_is_read_on_linux() {
        let peak = peak_memory_mib().expect("/proc/self/status on Linux");
        assert!(peak > 1.0 && peak < 4096.0, "{peak}");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_the_request_id_of_the_invocation() {
        let captured = Captured::default();
        let subscriber = subscriber("info", LogFormat::Json, captured.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("Lambda runtime invoke", requestId = "req-123");
            let _entered = span.enter();
            tracing::info!(kind = "students", "warming");
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["message"], "warming");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["spans"][0]["requestId"], "req-123");
    }
}
