//! Loads the deterministic demo data set: `demo-data [STUDENTS] [STALLS]` (default 5000 and 60)
//! into NEON_DATABASE_URL, with tokens signed by JWT_SECRET. Run `migrate` first.

use std::process::ExitCode;

use secrecy::SecretString;
use shared::db::DatabaseSettings;
use tools::seed::{self, DemoSize};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut count = |default: usize| {
        args.next()
            .map_or(Ok(default), |text| text.parse::<usize>().map_err(|_| text))
    };
    let size = match (count(5_000), count(60)) {
        (Ok(students), Ok(stalls)) => DemoSize { students, stalls },
        (Err(text), _) | (_, Err(text)) => {
            eprintln!("demo-data: `{text}` is not a number\nusage: demo-data [STUDENTS] [STALLS]");
            return ExitCode::from(2);
        }
    };
    let url = std::env::var("NEON_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_default();
    let Ok(secret) = std::env::var("JWT_SECRET").map(SecretString::from) else {
        eprintln!("demo-data: JWT_SECRET is not set (the tokens are signed with it)");
        return ExitCode::from(2);
    };
    let result = async {
        let settings = DatabaseSettings::parse(&url)?;
        let client = settings.connect().await?;
        seed::seed(&client, &secret, size).await
    }
    .await;
    match result {
        Ok(()) => {
            println!(
                "demo data: {} students and {} stalls with QR tokens",
                size.students, size.stalls
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("demo-data: {error}");
            ExitCode::FAILURE
        }
    }
}
