//! What an admin chooses for one upload: how blank cells treat stored values, and the event the
//! stalls belong to. Chosen with `POST /imports` (stored with the import) or in a dry run.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a blank cell does to the stored value of an existing row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlankCells {
    /// Keeps it: a re-import of a partial sheet never erases what students typed.
    #[default]
    Keep,
    /// Clears it (a column the file lacks is still left alone).
    Clear,
}

impl BlankCells {
    /// The `imports.blank_cells` column's text.
    pub fn as_str(self) -> &'static str {
        match self {
            BlankCells::Keep => "keep",
            BlankCells::Clear => "clear",
        }
    }
}

impl std::str::FromStr for BlankCells {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "keep" => Ok(BlankCells::Keep),
            "clear" => Ok(BlankCells::Clear),
            other => Err(format!(
                "`{other}` is not a blank-cell choice (keep or clear)"
            )),
        }
    }
}

/// One upload's choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOptions {
    pub blank_cells: BlankCells,
    /// The event of stalls whose row names none (resolved from a code or id when chosen).
    pub event: Option<Uuid>,
}
