//! The Lambda handler, fed the sample events in `events/` as Lambda would deliver them.

use end_to_end::{config_for, test_cache, TestDb};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use warm_qr_cache::{handle, Clients, Outcome};

fn event(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn invoke(clients: &Clients, payload: Value) -> Result<shared::warm::WarmSummary, String> {
    match handle(LambdaEvent::new(payload, Context::default()), clients)
        .await
        .map_err(|e| format!("{}: {}", e.error_type, e.error_message))?
    {
        Outcome::Static(summary) => Ok(summary),
        other => Err(format!("not a static warm: {other}")),
    }
}

#[tokio::test]
async fn every_sample_event_runs_the_warm_it_describes() {
    let db = TestDb::create().await;
    db.seed(25, 6).await;
    let cache = test_cache(600);
    let config = config_for(&db, &cache);
    let clients = end_to_end::warmer_clients(&db, cache, config);

    let summary = invoke(&clients, event("warm-scheduled.json"))
        .await
        .unwrap();
    assert_eq!((summary.rendered(), summary.renewed()), (31, 0));
    let summary = invoke(&clients, event("warm-scheduler.json"))
        .await
        .unwrap();
    assert_eq!((summary.rendered(), summary.renewed()), (0, 31));
    let summary = invoke(&clients, event("warm-on-demand.json"))
        .await
        .unwrap();
    assert_eq!(
        (summary.kinds.len(), summary.rendered()),
        (1, 25),
        "students forced"
    );
    let summary = invoke(&clients, event("warm-shard.json")).await.unwrap();
    assert!(
        summary.renewed() > 0 && summary.renewed() < 31,
        "one shard of four: {summary}"
    );
    // The sample ids match no demo row: an on-demand warm of unknown ids caches nothing.
    let summary = invoke(&clients, event("warm-after-token-regeneration.json"))
        .await
        .unwrap();
    assert_eq!(summary.cached(), 0);
}

#[tokio::test]
async fn a_malformed_event_is_refused_with_its_reason() {
    let db = TestDb::create().await;
    let cache = test_cache(600);
    let config = config_for(&db, &cache);
    let clients = end_to_end::warmer_clients(&db, cache, config);
    let error = invoke(&clients, serde_json::json!({"kinds": "students"}))
        .await
        .unwrap_err();
    assert!(
        error.starts_with("InvalidRequest: ")
            && error
                .contains("warm payload: invalid type: string \"students\", expected a sequence"),
        "{error}"
    );
}

#[tokio::test]
async fn after_a_postgres_restart_mid_run_the_next_invocation_reconnects() {
    let db = TestDb::create().await;
    db.seed(20, 4).await;
    let proxy = end_to_end::FaultProxy::postgres().await;
    let cache = test_cache(600);
    let config = config_for(&db, &cache);
    let mut clients = end_to_end::warmer_clients(&db, cache, config);
    clients.db = proxy.database(&db);
    let first = invoke(&clients, event("warm-scheduled.json"))
        .await
        .unwrap();
    assert_eq!(first.rendered(), 24);

    // Postgres restarts under the same container: the kept connection is reset and, for a
    // while, connections are refused. That invocation fails plainly and keeps the cache alive.
    proxy.set(end_to_end::ProxyMode::Refuse);
    proxy.cut();
    let failed = invoke(&clients, event("warm-scheduled.json"))
        .await
        .unwrap_err();
    assert!(
        failed.starts_with("PostgresError: QR cache warming failed: Postgres: ")
            && failed.contains("Postgres unreachable: renewed the TTL of 24 cached images"),
        "{failed}"
    );

    // Up again: the next invocation, in the same container, reconnects and renews everything.
    proxy.set(end_to_end::ProxyMode::Forward);
    let next = invoke(&clients, event("warm-scheduled.json"))
        .await
        .unwrap();
    assert_eq!((next.rendered(), next.renewed(), next.failed()), (0, 24, 0));
}
