//! Postgres faults under the API, injected by a TCP proxy in front of the real server: a
//! restart (every connection reset, new ones refused for a while), a path gone silent, and a
//! statement held by a lock. Meanwhile the API answers 503 in JSON within its deadline; once
//! the fault ends the next request reconnects and serves the right image.

use std::time::{Duration, Instant};

use end_to_end::{FaultProxy, ProxyMode};

use crate::support::*;

fn unavailable() -> serde_json::Value {
    serde_json::json!({
        "error": "unavailable",
        "message": "a service this needs is unavailable; try again shortly"
    })
}

/// A world whose API reaches Postgres through `proxy`, answering within `deadline`.
async fn world_behind(proxy: &FaultProxy, deadline: Duration) -> World {
    let mut world = World::new().await;
    world.with(Some(proxy.database(&world.db)), None);
    world.api.reader.database_deadline = deadline;
    world
}

#[tokio::test]
async fn a_restart_answers_503_at_once_and_the_next_request_after_it_reconnects() {
    let proxy = FaultProxy::postgres().await;
    let world = world_behind(&proxy, Duration::from_secs(2)).await;
    let (id, token) = world.student(1).await;
    let path = format!("/qr/students/{id}");
    let before = world.get(&path, &admin()).await;
    assert_eq!(before.status(), 200);

    // The server goes down: open connections reset, new ones refused.
    proxy.set(ProxyMode::Refuse);
    proxy.cut();
    let started = Instant::now();
    let during = world.get(&path, &admin()).await;
    assert_eq!(during.status(), 503);
    assert_eq!(header(&during, "content-type"), Some("application/json"));
    assert_eq!(body_json(&during), unavailable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection is answered without waiting out the deadline, took {:?}",
        started.elapsed()
    );

    // Back up: the very next request connects afresh and serves the same image.
    proxy.set(ProxyMode::Forward);
    let after = world.get(&path, &admin()).await;
    assert_eq!(after.status(), 200);
    assert_eq!(end_to_end::decode_png(&body_bytes(&after)), token);
}

#[tokio::test]
async fn a_silent_database_answers_503_at_the_deadline_and_its_connection_is_dropped() {
    let proxy = FaultProxy::postgres().await;
    let deadline = Duration::from_secs(1);
    let world = world_behind(&proxy, deadline).await;
    let (id, token) = world.student(2).await;
    let path = format!("/qr/students/{id}");
    assert_eq!(world.get(&path, &admin()).await.status(), 200);

    // Neither data nor a close: without a deadline this request would wait for ever.
    proxy.set(ProxyMode::Stall);
    let started = Instant::now();
    let during = world.get(&path, &admin()).await;
    let waited = started.elapsed();
    assert_eq!(during.status(), 503);
    assert_eq!(body_json(&during), unavailable());
    assert!(
        waited >= deadline && waited < deadline + Duration::from_secs(2),
        "answered at the deadline, took {waited:?}"
    );

    // The stalled connection stays open in the proxy; had the API kept it, this request would
    // stall on it too. It connects afresh instead.
    proxy.set(ProxyMode::Forward);
    let after = world.get(&path, &admin()).await;
    assert_eq!(after.status(), 200);
    assert_eq!(end_to_end::decode_png(&body_bytes(&after)), token);
}

#[tokio::test]
async fn a_statement_held_by_a_lock_is_cancelled_on_the_server_at_the_deadline() {
    let mut world = World::new().await;
    world.api.reader.database_deadline = Duration::from_secs(1);
    let (id, _) = world.student(3).await;
    let client = world.db.client().await;
    client
        .execute(
            "UPDATE students SET qr_code_token = NULL WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    // The app's own transaction holds the row: minting its token has to wait.
    let mut app = world.db.client().await;
    let held = app.transaction().await.unwrap();
    held.execute(
        "SELECT 1 FROM students WHERE id = $1::text::uuid FOR UPDATE",
        &[&id],
    )
    .await
    .unwrap();

    let path = format!("/qr/students/{id}");
    let during = world.get(&path, &admin()).await;
    assert_eq!(during.status(), 503);
    assert_eq!(body_json(&during), unavailable());
    // The server was told to give up: nothing of ours still waits on the lock.
    let mut waiting = i64::MAX;
    for _ in 0..100 {
        waiting = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'qr-functions'
                   AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiting, 0, "the timed-out statement was cancelled");

    held.rollback().await.unwrap();
    let after = world.get(&path, &admin()).await;
    assert_eq!(after.status(), 200);
    let stored = world.stored_token(&id).await;
    assert_eq!(end_to_end::decode_png(&body_bytes(&after)), stored);
}

#[tokio::test]
async fn a_connection_the_pooler_closed_is_replaced_within_the_same_request() {
    let world = World::new().await;
    let (id, token) = world.student(4).await;
    let path = format!("/qr/students/{id}");
    assert_eq!(world.get(&path, &admin()).await.status(), 200);

    // The server ends the API's connection (as a pooler recycling it, or an admin, does) and
    // the next request comes at once, before the API could have noticed.
    let client = world.db.client().await;
    let ended: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'qr-functions'
               AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ended >= 1, "the API's connection was ended");
    let after = world.get(&path, &admin()).await;
    assert_eq!(after.status(), 200, "{:?}", body_json(&after));
    assert_eq!(end_to_end::decode_png(&body_bytes(&after)), token);
}
