//! The warmer's secrets from SSM Parameter Store (moto's server): with only `*_PARAMETER` in its
//! environment it reaches the real Postgres and Redis and signs with the stored JWT secret; a
//! rotated secret reaches the next cold start; a missing or unreachable store stops start-up
//! naming the parameter; no value ever reaches the output.

use end_to_end::{
    output_text, parameter_prefix, put_secure_parameter, redis_url, run_warmer, ssm_client,
    ssm_environment, test_cache, TestDb,
};

const DB_PASSWORD: &str = "Pg-Pa55word-from-the-store";

/// The claims of `token` if it is an HS256 JWT signed with `secret`.
fn signed_with(token: &str, secret: &str) -> Option<serde_json::Value> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .ok()
    .map(|data| data.claims)
}

/// Clears the tokens of the first `count` students, so the warm mints them afresh.
async fn clear_tokens(db: &TestDb, count: i64) {
    db.client()
        .await
        .execute(
            "UPDATE students SET qr_code_token = NULL WHERE registration_no IN
               (SELECT registration_no FROM students ORDER BY registration_no LIMIT $1)",
            &[&count],
        )
        .await
        .unwrap();
}

async fn minted_tokens(db: &TestDb, count: i64) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT qr_code_token FROM students ORDER BY registration_no LIMIT $1",
            &[&count],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn with_only_parameters_named_the_warmer_connects_signs_and_picks_up_a_rotation() {
    let db = TestDb::create().await;
    db.seed(30, 4).await;
    clear_tokens(&db, 5).await;
    let cache = test_cache(600);
    let ssm = ssm_client();
    let prefix = parameter_prefix();
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some(DB_PASSWORD)).unwrap();
    let first_secret = format!("jwt-first-{}", uuid::Uuid::new_v4().simple());
    put_secure_parameter(&ssm, &format!("{prefix}/database-url"), url.as_str()).await;
    put_secure_parameter(&ssm, &format!("{prefix}/redis-url"), &redis_url()).await;
    put_secure_parameter(&ssm, &format!("{prefix}/jwt-secret"), &first_secret).await;

    let mut env = ssm_environment();
    env.extend([
        (
            "NEON_DATABASE_URL_PARAMETER",
            format!("{prefix}/database-url"),
        ),
        ("REDIS_URL_PARAMETER", format!("{prefix}/redis-url")),
        ("JWT_SECRET_PARAMETER", format!("{prefix}/jwt-secret")),
        ("CACHE_KEY_PREFIX", cache.settings().key_prefix.clone()),
        ("LOG_LEVEL", "trace".into()),
    ]);
    let output = run_warmer(&env, &[]);
    let all = output_text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("Students: 30/30 cached (0 failed)"),
        "Postgres and Redis reached through the stored URLs: {all}"
    );
    assert!(all.contains("5 minted"), "{all}");
    for token in minted_tokens(&db, 5).await {
        let claims = signed_with(&token, &first_secret).expect("signed with the stored secret");
        assert_eq!(claims["t"], "S");
    }
    for variable in ["NEON_DATABASE_URL", "REDIS_URL", "JWT_SECRET"] {
        assert!(
            all.lines()
                .any(|line| line.contains("secret read from SSM Parameter Store")
                    && line.contains(&format!("variable=\"{variable}\""))
                    && line.contains("version=1")),
            "{variable}: {all}"
        );
    }
    assert!(
        !all.contains(DB_PASSWORD) && !all.contains(&first_secret),
        "a secret reached the output"
    );

    // A rotation: the parameter's next version, read by the next cold start with no change to
    // the function's environment.
    let second_secret = format!("jwt-second-{}", uuid::Uuid::new_v4().simple());
    let version = put_secure_parameter(&ssm, &format!("{prefix}/jwt-secret"), &second_secret).await;
    assert_eq!(version, 2);
    clear_tokens(&db, 5).await;
    let output = run_warmer(&env, &[]);
    let all = output_text(&output);
    assert!(output.status.success(), "{all}");
    for token in minted_tokens(&db, 5).await {
        assert!(signed_with(&token, &second_secret).is_some(), "{token}");
        assert!(signed_with(&token, &first_secret).is_none(), "{token}");
    }
    assert!(
        all.lines()
            .any(|line| line.contains("variable=\"JWT_SECRET\"") && line.contains("version=2")),
        "{all}"
    );
    assert!(
        !all.contains(&second_secret),
        "the secret reached the output"
    );
}

#[test]
fn a_missing_parameter_stops_start_up_naming_it() {
    let prefix = parameter_prefix();
    let mut env = ssm_environment();
    env.extend([
        ("NEON_DATABASE_URL", "postgres://127.0.0.1/x".to_string()),
        ("REDIS_URL", redis_url()),
        ("JWT_SECRET_PARAMETER", format!("{prefix}/absent")),
    ]);
    let output = run_warmer(&env, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", output_text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "warm-qr-cache: SSM Parameter Store in us-east-1 has no parameter {prefix}/absent \
             (named by JWT_SECRET_PARAMETER): create it with `aws ssm put-parameter --type \
             SecureString`, or correct the name\n"
        )
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn an_unreachable_store_stops_start_up_naming_the_parameter() {
    let mut env = ssm_environment();
    env.retain(|(name, _)| *name != "AWS_ENDPOINT_URL_SSM");
    env.extend([
        (
            "AWS_ENDPOINT_URL_SSM",
            format!("http://127.0.0.1:{}", end_to_end::free_port()),
        ),
        ("NEON_DATABASE_URL", "postgres://127.0.0.1/x".to_string()),
        ("REDIS_URL", redis_url()),
        ("JWT_SECRET_PARAMETER", "/qr/test/jwt-secret".to_string()),
    ]);
    let output = run_warmer(&env, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(
            "warm-qr-cache: could not read /qr/test/jwt-secret (named by JWT_SECRET_PARAMETER) \
             from SSM Parameter Store in us-east-1: "
        ),
        "{stderr}"
    );
}
