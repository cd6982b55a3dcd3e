//! What an admin reads of an import: the report (the function's response, the JSON in S3, the
//! dry run's answer), and the rejected rows ready to fix and upload again, with every cell as uploaded plus the row's number and
//! the reasons (`.xlsx` for spreadsheet uploads, `.csv` for CSV ones). Neither runs anything in
//! a spreadsheet program: xlsx cells are written as text, CSV cells that would start a formula
//! get a leading `'`, which the reader drops again on re-upload.

use std::collections::{BTreeMap, HashMap};

use rust_xlsxwriter::Workbook;
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use super::claim::{Counts, ImportRecord, ImportStatus};
use super::event::ImportTarget;
use super::load::{Change, UpdatedRow};
use super::options::ImportOptions;
use crate::spreadsheet::{guard_formula, OriginalRow, RowError};
use crate::telemetry::{Function, Metric, Metrics};

/// Headers of the two columns the rejected-rows file adds; no field answers to them, so a
/// re-upload ignores them.
pub const ROW_HEADER: &str = "Rejected row";
pub const REASON_HEADER: &str = "Rejection reason";

/// One problem of a rejected row in the JSON report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A rejected row as the admin fixes it: its cells as uploaded, and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedLine {
    pub row: u32,
    pub cells: Vec<String>,
    pub reason: String,
}

/// The rejected-rows file's content: the header row as uploaded, then each rejected row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedFile {
    pub header: Vec<String>,
    pub rows: Vec<RejectedLine>,
}

impl RejectedFile {
    /// One line per rejected row, in row order, its problems joined into one reason.
    pub fn new(
        header: Vec<String>,
        rejected: &[RowError],
        originals: &HashMap<u32, OriginalRow>,
    ) -> RejectedFile {
        let mut reasons: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for error in rejected {
            reasons
                .entry(error.row)
                .or_default()
                .push(format!("{}: {}", error.column, error.reason));
        }
        let rows = reasons
            .into_iter()
            .map(|(row, reasons)| RejectedLine {
                row,
                cells: originals
                    .get(&row)
                    .map(|original| original.cells().map(str::to_owned).collect())
                    .unwrap_or_default(),
                reason: reasons.join("; "),
            })
            .collect();
        RejectedFile { header, rows }
    }

    /// Every line's cells padded to the widest, the row and reason last.
    fn lines(&self) -> Vec<Vec<String>> {
        let width = self
            .rows
            .iter()
            .map(|r| r.cells.len())
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let pad = |cells: &[String]| {
            let mut line = cells.to_vec();
            line.resize(width, String::new());
            line
        };
        let mut header = pad(&self.header);
        header.extend([ROW_HEADER.to_owned(), REASON_HEADER.to_owned()]);
        let mut lines = vec![header];
        for row in &self.rows {
            let mut line = pad(&row.cells);
            line.extend([row.row.to_string(), row.reason.clone()]);
            lines.push(line);
        }
        lines
    }

    pub fn to_csv(&self) -> Result<Vec<u8>, csv::Error> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        for line in self.lines() {
            writer.write_record(line.iter().map(|cell| guard_formula(cell)))?;
        }
        writer
            .into_inner()
            .map_err(|e| csv::Error::from(e.into_error()))
    }

    pub fn to_xlsx(&self) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
        let mut workbook = Workbook::new();
        let sheet = workbook.add_worksheet();
        sheet.set_name("Rejected rows")?;
        for (r, line) in self.lines().iter().enumerate() {
            for (c, cell) in line.iter().enumerate() {
                if !cell.is_empty() {
                    // Text cells: never a formula, whatever they start with.
                    sheet.write_string(r as u32, c as u16, cell)?;
                }
            }
        }
        workbook.save_to_buffer()
    }
}

/// Rejected rows listed in the `imports` row and in the function's response; the report has all.
pub(super) const REJECTED_LISTED: usize = 20;

/// Milliseconds per stage. Stages follow one another, so they add up to the whole: getting the
/// file from the bucket, then reading it while its rows are loaded (`parse_ms` includes loading
/// all but the last rows), then `load_ms`, what is left after the last row was read.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Timings {
    pub download_ms: f64,
    pub parse_ms: f64,
    pub load_ms: f64,
    pub report_ms: f64,
    pub cache_ms: f64,
}

/// Everything about one import: the JSON report in S3 (and in the `imports` row, until the
/// files are written) and, trimmed, the function's response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportReport {
    pub import_id: Uuid,
    pub bucket: String,
    pub key: String,
    pub kind: String,
    /// `processing` only when another run has the import.
    pub status: ImportStatus,
    /// True when this delivery found the import already done and changed nothing.
    pub redelivered: bool,
    pub options: ImportOptions,
    pub counts: Counts,
    /// Why the whole file was refused, if it was.
    pub error: Option<String>,
    pub sheet: Option<String>,
    pub header_row: Option<u32>,
    pub ignored_columns: Vec<String>,
    /// Each updated row and every value that changed in it, old -> new.
    pub changes: Vec<UpdatedRow>,
    /// One entry per problem of each rejected row.
    pub rejected: Vec<RejectedRow>,
    /// The rejected rows with their cells as uploaded.
    pub rejected_file: RejectedFile,
    pub report_key: Option<String>,
    pub rejected_key: Option<String>,
    /// QR images cached for the inserted and updated rows.
    pub qr_cached: u64,
    pub timings: Timings,
}

/// The record of a run that failed (Postgres, S3 or Redis unreachable, a crash): the invocation
/// fails too, and Lambda retries it.
pub fn failed_run_metrics() -> Metrics {
    Metrics::new(Function::ImportSpreadsheet).count(Metric::ImportErrors, 1)
}

impl ImportReport {
    /// An import another run finished (or is running): its stored report when there is one,
    /// else what the `imports` row says.
    pub(super) fn from_record(record: ImportRecord, stored: Option<serde_json::Value>) -> Self {
        if let Some(mut report) =
            stored.and_then(|v| serde_json::from_value::<ImportReport>(v).ok())
        {
            report.redelivered = true;
            report.report_key = record.report_key.or(report.report_key);
            report.rejected_key = record.rejected_key.or(report.rejected_key);
            return report;
        }
        let error = record
            .reasons
            .get(0)
            .and_then(|r| r.get("error"))
            .and_then(|e| e.as_str())
            .map(str::to_owned);
        let rejected = serde_json::from_value(record.reasons.clone()).unwrap_or_default();
        ImportReport {
            import_id: record.id,
            bucket: record.bucket.clone(),
            key: record.object_key.clone(),
            kind: record.kind.clone(),
            status: record.status,
            redelivered: true,
            options: record.options(),
            counts: Counts {
                rows: record.rows_total,
                inserted: record.rows_inserted,
                updated: record.rows_updated,
                unchanged: record.rows_unchanged,
                rejected: record.rows_rejected,
            },
            error,
            sheet: None,
            header_row: None,
            ignored_columns: Vec::new(),
            changes: Vec::new(),
            rejected,
            rejected_file: RejectedFile::default(),
            report_key: record.report_key,
            rejected_key: record.rejected_key,
            qr_cached: 0,
            timings: Timings::default(),
        }
    }

    /// The import's figures as CloudWatch metrics: rows by outcome, failures, duration.
    pub fn metrics(&self) -> Metrics {
        let t = &self.timings;
        Metrics::new(Function::ImportSpreadsheet)
            .count(
                Metric::ImportRowsInserted,
                self.counts.inserted.max(0) as u64,
            )
            .count(Metric::ImportRowsUpdated, self.counts.updated.max(0) as u64)
            .count(
                Metric::ImportRowsUnchanged,
                self.counts.unchanged.max(0) as u64,
            )
            .count(
                Metric::ImportRowsRejected,
                self.counts.rejected.max(0) as u64,
            )
            .count(
                Metric::ImportFailed,
                u64::from(self.status == ImportStatus::Failed),
            )
            .count(Metric::QrCached, self.qr_cached)
            .milliseconds(
                Metric::ImportDuration,
                t.download_ms + t.parse_ms + t.load_ms + t.report_ms + t.cache_ms,
            )
    }

    /// The response form: at most the first rejected rows and changes.
    pub fn trimmed(mut self) -> Self {
        self.rejected.truncate(REJECTED_LISTED);
        self.changes.truncate(REJECTED_LISTED);
        self.rejected_file.rows.truncate(REJECTED_LISTED);
        self
    }

    /// The report of an import this run has just claimed, before any row is read.
    pub fn new(id: Uuid, target: &ImportTarget, options: ImportOptions) -> Self {
        ImportReport {
            import_id: id,
            bucket: target.bucket.clone(),
            key: target.key.clone(),
            kind: target.kind.table().into(),
            status: ImportStatus::Processing,
            redelivered: false,
            options,
            counts: Counts::default(),
            error: None,
            sheet: None,
            header_row: None,
            ignored_columns: Vec::new(),
            changes: Vec::new(),
            rejected: Vec::new(),
            rejected_file: RejectedFile::default(),
            report_key: None,
            rejected_key: None,
            qr_cached: 0,
            timings: Timings::default(),
        }
    }
}

/// One row of a preview: what the import would do with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewRow {
    pub row: u32,
    /// `insert`, `update`, `unchanged` or `rejected`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What an import of a file would do, found without writing anything (`POST /imports/validate`),
/// by the import's own reading and planning.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub key: String,
    pub kind: String,
    /// `valid`, `partially_valid` or `invalid`.
    pub status: String,
    pub options: ImportOptions,
    /// Why the whole file would be refused, if it would be.
    pub error: Option<String>,
    pub sheet: Option<String>,
    pub header_row: Option<u32>,
    pub ignored_columns: Vec<String>,
    /// Totals by what would happen, as the import would count them.
    pub counts: Counts,
    pub valid_rows: usize,
    pub rejected_rows: usize,
    /// Every row, in sheet order.
    pub rows: Vec<PreviewRow>,
    pub changes: Vec<UpdatedRow>,
    pub rejected: Vec<RejectedRow>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::spreadsheet::{read_records, Field, Format, Limits, Records};

    fn file() -> RejectedFile {
        let errors = vec![
            RowError {
                row: 7,
                column: Arc::from("Email"),
                field: Field::Email,
                reason: "=HYPERLINK(\"http://x\")".into(),
            },
            RowError {
                row: 7,
                column: Arc::from("Phone"),
                field: Field::Phone,
                reason: "not a phone".into(),
            },
        ];
        RejectedFile {
            header: vec!["Registration No".into(), "Name".into(), "Phone".into()],
            rows: RejectedFile::new(Vec::new(), &errors, &HashMap::new())
                .rows
                .into_iter()
                .map(|mut line| {
                    line.cells = vec![
                        "2024001".into(),
                        "=cmd|' /C calc'!A0".into(),
                        "+91 98765 43210".into(),
                    ];
                    line
                })
                .collect(),
        }
    }

    #[test]
    fn one_line_per_rejected_row_with_every_reason() {
        let file = file();
        assert_eq!(file.rows.len(), 1);
        assert_eq!(
            file.rows[0].reason,
            "Email: =HYPERLINK(\"http://x\"); Phone: not a phone"
        );
    }

    #[test]
    fn csv_cells_are_formula_safe_and_read_back_as_typed() {
        let text = String::from_utf8(file().to_csv().unwrap()).unwrap();
        assert_eq!(
            text,
            "Registration No,Name,Phone,Rejected row,Rejection reason\n\
             2024001,'=cmd|' /C calc'!A0,'+91 98765 43210,7,\"Email: =HYPERLINK(\"\"http://x\"\"); Phone: not a phone\"\n"
        );
        // The reader drops the guard: the phone reads as typed.
        let parsed = read_records(
            "Registration No,Full Name,School,DOB,Pincode,Phone\n20240001,'=x,S,2000-01-01,110001,'+91 98765 43210\n".as_bytes(),
            Format::Csv,
            crate::kind::Kind::Students,
            &Limits::default(),
            chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        )
        .unwrap();
        let Records::Students(rows) = parsed.records else {
            panic!("students expected")
        };
        assert_eq!(rows[0].1.full_name, "=x");
        assert_eq!(rows[0].1.phone.value().unwrap().as_str(), "9876543210");
    }

    #[test]
    fn xlsx_holds_text_cells_only() {
        let bytes = file().to_xlsx().unwrap();
        let parsed = read_records(
            &bytes,
            Format::Xlsx,
            crate::kind::Kind::Students,
            &Limits::default(),
            chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        );
        // It opens, and the header row is the uploaded one plus the two added columns.
        match parsed {
            Err(crate::spreadsheet::FileError::MissingColumns { found, .. }) => assert_eq!(
                found,
                [
                    "Registration No",
                    "Name",
                    "Phone",
                    ROW_HEADER,
                    REASON_HEADER
                ]
            ),
            other => panic!("{other:?}"),
        }
    }
}
