//! The report an admin downloads: JSON with everything, and the rejected rows as CSV that a
//! spreadsheet program opens without running anything in it.

use serde::{Deserialize, Serialize};

use crate::spreadsheet::RowError;

/// Cells starting with these are formulas to Excel and LibreOffice; a leading `'` makes them text.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Neutralises a cell that a spreadsheet program would run as a formula.
pub fn csv_safe(value: &str) -> String {
    if value.starts_with(FORMULA_STARTS) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

/// The rejected rows as CSV: row, column, reason.
pub fn rejected_csv(rejected: &[RowError]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["row", "column", "reason"])?;
    for error in rejected {
        writer.write_record([
            error.row.to_string(),
            csv_safe(&error.column),
            csv_safe(&error.reason),
        ])?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

/// One rejected row in the JSON report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectedRow {
    pub row: u32,
    pub column: String,
    pub reason: String,
}

impl From<&RowError> for RejectedRow {
    fn from(error: &RowError) -> Self {
        RejectedRow {
            row: error.row,
            column: error.column.to_string(),
            reason: error.reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::spreadsheet::Field;

    #[test]
    fn formula_cells_are_neutralised() {
        for cell in ["=1+1", "+91", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(csv_safe(cell).starts_with('\''), "{cell:?}");
        }
        assert_eq!(csv_safe("plain"), "plain");
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_error() {
        let errors = vec![RowError {
            row: 7,
            column: Arc::from("Email"),
            field: Field::Email,
            reason: "=HYPERLINK(\"http://x\")".into(),
        }];
        let text = String::from_utf8(rejected_csv(&errors).unwrap()).unwrap();
        assert_eq!(
            text,
            "row,column,reason\n7,Email,\"'=HYPERLINK(\"\"http://x\"\")\"\n"
        );
    }
}
