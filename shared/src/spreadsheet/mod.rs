//! Uploaded spreadsheets to typed records: the one boundary where a file's bytes become
//! `StudentRecord`s / `StallRecord`s or row errors. Pure logic: no database, no S3. The
//! importer upserts what this returns and the HTTP API's dry run shows it.
//!
//! - `.xlsx .xlsm .xlsb .xls .ods` are read with calamine, `.csv` with the csv crate (UTF-8,
//!   with or without BOM). The container is sniffed, so an `.xls` saved under an `.xlsx` name
//!   still reads, and a PDF or web page under a spreadsheet name gets a reason, not a crash.
//! - The data sheet is the first sheet with the required headers; the header row is the first,
//!   among the sheet's first 20 non-empty rows, that holds them (`headers::SYNONYMS` is the one
//!   table of accepted spellings).
//! - Hostile files are refused by [`Limits`] before calamine allocates anything: zip bombs by
//!   the central directory, absurd sheet areas of `.xls`/`.ods` by a scan of their records,
//!   and `.xlsx`/`.xlsb` sheets are streamed cell by cell, so a sheet that claims
//!   `A1:XFD1048576` costs nothing unless it really holds values that far out.

mod cells;
mod guard;
mod headers;
mod read;
pub mod template;
mod validate;
mod values;

use std::collections::HashMap;
use std::ops::ControlFlow;

use chrono::NaiveDate;
use serde::Serialize;

use crate::kind::Kind;

pub use cells::{guard_formula, FORMULA_STARTS};
pub use headers::{normalize as normalize_header, Column, Field, SYNONYMS};
pub use read::Chunking;
pub use validate::{Records, RowError, StallRecord, StudentRecord};
pub use values::{
    max_chars, Email, EventRef, Optional, OriginalRow, Phone, Pincode, RegistrationNo, SchoolRef,
    StallNumber, BATCH_YEARS, EARLIEST_BIRTH_DATE, MIN_AGE_YEARS,
};

/// A file format, named by the uploaded file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Xlsx,
    Xlsm,
    Xlsb,
    Xls,
    Ods,
    Csv,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::Xlsx,
        Format::Xlsm,
        Format::Xlsb,
        Format::Xls,
        Format::Ods,
        Format::Csv,
    ];

    /// The format of a file name or S3 key by its extension, case-insensitively; `None` for any
    /// other extension (and for a name without one).
    pub fn from_file_name(name: &str) -> Option<Format> {
        let (_, extension) = name.rsplit_once('.')?;
        Format::ALL
            .into_iter()
            .find(|format| format.extension().eq_ignore_ascii_case(extension))
    }

    /// The extension without its dot: "xlsx".
    pub fn extension(self) -> &'static str {
        match self {
            Format::Xlsx => "xlsx",
            Format::Xlsm => "xlsm",
            Format::Xlsb => "xlsb",
            Format::Xls => "xls",
            Format::Ods => "ods",
            Format::Csv => "csv",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, ".{}", self.extension())
    }
}

/// What one file may cost. Each limit refuses the whole file with a reason a person can act
/// on; none is a silent truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Size of the uploaded object. Default 25 MiB.
    pub max_bytes: u64,
    /// Sum of the uncompressed sizes of a zip container's parts (`.xlsx .xlsm .xlsb .ods`),
    /// read from its central directory before anything is inflated; the zip reader then holds
    /// each part to its declared size. Default 200 MiB (a 200,000-row `.xlsx` is about 60 MiB).
    pub max_unpacked_bytes: u64,
    /// Parts in a zip container. Default 10,000 (a workbook has a few dozen).
    pub max_zip_entries: u64,
    /// Non-blank data rows below the header row. Default 200,000.
    pub max_rows: u32,
    /// A value in a column past this one (1-based) refuses the file. Default 200.
    pub max_columns: u32,
    /// `.xls` and `.ods` are read whole: calamine allocates every cell of a sheet's used area
    /// (and `.xls` reserves its declared dimensions), so the area, rows x columns, of every sheet
    /// is capped, and so is the sum over all sheets of a workbook (calamine keeps them all). The
    /// same number caps the distinct texts an `.xlsx` declares (calamine reserves that many up
    /// front). Default 4,000,000 (200,000 rows x 20 columns).
    pub max_cells: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 25 * MIB,
            max_unpacked_bytes: 200 * MIB,
            max_zip_entries: 10_000,
            max_rows: 200_000,
            max_columns: 200,
            max_cells: 4_000_000,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Headers are looked for among this many non-empty rows at the top of each sheet.
pub const HEADER_SEARCH_ROWS: usize = 20;

/// Why a whole file was refused. The messages are written for the admin who uploaded it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,

    #[error("the file is {}; at most {} can be imported: split it into smaller files", size_text(*.size), size_text(*.max))]
    TooLarge { size: u64, max: u64 },

    #[error("not a spreadsheet: the file is {what}; upload a .xlsx, .xls, .ods or .csv file")]
    NotSpreadsheet { what: String },

    #[error("password protected: remove the password and upload again")]
    PasswordProtected,

    #[error("the {format} file is damaged or incomplete ({detail}): open it in a spreadsheet program, save it again and upload the new file")]
    Damaged {
        format: &'static str,
        detail: String,
    },

    #[error("the workbook unpacks to {} (at most {}): it is not an ordinary spreadsheet; if the data is real, split it into smaller files", size_text(*.size), size_text(*.max))]
    TooLargeUnpacked { size: u64, max: u64 },

    #[error("the workbook has {entries} parts (at most {max}): it is not an ordinary spreadsheet")]
    TooManyParts { entries: u64, max: u64 },

    #[error("sheet \"{sheet}\" has more than {max} rows of data: split it into smaller files")]
    TooManyRows { sheet: String, max: u32 },

    #[error("sheet \"{sheet}\" has a value in row {row}, column {} (column {column}); at most {max} columns are read: delete the cells far to the right", column_letters(*.column))]
    TooManyColumns {
        sheet: String,
        row: u32,
        /// 1-based.
        column: u32,
        max: u32,
    },

    #[error("sheet \"{sheet}\" spans {rows} rows x {columns} columns, more than the {max} cells a {format} file may span: delete the unused rows and columns, or save it as .xlsx")]
    TooManyCells {
        format: &'static str,
        sheet: String,
        rows: u64,
        columns: u64,
        max: u64,
    },

    /// Each sheet is within the limit but `.xls` and `.ods` keep all of them in memory at once.
    #[error("the workbook's {sheets} sheets together span {cells} cells, more than the {max} a {format} file may span: delete the sheets, rows and columns that are not needed, or save it as .xlsx")]
    TooManyCellsInWorkbook {
        format: &'static str,
        sheets: u64,
        cells: u64,
        max: u64,
    },

    #[error("the workbook declares {declared} distinct texts (at most {max}): it is not an ordinary spreadsheet")]
    TooManyTexts { declared: u64, max: u64 },

    #[error("not UTF-8 (line {line}): save the file as \"CSV UTF-8\" and upload again")]
    NotUtf8 { line: u64 },

    /// The caller stopped taking rows (its load failed); never the file's fault.
    #[error("reading stopped before the end of the file")]
    Stopped,

    #[error("missing required columns: {} ({})", .missing.join(", "), describe_found(.sheet.as_deref(), *.row, .found))]
    MissingColumns {
        /// The sheet whose header row came closest (`None` for CSV or when no sheet has text).
        sheet: Option<String>,
        /// That header row's number.
        row: Option<u32>,
        missing: Vec<&'static str>,
        /// The headers found in that row, as spelled there.
        found: Vec<String>,
    },
}

impl FileError {
    /// A short stable name for metrics and the `imports` row ("zip_bomb", "password", ...).
    pub fn code(&self) -> &'static str {
        match self {
            FileError::Empty => "empty",
            FileError::TooLarge { .. } => "too_large",
            FileError::NotSpreadsheet { .. } => "not_a_spreadsheet",
            FileError::PasswordProtected => "password_protected",
            FileError::Damaged { .. } => "damaged",
            FileError::TooLargeUnpacked { .. } => "zip_bomb",
            FileError::TooManyParts { .. } => "too_many_parts",
            FileError::TooManyRows { .. } => "too_many_rows",
            FileError::TooManyColumns { .. } => "too_many_columns",
            FileError::TooManyCells { .. } | FileError::TooManyCellsInWorkbook { .. } => {
                "too_many_cells"
            }
            FileError::TooManyTexts { .. } => "too_many_texts",
            FileError::NotUtf8 { .. } => "not_utf8",
            FileError::MissingColumns { .. } => "missing_columns",
            FileError::Stopped => "stopped",
        }
    }
}

fn size_text(bytes: u64) -> String {
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

fn describe_found(sheet: Option<&str>, row: Option<u32>, found: &[String]) -> String {
    let place = match (sheet, row) {
        (Some(sheet), Some(row)) => format!("sheet \"{sheet}\", row {row}"),
        (None, Some(row)) => format!("row {row}"),
        _ => return "no sheet has any text in its first rows".to_owned(),
    };
    if found.is_empty() {
        format!("{place} has no headers")
    } else {
        format!("{place} has: {}", found.join(", "))
    }
}

/// "A" for 1, "Z" for 26, "AA" for 27.
pub fn column_letters(column: u32) -> String {
    let mut n = column;
    let mut letters = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    String::from_utf8(letters).unwrap_or_default()
}

/// A file read: its valid rows as records and its invalid rows as errors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParsedFile {
    /// The format the bytes turned out to be (may differ from the name's extension).
    pub format: Format,
    /// The data sheet's name; `None` for CSV.
    pub sheet: Option<String>,
    /// The header row's number in the sheet (1-based).
    pub header_row: u32,
    /// Headers of the header row that the import ignores, as spelled there.
    pub ignored_columns: Vec<String>,
    /// The header row's cells as spelled there, from the first column: the rejected-rows file
    /// repeats them.
    pub header_cells: Vec<String>,
    /// Valid rows with their sheet row numbers, in file order (when streamed, those not yet
    /// handed over).
    pub records: Records,
    /// One entry per problem, in row order; a row appears once per bad value.
    pub rejected: Vec<RowError>,
    /// The cells of each rejected row as uploaded, by row number.
    pub rejected_originals: HashMap<u32, OriginalRow>,
    /// Non-blank rows below the header row (valid + rejected).
    pub rows_seen: u32,
}

impl ParsedFile {
    /// Sheet row numbers that have at least one error.
    pub fn rejected_rows(&self) -> Vec<u32> {
        let mut rows: Vec<u32> = self.rejected.iter().map(|e| e.row).collect();
        rows.dedup();
        rows
    }
}

/// Reads an uploaded file into records of `kind`. `format` comes from the file's name
/// ([`Format::from_file_name`]); the bytes decide how they are actually read. `today` is the
/// import day the age rule is checked against.
pub fn read_records(
    bytes: &[u8],
    format: Format,
    kind: Kind,
    limits: &Limits,
    today: NaiveDate,
) -> Result<ParsedFile, FileError> {
    stream_records(
        bytes,
        format,
        kind,
        limits,
        today,
        Chunking::WHOLE,
        &mut |_| ControlFlow::Continue(()),
    )
}

/// [`read_records`], handing the valid rows to `sink` in chunks cut by `chunking` as they are
/// read, so that they can be loaded while the rest of the file is read. The returned
/// `ParsedFile` holds the rows after the last full chunk; its rejected rows are the whole
/// file's. A file refused part-way has already handed over some chunks: the caller undoes
/// what it did with them.
pub fn stream_records(
    bytes: &[u8],
    format: Format,
    kind: Kind,
    limits: &Limits,
    today: NaiveDate,
    chunking: Chunking,
    sink: &mut dyn FnMut(Records) -> ControlFlow<()>,
) -> Result<ParsedFile, FileError> {
    if bytes.is_empty() {
        return Err(FileError::Empty);
    }
    let size = bytes.len() as u64;
    if size > limits.max_bytes {
        return Err(FileError::TooLarge {
            size,
            max: limits.max_bytes,
        });
    }
    let job = read::Job {
        kind,
        limits,
        today,
        chunking,
        sink,
        capture: None,
    };
    run(job, bytes, format)
}

/// Reads `bytes` with `job`, once the guard has measured them, by what they turn out to be.
fn run(mut job: read::Job<'_>, bytes: &[u8], format: Format) -> Result<ParsedFile, FileError> {
    read::with_panic_guard(format, || {
        match guard::inspect(bytes, format, job.limits)? {
            guard::Container::Xlsx(format) => job.xlsx(bytes, format),
            guard::Container::Xlsb => job.xlsb(bytes),
            guard::Container::Ods => job.ods(bytes),
            guard::Container::Xls => job.xls(bytes),
            guard::Container::Text => job.csv(bytes),
        }
    })
}

/// The cells of `rows` of a file as uploaded, for rows refused after they were read (by the
/// database): the file is read again, those rows kept and nothing validated.
pub fn original_rows(
    bytes: &[u8],
    format: Format,
    kind: Kind,
    limits: &Limits,
    rows: &std::collections::HashSet<u32>,
) -> Result<HashMap<u32, OriginalRow>, FileError> {
    let job = read::Job {
        kind,
        limits,
        today: NaiveDate::MIN,
        chunking: Chunking::WHOLE,
        sink: &mut |_| ControlFlow::Continue(()),
        capture: Some(rows),
    };
    run(job, bytes, format).map(|parsed| parsed.rejected_originals)
}

#[cfg(test)]
mod tests;
