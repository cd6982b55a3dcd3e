//! A bounded load run through the handler with faults injected mid-run: a Redis failover
//! (replica promoted, the name moved) and a Postgres restart (connections reset, refused for a
//! second). Every image served must be the right one; no 5xx may start outside a fault window;
//! after each fault the first request that needs the failed server succeeds within a second.
//!
//! `LOAD_SECONDS` (default 8) sets the length; BENCHMARKS.md holds a longer run's figures.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use end_to_end::{test_cache_at, FaultProxy, ProxyMode, RedisServer, SwitchableProxy};

use crate::failover::{fail_over, replication_up};
use crate::support::*;

/// What the workers saw, for the verdict.
#[derive(Default)]
struct Tally {
    by_status: BTreeMap<u16, u64>,
    wrong_images: Vec<String>,
    /// When each 5xx answer's request started and ended (since the run began).
    server_errors: Vec<(Duration, Duration)>,
    /// Start times of every request that read Postgres and got its image.
    database_successes: Vec<Duration>,
    /// Start times of every request that read Redis and hit.
    cache_hits: Vec<Duration>,
}

enum Route {
    Static {
        id: String,
        token: String,
    },
    Stall {
        id: String,
        token: String,
    },
    Rotating {
        session: String,
        registration_no: String,
    },
}

impl Route {
    fn path(&self) -> String {
        match self {
            Route::Static { id, .. } => format!("/qr/students/{id}"),
            Route::Stall { id, .. } => format!("/qr/stalls/{id}"),
            Route::Rotating { .. } => "/students/me/qr".into(),
        }
    }
}

/// Whether `response` is the right image for `route`; `known` remembers bodies already decoded.
fn right_image(
    route: &Route,
    body: &[u8],
    known: &Mutex<HashMap<Vec<u8>, bool>>,
) -> Result<(), String> {
    if let Some(right) = known.lock().unwrap().get(body) {
        return if *right { Ok(()) } else { Err(route.path()) };
    }
    let right = match route {
        Route::Static { token, .. } | Route::Stall { token, .. } => {
            &end_to_end::decode_png(body) == token
        }
        Route::Rotating {
            registration_no, ..
        } => {
            let envelope: serde_json::Value = serde_json::from_slice(body).unwrap();
            let token = envelope["data"]["qr_code_token"].as_str().unwrap_or("");
            let image = envelope["data"]["qr_code"].as_str().unwrap_or("");
            let now = chrono::Utc::now().timestamp();
            end_to_end::app_verifies_rotating(token, now).as_deref() == Ok(registration_no)
                && end_to_end::decode_data_url(image) == token
        }
    };
    known.lock().unwrap().insert(body.to_vec(), right);
    if right {
        Ok(())
    } else {
        Err(route.path())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_a_redis_failover_and_a_postgres_restart_serve_no_wrong_image() {
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let length = Duration::from_secs(seconds.max(4));

    let primary = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
    let replica_of = primary.port.to_string();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &replica_of]);
    replication_up(&replica).await;
    let redis_name = SwitchableProxy::start(primary.port).await;
    let postgres = FaultProxy::postgres().await;

    let mut world = World::new().await;
    world.with(
        Some(postgres.database(&world.db)),
        Some(test_cache_at(&redis_name.url(), 3600)),
    );
    let mut routes = Vec::new();
    for index in 0..5 {
        let (id, token) = world.student(index).await;
        routes.push(Route::Rotating {
            session: session(&id, "STUDENT"),
            registration_no: tools::seed::registration_no(index),
        });
        routes.push(Route::Static { id, token });
    }
    let client = world.db.client().await;
    for row in client
        .query("SELECT id::text, qr_code_token FROM stalls", &[])
        .await
        .unwrap()
    {
        routes.push(Route::Stall {
            id: row.get(0),
            token: row.get(1),
        });
    }
    let world = Arc::new(world);
    let routes = Arc::new(routes);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let known = Arc::new(Mutex::new(HashMap::new()));
    let admin = admin();
    let started = Instant::now();

    let mut workers = Vec::new();
    for worker in 0..8usize {
        let (world, routes, tally, known, admin) = (
            world.clone(),
            routes.clone(),
            tally.clone(),
            known.clone(),
            admin.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut next = worker;
            while started.elapsed() < length {
                let route = &routes[next % routes.len()];
                next += 1;
                let at = started.elapsed();
                let caller = match route {
                    Route::Rotating { session, .. } => session.as_str(),
                    _ => admin.as_str(),
                };
                let response = world.get(&route.path(), caller).await;
                let status = response.status().as_u16();
                let verdict =
                    (status == 200).then(|| right_image(route, &body_bytes(&response), &known));
                let mut tally = tally.lock().unwrap();
                *tally.by_status.entry(status).or_default() += 1;
                if status >= 500 {
                    tally.server_errors.push((at, started.elapsed()));
                }
                if let Some(Err(path)) = verdict {
                    tally.wrong_images.push(path);
                } else if status == 200 {
                    if !matches!(route, Route::Rotating { .. }) {
                        tally.database_successes.push(at);
                    }
                    if header(&response, "x-cache") == Some("hit") {
                        tally.cache_hits.push(at);
                    }
                }
            }
        }));
    }

    // A Redis failover a quarter of the way in.
    tokio::time::sleep(length / 4).await;
    let redis_fault_start = started.elapsed();
    fail_over(&primary, &replica, &redis_name).await;
    let redis_fault_end = started.elapsed();

    // A Postgres restart half way: every connection reset, new ones refused for a second.
    tokio::time::sleep(length / 4).await;
    let postgres_fault_start = started.elapsed();
    postgres.set(ProxyMode::Refuse);
    postgres.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    postgres.set(ProxyMode::Forward);
    let postgres_fault_end = started.elapsed();

    for worker in workers {
        worker.await.unwrap();
    }
    let tally = tally.lock().unwrap();
    let served: u64 = tally.by_status.values().sum();
    // A request in flight when a fault begins meets it too.
    let in_window = |(at, ended): &&(Duration, Duration)| {
        (*at < redis_fault_end && *ended >= redis_fault_start)
            || (*at < postgres_fault_end && *ended >= postgres_fault_start)
    };
    let outside: Vec<&(Duration, Duration)> = tally
        .server_errors
        .iter()
        .filter(|error| !in_window(error))
        .collect();
    let first_after = |times: &[Duration], end: Duration| {
        times
            .iter()
            .filter(|at| **at >= end)
            .min()
            .map(|at| *at - end)
    };
    let postgres_recovery = first_after(&tally.database_successes, postgres_fault_end);
    let redis_recovery = first_after(&tally.cache_hits, redis_fault_end);
    println!(
        "load: {served} requests in {:.1} s ({:.0}/s), by status {:?}; 5xx inside fault windows {}, outside {}; \
         wrong images {}; Redis failover {:?} to switch, first hit after it {:?}; \
         Postgres restart window {:?}, first database read after it {:?}",
        length.as_secs_f64(),
        served as f64 / length.as_secs_f64(),
        tally.by_status,
        tally.server_errors.len() - outside.len(),
        outside.len(),
        tally.wrong_images.len(),
        redis_fault_end - redis_fault_start,
        redis_recovery,
        postgres_fault_end - postgres_fault_start,
        postgres_recovery,
    );
    assert!(
        tally.wrong_images.is_empty(),
        "wrong images: {:?}",
        tally.wrong_images
    );
    assert!(
        outside.is_empty(),
        "5xx outside the fault windows at {outside:?}"
    );
    assert!(
        tally
            .by_status
            .keys()
            .all(|status| [200, 503].contains(status)),
        "{:?}",
        tally.by_status
    );
    let second = Duration::from_secs(1);
    assert!(
        postgres_recovery.is_some_and(|d| d < second),
        "{postgres_recovery:?}"
    );
    assert!(
        redis_recovery.is_some_and(|d| d < second),
        "{redis_recovery:?}"
    );
}
