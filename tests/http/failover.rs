//! A Redis failover under the API and the warmer: the replica is promoted, the old primary
//! becomes its replica and answers READONLY, and the name (here a proxy) moves to the new
//! primary. The open connection is dropped for a new one and the command retried, so reads
//! keep hitting the cache and writes land, with no new container.

use end_to_end::{test_cache_at, RedisServer, SwitchableProxy};
use redis::AsyncCommands;
use shared::cache::CacheSettings;

use crate::support::*;

pub(crate) async fn replication_up(server: &RedisServer) {
    let mut connection = end_to_end::redis_connection(&server.url()).await;
    for _ in 0..200 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut connection)
            .await
            .unwrap();
        if info.contains("master_link_status:up") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the replica never synced");
}

/// A failover as a managed Redis performs it: `replica` promoted, `primary` made its replica,
/// and the name (`proxy`) moved to the new primary.
pub(crate) async fn fail_over(
    primary: &RedisServer,
    replica: &RedisServer,
    proxy: &SwitchableProxy,
) {
    let mut on_replica = end_to_end::redis_connection(&replica.url()).await;
    let mut on_primary = end_to_end::redis_connection(&primary.url()).await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut on_replica)
        .await
        .unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(replica.port)
        .query_async(&mut on_primary)
        .await
        .unwrap();
    proxy.switch_to(replica.port);
}

#[tokio::test]
async fn after_a_failover_reads_hit_the_new_primary_and_warms_write_to_it() {
    // Sync at once (diskless replication waits 5 s for more replicas by default).
    let primary = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
    let replica_of = primary.port.to_string();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &replica_of]);
    replication_up(&replica).await;
    let proxy = SwitchableProxy::start(primary.port).await;

    let mut world = World::new().await;
    let cache = test_cache_at(&proxy.url(), 3600);
    world.with(None, Some(cache.clone()));
    // The warmer's own client, connected before the failover too.
    let warmer_cache = shared::cache::Cache::connect_lazily(
        &secrecy::SecretString::from(proxy.url()),
        CacheSettings {
            ..cache.settings().clone()
        },
    )
    .unwrap();
    warmer_cache.ping().await.unwrap();

    let (id, token) = world.student(1).await;
    let path = format!("/qr/students/{id}");
    let first = world.get(&path, &admin()).await;
    assert_eq!(header(&first, "x-cache"), Some("miss"));
    // The image reached the replica before the failover. (WAIT on a connection of our own
    // would not do: it waits only for that connection's writes, and this one made none.)
    let mut on_primary = end_to_end::redis_connection(&primary.url()).await;
    let mut replica_reads = end_to_end::redis_connection(&replica.url()).await;
    let image_key = cache.settings().key(&token);
    let replicated = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !replica_reads.exists::<_, bool>(&image_key).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < replicated,
            "the image never reached the replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // Failover: the replica is promoted, the old primary follows it, the name moves.
    fail_over(&primary, &replica, &proxy).await;
    let mut on_replica = end_to_end::redis_connection(&replica.url()).await;
    // The old primary now refuses writes, as the API's open connection is about to find out.
    let refused: redis::RedisResult<()> = on_primary.set("probe", 1).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
    );

    // The API's read (a GETEX and a counter: writes) meets READONLY, reconnects, and hits.
    let second = world.get(&path, &admin()).await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        header(&second, "x-cache"),
        Some("hit"),
        "served from the new primary's cache"
    );
    assert_eq!(end_to_end::decode_png(&body_bytes(&second)), token);
    let hits: Option<u64> = on_replica
        .get(
            shared::cache::ReadCounter::Static
                .keys(&cache.settings().key_prefix)
                .0,
        )
        .await
        .unwrap();
    assert_eq!(hits, Some(1), "the hit was counted on the new primary");

    // The warmer's renewals and writes land on the new primary without a new process.
    let request = shared::warm::WarmRequest::default();
    let summary = shared::warm::warm(
        &world.db.database(),
        &warmer_cache,
        &shared::qr::QrSettings::default(),
        None,
        &request,
        &(),
    )
    .await
    .unwrap_or_else(|failed| panic!("{failed}"));
    assert_eq!(summary.failed(), 0);
    assert!(
        summary.renewed() >= 1 && summary.rendered() >= 1,
        "{summary}"
    );
    let stored: Option<String> = on_replica.get(cache.settings().key(&token)).await.unwrap();
    assert!(stored.is_some());
}

/// Redis out of memory under `noeviction` refuses every write, scripts included: cached images
/// are still read (with GET) and the rest are rendered and served, not stored. A user whose ACL
/// forbids scripting reads the same way.
#[tokio::test]
async fn a_full_redis_or_one_without_scripting_still_serves_every_image() {
    let server = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let mut world = World::new().await;
    let cache = test_cache_at(&server.url(), 3600);
    world.with(None, Some(cache.clone()));
    let (cached_id, cached_token) = world.student(1).await;
    let (other_id, other_token) = world.student(2).await;
    let first = world
        .get(&format!("/qr/students/{cached_id}"), &admin())
        .await;
    assert_eq!(header(&first, "x-cache"), Some("miss"));

    let mut control = end_to_end::redis_connection(&server.url()).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut control)
        .await
        .unwrap();
    let refused: redis::RedisResult<()> = control.set("probe", 1).await;
    assert!(refused.unwrap_err().to_string().contains("OOM"));

    let again = world
        .get(&format!("/qr/students/{cached_id}"), &admin())
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(header(&again, "x-cache"), Some("hit"));
    assert_eq!(end_to_end::decode_png(&body_bytes(&again)), cached_token);
    let fresh = world
        .get(&format!("/qr/students/{other_id}"), &admin())
        .await;
    assert_eq!(fresh.status(), 200);
    assert_eq!(header(&fresh, "x-cache"), Some("miss"));
    assert_eq!(end_to_end::decode_png(&body_bytes(&fresh)), other_token);
    let stored: Option<String> = control
        .get(cache.settings().key(&other_token))
        .await
        .unwrap();
    assert_eq!(stored, None, "nothing can be stored while Redis is full");
    // The warm says so plainly, and fails.
    let failed = shared::warm::warm(
        &world.db.database(),
        &cache,
        &shared::qr::QrSettings::default(),
        None,
        &shared::warm::WarmRequest::default(),
        &(),
    )
    .await
    .unwrap_err();
    assert_eq!(failed.error.kind(), "RedisOutOfMemory", "{}", failed.error);
    assert_eq!(
        failed.error.to_string(),
        "Redis is out of memory (storing images (SET)): it refuses every write because maxmemory is reached and its policy is noeviction; the images already cached stay readable. Raise maxmemory, or choose an eviction policy such as allkeys-lru"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut control)
        .await
        .unwrap();

    // A user that may not run scripts.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("noscripts")
        .arg("on")
        .arg(">noscripts-password")
        .arg("~*")
        .arg("+@all")
        .arg("-@scripting")
        .query_async(&mut control)
        .await
        .unwrap();
    let restricted = format!(
        "redis://noscripts:noscripts-password@127.0.0.1:{}",
        server.port
    );
    let limited = shared::cache::Cache::connect_lazily(
        &secrecy::SecretString::from(restricted),
        CacheSettings {
            ..cache.settings().clone()
        },
    )
    .unwrap();
    world.with(None, Some(limited));
    let read = world
        .get(&format!("/qr/students/{cached_id}"), &admin())
        .await;
    assert_eq!(header(&read, "x-cache"), Some("hit"));
    assert_eq!(end_to_end::decode_png(&body_bytes(&read)), cached_token);
}
