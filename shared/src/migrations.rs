//! The SQL in `migrations/`, applied in order, each once, under an advisory lock so two
//! runners at once cannot interleave.

use tokio_postgres::Client;

use crate::error::Error;

/// `(version, sql)` of every migration, oldest first.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_app_schema",
        include_str!("../../migrations/0001_app_schema.sql"),
    ),
    (
        "0002_imports",
        include_str!("../../migrations/0002_imports.sql"),
    ),
    (
        "0003_app_events_and_rules",
        include_str!("../../migrations/0003_app_events_and_rules.sql"),
    ),
    (
        "0004_import_claims",
        include_str!("../../migrations/0004_import_claims.sql"),
    ),
    (
        "0005_import_last_error",
        include_str!("../../migrations/0005_import_last_error.sql"),
    ),
];

/// Applies the migrations not yet recorded; returns the versions it applied.
pub async fn apply(client: &mut Client) -> Result<Vec<&'static str>, Error> {
    let context = "applying migrations";
    let transaction = client
        .transaction()
        .await
        .map_err(|e| Error::postgres(context, e))?;
    transaction
        .batch_execute(
            "SELECT pg_advisory_xact_lock(7262617);
             CREATE TABLE IF NOT EXISTS qr_functions_migrations (
               version TEXT PRIMARY KEY,
               applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
             );",
        )
        .await
        .map_err(|e| Error::postgres(context, e))?;
    let applied: Vec<String> = transaction
        .query_typed("SELECT version FROM qr_functions_migrations", &[])
        .await
        .map_err(|e| Error::postgres(context, e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut newly = Vec::new();
    for (version, sql) in MIGRATIONS {
        if applied.iter().any(|done| done == version) {
            continue;
        }
        transaction
            .batch_execute(sql)
            .await
            .map_err(|e| Error::postgres(context, e))?;
        transaction
            .query_typed(
                "INSERT INTO qr_functions_migrations (version) VALUES ($1)",
                &[(version, tokio_postgres::types::Type::TEXT)],
            )
            .await
            .map_err(|e| Error::postgres(context, e))?;
        newly.push(*version);
    }
    transaction
        .commit()
        .await
        .map_err(|e| Error::postgres(context, e))?;
    Ok(newly)
}
