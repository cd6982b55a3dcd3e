//! The API built from a configuration whose secrets come from SSM Parameter Store (moto's
//! server), through the same `startup::configure` its cold start runs: it reaches the real
//! Postgres and Redis and verifies sessions with the stored JWT secret, which wins over a
//! `JWT_SECRET` also set; the logs name parameters and versions, never a value.

use end_to_end::{
    parameter_prefix, put_secure_parameter, redis_url, s3_client, ssm_client, test_bucket,
    CapturedLogs, TestDb,
};
use http_api::qr_reads::QrReader;
use http_api::Api;
use jsonwebtoken::Algorithm;
use shared::secrets::ParameterStore;
use shared::startup::{self, Needs};
use shared::storage::Storage;

use crate::support::*;

#[tokio::test]
async fn the_api_verifies_sessions_with_the_stored_secret_and_logs_no_value() {
    let logs = CapturedLogs::install("trace");
    let db = TestDb::create().await;
    db.seed(2, 1).await;
    let s3 = s3_client();
    let bucket = test_bucket(&s3).await;
    let ssm = ssm_client();
    let prefix = parameter_prefix();
    let stored_secret = format!("jwt-stored-{}", uuid::Uuid::new_v4().simple());
    let environment_secret = format!("jwt-environment-{}", uuid::Uuid::new_v4().simple());
    put_secure_parameter(&ssm, &format!("{prefix}/database-url"), &db.url).await;
    put_secure_parameter(&ssm, &format!("{prefix}/redis-url"), &redis_url()).await;
    put_secure_parameter(&ssm, &format!("{prefix}/jwt-secret"), &stored_secret).await;

    let env = [
        (
            "NEON_DATABASE_URL_PARAMETER",
            format!("{prefix}/database-url"),
        ),
        ("REDIS_URL_PARAMETER", format!("{prefix}/redis-url")),
        ("JWT_SECRET_PARAMETER", format!("{prefix}/jwt-secret")),
        ("JWT_SECRET", environment_secret.clone()),
        ("CACHE_KEY_PREFIX", format!("{}:", &prefix[1..])),
        ("IMPORT_BUCKET", bucket.clone()),
    ];
    let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let store = ParameterStore::with_client(ssm.clone());
    let config = startup::configure(
        lookup,
        &[Needs::JwtSecret, Needs::ImportBucket],
        Some(&store),
    )
    .await
    .unwrap();
    startup::log_secret_origins(&config.from_store);
    startup::log_warnings(&config.warnings);
    let cache =
        shared::cache::Cache::connect_lazily(&config.redis_url, config.cache.clone()).unwrap();
    let reader = QrReader::new(
        shared::db::Database::new(config.database.clone()),
        cache,
        config.qr,
    );
    let world = World {
        api: Api::new(config, reader, Storage::with_client(s3.clone())).unwrap(),
        db,
        s3,
        bucket,
    };

    let health = world.call("GET", "/health", &[], None).await;
    assert_eq!(health.status(), 200, "{:?}", body_bytes(&health));
    let stall: String = world
        .db
        .client()
        .await
        .query_one("SELECT id::text FROM stalls LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let admin_id = "7a0c0b4e-2f7f-4f8a-9d53-5d9a3c1f0b11";
    let exp = chrono::Utc::now().timestamp() + 600;
    let signed_by_store = session_with(admin_id, "ADMIN", exp, Algorithm::HS256, &stored_secret);
    let signed_by_environment = session_with(
        admin_id,
        "ADMIN",
        exp,
        Algorithm::HS256,
        &environment_secret,
    );
    let path = format!("/qr/stalls/{stall}");
    assert_eq!(world.get(&path, &signed_by_store).await.status(), 200);
    assert_eq!(
        world.get(&path, &signed_by_environment).await.status(),
        401,
        "the stored secret wins over JWT_SECRET"
    );

    let text = logs.text();
    for variable in ["NEON_DATABASE_URL", "REDIS_URL", "JWT_SECRET"] {
        assert!(
            text.lines()
                .any(|line| line.contains("secret read from SSM Parameter Store")
                    && line.contains(&format!("\"variable\":\"{variable}\""))),
            "{variable}: {text}"
        );
    }
    assert!(
        text.contains(&format!(
            "JWT_SECRET and JWT_SECRET_PARAMETER are both set: the value of parameter \
             {prefix}/jwt-secret is used and JWT_SECRET is ignored"
        )),
        "{text}"
    );
    logs.assert_free_of(&[
        ("the stored JWT secret", stored_secret),
        ("the environment's JWT secret", environment_secret),
        ("the session token", signed_by_store),
    ]);
}
