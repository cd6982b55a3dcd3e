//! The plain command, as cron and PM2 run it: summary, exit status, and logs free of secrets.

use end_to_end::{output_text, redis_url, run_warmer, test_cache, TestDb};

const DB_PASSWORD: &str = "Pg-Pa55word-never-logged";
const JWT: &str = "Jwt-secret-never-logged";

fn with_password(url: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_password(Some(DB_PASSWORD)).unwrap();
    url.to_string()
}

#[tokio::test]
async fn prints_the_summary_and_never_a_secret_even_at_trace_level() {
    let db = TestDb::create().await;
    db.seed(30, 4).await;
    let cache = test_cache(600);
    let env = [
        ("NEON_DATABASE_URL", with_password(&db.url)),
        ("REDIS_URL", redis_url()),
        ("CACHE_KEY_PREFIX", cache.settings().key_prefix.clone()),
        ("JWT_SECRET", JWT.to_string()),
        ("LOG_LEVEL", "trace".to_string()),
    ];
    let output = run_warmer(&env, &[]);
    let all = output_text(&output);
    assert!(output.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Students: 30/30 cached (0 failed): 30 rendered, 0 renewed"),
        "{stdout}"
    );
    assert!(stdout.contains("Stalls: 4/4 cached (0 failed)"), "{stdout}");
    assert!(stdout.contains("QRs/second"), "{stdout}");
    assert!(
        !all.contains(DB_PASSWORD) && !all.contains(JWT),
        "a secret reached the output"
    );

    let output = run_warmer(&env, &["--json", "--kinds", "stalls"]);
    assert!(output.status.success(), "{}", output_text(&output));
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("JSON summary on stdout");
    assert_eq!(summary["kinds"][0]["kind"], "stalls");
    assert_eq!(summary["kinds"][0]["renewed"], 4);
}

#[tokio::test]
async fn postgres_down_exits_non_zero_with_the_reason_and_no_secret() {
    let cache = test_cache(600);
    let env = [
        ("NEON_DATABASE_URL", format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:1/gone?sslmode=disable&connect_timeout=2")),
        ("REDIS_URL", redis_url()),
        ("CACHE_KEY_PREFIX", cache.settings().key_prefix.clone()),
        ("JWT_SECRET", JWT.to_string()),
        ("LOG_LEVEL", "trace".to_string()),
    ];
    let output = run_warmer(&env, &[]);
    let all = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("Postgres: connecting"), "{all}");
    assert!(
        all.contains("Postgres unreachable: renewed the TTL of 0 cached images"),
        "{all}"
    );
    assert!(
        !all.contains(DB_PASSWORD) && !all.contains(JWT),
        "a secret reached the output"
    );
}

#[test]
fn bad_configuration_and_payloads_are_usage_errors_naming_the_problem() {
    let output = run_warmer(
        &[("NEON_DATABASE_URL", "postgres://127.0.0.1/x".into())],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        output_text(&output).contains("REDIS_URL is not set"),
        "{}",
        output_text(&output)
    );

    // The warmer mints tokens for rows that have none: it needs the app's secret.
    let env = [
        ("NEON_DATABASE_URL", "postgres://127.0.0.1/x".to_string()),
        ("REDIS_URL", redis_url()),
    ];
    let output = run_warmer(&env, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        output_text(&output).contains("JWT_SECRET is not set"),
        "{}",
        output_text(&output)
    );

    let env = [
        ("NEON_DATABASE_URL", "postgres://127.0.0.1/x".to_string()),
        ("REDIS_URL", redis_url()),
        ("JWT_SECRET", "s".into()),
        ("QR_ECC", "Z".into()),
    ];
    let output = run_warmer(&env, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        output_text(&output).contains("QR_ECC is invalid"),
        "{}",
        output_text(&output)
    );

    let env = [
        ("NEON_DATABASE_URL", "postgres://127.0.0.1/x".to_string()),
        ("REDIS_URL", redis_url()),
        ("JWT_SECRET", "s".into()),
    ];
    let output = run_warmer(&env, &["--payload", r#"{"kinds": ["teachers"]}"#]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        output_text(&output).contains("`teachers` is not a kind"),
        "{}",
        output_text(&output)
    );
}
