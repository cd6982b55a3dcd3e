//! The import's settings from the environment (`IMPORT_*`): limits a file is held to, time
//! limits, and the password a new student gets.

use std::time::Duration;

use crate::error::{parse_or, ConfigError};
use crate::spreadsheet::Limits;

/// The password a new student gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordPolicy {
    /// A hash no one can log in with, and `password_reset_required`: students activate through
    /// the app's date-of-birth + pincode reset. The default.
    ResetRequired,
    /// The app's old behaviour: bcrypt(`YYYYMMDD` + pincode, cost 12), guessable by anyone who
    /// knows a student's birthday and pincode. `IMPORT_PASSWORD_MODE=legacy`.
    LegacyDateOfBirthPincode,
}

impl std::str::FromStr for PasswordPolicy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "reset" | "reset_required" => Ok(PasswordPolicy::ResetRequired),
            "legacy" | "legacy_dob_pincode" => Ok(PasswordPolicy::LegacyDateOfBirthPincode),
            other => Err(format!(
                "`{other}` is not a password mode (reset or legacy)"
            )),
        }
    }
}

/// Import settings from the environment (`IMPORT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSettings {
    pub limits: Limits,
    /// Longest a file may take to read; past it the import fails and nothing is written.
    pub time_limit: Duration,
    /// How long a delivery that finds another run at work waits for its outcome before failing
    /// (so Lambda retries it, and finally sends it to the failure queue).
    pub busy_wait: Duration,
    pub password: PasswordPolicy,
}

impl ImportSettings {
    /// The `IMPORT_*` variables, read through `get` (trimmed, empty as unset).
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let limits_default = Limits::default();
        let import_default = ImportSettings::default();
        let import = ImportSettings {
            limits: Limits {
                max_bytes: parse_or(&get, "IMPORT_MAX_BYTES", limits_default.max_bytes)?,
                max_unpacked_bytes: parse_or(
                    &get,
                    "IMPORT_MAX_UNPACKED_BYTES",
                    limits_default.max_unpacked_bytes,
                )?,
                max_zip_entries: parse_or(
                    &get,
                    "IMPORT_MAX_ZIP_ENTRIES",
                    limits_default.max_zip_entries,
                )?,
                max_rows: parse_or(&get, "IMPORT_MAX_ROWS", limits_default.max_rows)?,
                max_columns: parse_or(&get, "IMPORT_MAX_COLUMNS", limits_default.max_columns)?,
                max_cells: parse_or(&get, "IMPORT_MAX_CELLS", limits_default.max_cells)?,
            },
            time_limit: Duration::from_secs(parse_or(
                &get,
                "IMPORT_TIME_LIMIT_SECS",
                import_default.time_limit.as_secs(),
            )?),
            busy_wait: Duration::from_secs(parse_or(
                &get,
                "IMPORT_BUSY_WAIT_SECS",
                import_default.busy_wait.as_secs(),
            )?),
            password: parse_or::<PasswordPolicy>(
                &get,
                "IMPORT_PASSWORD_MODE",
                import_default.password,
            )?,
        };
        Ok(import)
    }
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            limits: Limits::default(),
            time_limit: Duration::from_secs(300),
            busy_wait: Duration::from_secs(30),
            password: PasswordPolicy::ResetRequired,
        }
    }
}
