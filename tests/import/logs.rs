//! At trace, the importer's and the warmer's logs carry no QR token, password or secret: every
//! line of an import, a static warm that mints, and a rotating pre-warm, captured.

use end_to_end::{warmer_clients, CapturedLogs, JWT_SECRET};
use serde_json::json;
use warm_qr_cache::{Job, Outcome};

use crate::fixtures::*;

#[tokio::test]
async fn no_secret_reaches_the_importers_or_the_warmers_logs_even_at_trace() {
    let logs = CapturedLogs::install("trace");
    let world = World::new().await;
    let rows: Vec<Vec<Cell>> = (0..20)
        .map(|i| {
            let reg: &'static str = Box::leak(format!("2024{i:03}").into_boxed_str());
            vec![
                Text(reg),
                Empty,
                Text("Student"),
                Text("School of Civil Engineering"),
                Date(2003, 1, 1),
                Text("560001"),
            ]
        })
        .collect();
    let event = end_to_end::upload(
        &world.s3,
        &world.bucket,
        "imports/students/list.xlsx",
        template_xlsx(&STUDENT_HEADERS, &rows),
    )
    .await;
    let report = imported(world.deliver(event).await.unwrap());
    assert_eq!(report.counts.inserted, 20);

    // The warmer over the same rows: one row lacks a token and gets one; then the rotating QRs.
    let client = world.db.client().await;
    client
        .execute(
            "UPDATE students SET qr_code_token = NULL WHERE registration_no = '2024000'",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE students SET qr_code_token = NULL WHERE registration_no = '2024001'",
            &[],
        )
        .await
        .unwrap();
    let clients = warmer_clients(
        &world.db,
        world.clients.cache.clone(),
        world.clients.config.clone(),
    );
    let outcome = warm_qr_cache::run(&Job::from_event(&json!({})).unwrap(), &clients, &()).await;
    let Ok(Outcome::Static(summary)) = outcome else {
        panic!("a static warm: {outcome:?}");
    };
    assert_eq!(summary.minted(), 2);
    let job =
        Job::from_event(&json!({"mode": "rotating", "audience": "everyone", "windows_ahead": 0}))
            .unwrap();
    let Ok(Outcome::Rotating(rotating)) = warm_qr_cache::run(&job, &clients, &()).await else {
        panic!("a rotating pre-warm");
    };
    assert_eq!(rotating.rendered, 20);

    let tokens: Vec<String> = client
        .query("SELECT qr_code_token FROM students", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let rotating_token = clients
        .signer
        .token("2024005", rotating.windows[0])
        .unwrap();
    let text = logs.text();
    assert!(
        text.contains(r#""level":"DEBUG""#),
        "captured at trace: {text:.300}"
    );
    let mut secrets: Vec<(&str, String)> = vec![
        ("the JWT secret", JWT_SECRET.to_owned()),
        ("a rotating QR token", rotating_token.clone()),
        (
            "a rotating token's signature",
            rotating_token.rsplit('.').next().unwrap().to_owned(),
        ),
    ];
    for token in &tokens {
        secrets.push(("a student's QR token", token.clone()));
        secrets.push((
            "a QR token's signature",
            token.rsplit('.').next().unwrap().to_owned(),
        ));
    }
    logs.assert_free_of(&secrets);
}
