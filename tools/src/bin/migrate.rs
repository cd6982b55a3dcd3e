//! Applies `migrations/` to the database in NEON_DATABASE_URL (or DATABASE_URL).

use std::process::ExitCode;

use shared::db::DatabaseSettings;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(url) = std::env::var("NEON_DATABASE_URL")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok())
    else {
        eprintln!("migrate: NEON_DATABASE_URL (or DATABASE_URL) is not set");
        return ExitCode::from(2);
    };
    let settings = match DatabaseSettings::parse(&url) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("migrate: {error}");
            return ExitCode::from(2);
        }
    };
    let result = async {
        let mut client = settings.connect().await?;
        shared::migrations::apply(&mut client).await
    }
    .await;
    match result {
        Ok(applied) if applied.is_empty() => println!("{}: schema up to date", settings.describe()),
        Ok(applied) => println!("{}: applied {}", settings.describe(), applied.join(", ")),
        Err(error) => {
            eprintln!("migrate: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
