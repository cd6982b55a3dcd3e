//! `template.yaml` against the code: every alarm on a custom metric names a metric that the
//! functions' own record builders emit, with the dimensions they emit it with (the stage among
//! them), and every failure queue has a depth alarm. Needs no server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use http_api::qr_reads::Source;
use shared::db::Shard;
use shared::import::event::ImportTarget;
use shared::import::options::ImportOptions;
use shared::import::report::{self, ImportReport};
use shared::kind::Kind;
use shared::spreadsheet::Format;
use shared::telemetry::{self, Function, Metric, Metrics, DIMENSIONS, METRICS_NAMESPACE};
use shared::warm::{StageTimings, WarmSummary};
use warm_qr_cache::merge::{self, MergeRequest, ShardOutcome};
use warm_qr_cache::rotating::{Audience, RotatingSummary};
use warm_qr_cache::sampler::{HitRateSample, Rate};
use warm_qr_cache::Job;

/// Every record the functions emit, from the builders their emitting code calls: the static
/// warm (whole, one shard, and a sharded run's merge), the rotating pre-warm, the hit-rate sampler (every rate present), an import and a
/// failed import run, the API's static and rotating reads.
fn every_record() -> Vec<Metrics> {
    let warm = WarmSummary {
        kinds: Vec::new(),
        force: false,
        shard: None,
        duration_ms: 1.0,
        peak_memory_mib: Some(1.0),
        qrs_per_second: 1.0,
        stages: StageTimings::default(),
        outage_renewal: None,
    };
    let shard = WarmSummary {
        shard: Some(Shard::new(0, 1).unwrap()),
        ..warm.clone()
    };
    let merged = merge::merge(
        &MergeRequest {
            started_at: chrono::Utc::now(),
            shards: vec![ShardOutcome::Warmed {
                summary: shard.clone(),
            }],
        },
        chrono::Utc::now(),
    );
    let rotating = RotatingSummary {
        audience: Audience::RegisteredToday,
        students: 1,
        windows: vec![1],
        rendered: 1,
        already_cached: 0,
        failed: 0,
        failures: Vec::new(),
        duration_ms: 1.0,
        renders_per_second: 1.0,
    };
    let rate = Rate {
        hits: 1,
        misses: 1,
        percent: Some(50.0),
    };
    let sample = HitRateSample {
        server: rate,
        api_static: rate,
        api_rotating: rate,
        since_previous: true,
    };
    let target = ImportTarget {
        bucket: "imports".into(),
        key: "imports/students/a.csv".into(),
        version: "v1".into(),
        version_id: None,
        kind: Kind::Students,
        format: Format::Csv,
    };
    let import = ImportReport::new(uuid::Uuid::nil(), &target, ImportOptions::default());
    vec![
        warm.metrics(Function::WarmQrCache),
        shard.metrics(Function::WarmQrCache),
        merged.metrics(),
        rotating.metrics(),
        sample.metrics(),
        import.metrics(),
        report::failed_run_metrics(),
        Source::Hit.static_read_metrics(),
        Source::Hit.rotating_read_metrics(),
    ]
}

/// (metric name, Function dimension) of every metric emitted, each checked to carry the
/// function and the stage as its dimensions.
fn emitted() -> BTreeSet<(String, String)> {
    let mut emitted = BTreeSet::new();
    for record in every_record() {
        let line: Json = serde_json::from_str(&record.to_emf(0)).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], METRICS_NAMESPACE, "{line}");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["Function", "Stage"]]),
            "every record is dimensioned by function and stage: {line}"
        );
        assert_eq!(line["Stage"], telemetry::stage(), "{line}");
        let function = line["Function"].as_str().unwrap().to_owned();
        for definition in directive["Metrics"].as_array().unwrap() {
            let name = definition["Name"].as_str().unwrap().to_owned();
            assert!(line.get(&name).is_some(), "{name} has no value: {line}");
            emitted.insert((name, function.clone()));
        }
    }
    emitted
}

#[test]
fn the_records_cover_every_metric_the_code_can_name() {
    let names: BTreeSet<String> = emitted().into_iter().map(|(name, _)| name).collect();
    let all: BTreeSet<String> = Metric::ALL.iter().map(|m| m.as_str().to_owned()).collect();
    assert_eq!(names, all);
    assert_eq!(DIMENSIONS, ["Function", "Stage"]);
}

fn template() -> BTreeMap<String, Yaml> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let template: Yaml = serde_yaml::from_str(&text).unwrap();
    let resources = template["Resources"].as_mapping().unwrap();
    resources
        .iter()
        .map(|(name, body)| (name.as_str().unwrap().to_owned(), body.clone()))
        .collect()
}

fn of_type<'a>(
    resources: &'a BTreeMap<String, Yaml>,
    kind: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Yaml)> + 'a {
    resources
        .iter()
        .filter(move |(_, body)| body["Type"].as_str() == Some(kind))
}

/// The metrics an alarm reads: its own, or those of its metric math.
fn alarm_metrics(properties: &Yaml) -> Vec<Yaml> {
    match properties["Metrics"].as_sequence() {
        Some(queries) => queries
            .iter()
            .filter_map(|query| query.get("MetricStat"))
            .map(|stat| stat["Metric"].clone())
            .collect(),
        None => vec![properties.clone()],
    }
}

/// `!Tag value` as (tag, value) text, or the plain scalar with no tag.
fn scalar(value: &Yaml) -> (String, String) {
    match value {
        Yaml::Tagged(tagged) => (
            tagged.tag.to_string(),
            tagged.value.as_str().unwrap_or_default().to_owned(),
        ),
        other => (String::new(), other.as_str().unwrap_or_default().to_owned()),
    }
}

#[test]
fn every_custom_alarm_reads_an_emitted_metric_of_its_own_stage() {
    let emitted = emitted();
    let resources = template();
    let mut custom = 0;
    for (name, alarm) in of_type(&resources, "AWS::CloudWatch::Alarm") {
        for metric in alarm_metrics(&alarm["Properties"]) {
            if metric["Namespace"].as_str() != Some(METRICS_NAMESPACE) {
                continue;
            }
            custom += 1;
            let metric_name = metric["MetricName"].as_str().unwrap().to_owned();
            let dimensions: BTreeMap<String, (String, String)> = metric["Dimensions"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{name} has no dimensions"))
                .iter()
                .map(|d| (d["Name"].as_str().unwrap().to_owned(), scalar(&d["Value"])))
                .collect();
            let names: Vec<&str> = dimensions.keys().map(String::as_str).collect();
            assert_eq!(
                names,
                ["Function", "Stage"],
                "{name}: the dimensions must be exactly those the code emits"
            );
            assert_eq!(
                dimensions["Stage"],
                ("!Ref".to_owned(), "Stage".to_owned()),
                "{name} must read its own stage"
            );
            let (tag, function) = dimensions["Function"].clone();
            assert_eq!(tag, "", "{name}: Function is a plain name");
            assert!(
                emitted.contains(&(metric_name.clone(), function.clone())),
                "{name} reads {metric_name} of {function}, which the code never emits; it emits {emitted:?}"
            );
        }
    }
    assert!(custom >= 4, "only {custom} alarms on custom metrics");
    let functions: BTreeSet<&str> = emitted.iter().map(|(_, f)| f.as_str()).collect();
    let all: BTreeSet<&str> = Function::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(functions, all);
}

#[test]
fn every_queue_has_a_depth_alarm() {
    let resources = template();
    let watched: BTreeSet<String> = of_type(&resources, "AWS::CloudWatch::Alarm")
        .flat_map(|(_, alarm)| alarm_metrics(&alarm["Properties"]))
        .filter(|metric| {
            metric["Namespace"].as_str() == Some("AWS/SQS")
                && metric["MetricName"].as_str() == Some("ApproximateNumberOfMessagesVisible")
        })
        .flat_map(|metric| {
            metric["Dimensions"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|d| d["Name"].as_str() == Some("QueueName"))
        .map(|d| scalar(&d["Value"]))
        .filter(|(tag, _)| tag == "!GetAtt")
        .map(|(_, value)| value)
        .collect();
    let queues: Vec<&String> = of_type(&resources, "AWS::SQS::Queue")
        .map(|(name, _)| name)
        .collect();
    assert!(!queues.is_empty());
    for queue in queues {
        assert!(
            watched.contains(&format!("{queue}.QueueName")),
            "{queue} has no depth alarm"
        );
    }
}

/// An alarm that pages when it fires also says when it is over, so whoever was paged never
/// has to look up whether a problem is still there.
#[test]
fn every_alarm_notifies_both_ways() {
    let resources = template();
    for (name, alarm) in of_type(&resources, "AWS::CloudWatch::Alarm") {
        let properties = &alarm["Properties"];
        assert!(
            properties.get("AlarmActions").is_some(),
            "{name} has no AlarmActions"
        );
        assert_eq!(
            properties.get("OKActions"),
            properties.get("AlarmActions"),
            "{name}: OKActions differ from AlarmActions"
        );
    }
}

/// Server connections of the smallest Neon compute's pooled endpoint (0.25 CU: about 90 % of
/// its 112 max_connections), and the share these functions may take: two thirds, the rest
/// left to the app and to migrations (template.yaml's note on reserved concurrency).
const NEON_SMALLEST_POOL: u64 = 100;
const OUR_SHARE_OF_POOL: u64 = NEON_SMALLEST_POOL * 2 / 3;

#[test]
fn every_function_reserves_concurrency_within_the_database_budget() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let document: Yaml = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let resources = template();
    let mut connections = 0;
    let mut functions = 0;
    for (name, function) in of_type(&resources, "AWS::Serverless::Function") {
        functions += 1;
        // `!If [Reserved, !Ref Parameter, !Ref AWS::NoValue]`: the parameter, unless -1.
        let reserved = &function["Properties"]["ReservedConcurrentExecutions"];
        let Yaml::Tagged(choice) = reserved else {
            panic!("{name} reserves no concurrency: {reserved:?}");
        };
        assert_eq!(choice.tag.to_string(), "!If", "{name}");
        let (tag, parameter) = scalar(&choice.value[1]);
        assert_eq!(tag, "!Ref", "{name}");
        let default = document["Parameters"][parameter.as_str()]["Default"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {parameter} has no numeric default"));
        // One instance holds one Postgres connection, kept between invocations.
        connections += default;
    }
    assert_eq!(functions, 3);
    assert!(
        connections <= OUR_SHARE_OF_POOL,
        "the defaults allow {connections} connections, over {OUR_SHARE_OF_POOL}"
    );
}

/// The sharded warm's state machine and the warmer agree: each shard's payload (the Map's
/// `ItemSelector`) is a static warm of that shard, the outcomes land in the shapes the merge
/// reads, the merge's payload is a merge job, and the unsharded daily schedule stands down
/// when the state machine exists.
#[test]
fn the_sharded_warm_speaks_the_warmers_payloads() {
    let resources = template();
    let machine = &resources["WarmShardsStateMachine"];
    assert_eq!(machine["Condition"].as_str(), Some("ShardedWarm"));
    let states = &machine["Properties"]["Definition"]["States"];

    let map = &states["WarmEachShard"];
    let selector: Vec<&str> = map["ItemSelector"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|key| key.as_str().unwrap())
        .collect();
    assert_eq!(selector, ["shard.$", "shards.$"]);
    for index in 0..3 {
        let payload = serde_json::json!({"shard": index, "shards": 3});
        match Job::from_event(&payload).unwrap() {
            Job::Static(request) => {
                assert_eq!(request.filter.shard, Some(Shard::new(index, 3).unwrap()))
            }
            other => panic!("{payload} is not a static warm: {other:?}"),
        }
    }
    let shard = &map["ItemProcessor"]["States"]["WarmShard"];
    assert_eq!(shard["Parameters"]["Payload.$"].as_str(), Some("$"));
    assert_eq!(
        shard["ResultSelector"]["summary.$"].as_str(),
        Some("$.Payload")
    );
    assert_eq!(shard["Catch"][0]["ResultPath"].as_str(), Some("$.failure"));

    let merge = &states["MergeShards"];
    let payload = &merge["Parameters"]["Payload"];
    assert_eq!(payload["mode"].as_str(), Some("merge"));
    assert_eq!(
        payload["started_at.$"].as_str(),
        Some("$$.Execution.StartTime")
    );
    assert_eq!(payload["shards.$"].as_str(), Some("$"));
    let summary = WarmSummary {
        kinds: Vec::new(),
        force: false,
        shard: Some(Shard::new(0, 2).unwrap()),
        duration_ms: 1.0,
        peak_memory_mib: None,
        qrs_per_second: 1.0,
        stages: StageTimings::default(),
        outage_renewal: None,
    };
    let event = serde_json::json!({
        "mode": "merge",
        "started_at": "2026-11-26T00:30:00.123Z",
        "shards": [
            {"summary": summary},
            {"shard": 1, "shards": 2, "failure": {"Error": "States.Timeout", "Cause": "timed out"}}
        ]
    });
    assert!(
        matches!(Job::from_event(&event), Ok(Job::Merge(_))),
        "{event}"
    );
    // Calling the merge again after it failed would emit the run's metrics twice.
    for retrier in merge["Retry"].as_sequence().unwrap() {
        let errors = retrier["ErrorEquals"].as_sequence().unwrap();
        assert!(
            errors.iter().all(|e| e.as_str() != Some("States.ALL")),
            "the merge retries its own failure: {errors:?}"
        );
    }

    let state = &resources["WarmQrCacheFunction"]["Properties"]["Events"]["DailyWarm"]
        ["Properties"]["State"];
    let Yaml::Tagged(state) = state else {
        panic!("the unsharded daily warm's State is not conditional: {state:?}");
    };
    assert_eq!(state.tag.to_string(), "!If");
    let choice: Vec<&str> = state
        .value
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(choice, ["ShardedWarm", "DISABLED", "ENABLED"]);
}
