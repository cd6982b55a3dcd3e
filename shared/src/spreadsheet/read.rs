//! Sheets to rows, rows to records: finds the data sheet and its header row, then feeds the
//! rows below it to the validator. `.xlsx`/`.xlsb` are streamed cell by cell (nothing is sized
//! by a sheet's declared dimensions); `.xls`/`.ods` are read whole after `guard` measured them;
//! `.csv` is read record by record.

use std::io::Cursor;
use std::ops::ControlFlow;

use calamine::{Data, Ods, Range, Reader, Xls, XlsError, Xlsb, XlsbError, Xlsx, XlsxError};
use chrono::NaiveDate;

use super::cells::{clean, unguard_formula, Cell};
use super::headers::{Field, HeaderMap};
use super::validate::{Records, RowValidator};
use super::values::OriginalRow;
use super::{FileError, Format, Limits, ParsedFile, HEADER_SEARCH_ROWS};
use crate::kind::Kind;

/// The most rows a chunk reserves room for ahead.
const MAX_RESERVED_ROWS: usize = 10_000;

/// The non-blank cells of one row: (0-based column, cell), sorted by column.
type RowCells<'a> = Vec<(u32, Cell<'a>)>;

/// Rows of one sheet, blank ones skipped.
trait RowSource<'a> {
    /// Fills `cells` with the next row holding at least one non-blank cell and returns its
    /// 1-based row number. One buffer serves every row of a sheet.
    fn next_row(&mut self, cells: &mut RowCells<'a>) -> Result<Option<u32>, FileError>;
}

/// How the valid rows of a file read as a stream are cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Rows per chunk, as long as the most rows the limits allow would still fit in `at_most`
    /// chunks of at most [`Chunking::LARGER`] times as many; then larger chunks, so that no
    /// file ever takes more than `at_most`.
    pub rows: usize,
    pub at_most: usize,
}

impl Chunking {
    /// The whole file as one chunk.
    pub const WHOLE: Chunking = Chunking {
        rows: usize::MAX,
        at_most: usize::MAX,
    };

    const LARGER: usize = 5;

    /// Rows of chunk `index` (from 0), once `sent` valid rows went in the chunks before it, in
    /// a file of at most `max_rows` rows. The last chunk of a file may be partial.
    pub fn size(self, index: usize, sent: usize, max_rows: usize) -> usize {
        let rows = self.rows.max(1);
        let left = max_rows.saturating_sub(sent);
        let chunks_left = self.at_most.saturating_sub(index).max(1);
        let after_this = left.saturating_sub(rows);
        let room_after = (chunks_left - 1).saturating_mul(rows.saturating_mul(Self::LARGER));
        if after_this <= room_after {
            rows
        } else {
            left.div_ceil(chunks_left).max(rows)
        }
    }
}

/// What one import reads files for.
pub struct Job<'a> {
    pub kind: Kind,
    pub limits: &'a Limits,
    pub today: NaiveDate,
    /// How valid rows are cut into the chunks handed to `sink` as they are read; the rows
    /// after the last full chunk stay in the `ParsedFile`.
    pub chunking: Chunking,
    /// Takes each chunk; `Break` stops the read (the loading side has given up).
    pub sink: &'a mut dyn FnMut(Records) -> ControlFlow<()>,
    /// When set, only these rows' cells are kept (as rejected originals) and nothing is
    /// validated: the second look at a file whose rows the database refused.
    pub capture: Option<&'a std::collections::HashSet<u32>>,
}

/// The header row that came closest on sheets without the required headers, for the error.
struct Candidate {
    sheet: Option<String>,
    row: u32,
    headers: Vec<String>,
    missing: Vec<Field>,
}

enum SheetOutcome {
    Parsed(ParsedFile),
    NoHeader(Option<Candidate>),
}

/// Runs calamine's part of a read so that a panic inside it (a bug met by an odd file) becomes
/// a refusal of that file rather than the end of the process.
pub fn with_panic_guard(
    format: Format,
    read: impl FnOnce() -> Result<ParsedFile, FileError>,
) -> Result<ParsedFile, FileError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|_| {
        tracing::error!(format = %format, "the spreadsheet reader panicked on a file");
        Err(FileError::Damaged {
            format: format.extension(),
            detail: "the reader could not make sense of it".to_owned(),
        })
    })
}

impl Job<'_> {
    pub fn xlsx(&mut self, bytes: &[u8], format: Format) -> Result<ParsedFile, FileError> {
        let label = format.extension();
        let mut workbook: Xlsx<_> =
            Xlsx::new(Cursor::new(bytes)).map_err(|e| xlsx_error(label, e))?;
        let mut best = None;
        for name in workbook.sheet_names() {
            let mut reader = match workbook.worksheet_cells_reader(&name) {
                Ok(reader) => reader,
                // Chart sheets and dialog sheets hold no cells.
                Err(XlsxError::NotAWorksheet(_) | XlsxError::WorksheetNotFound(_)) => continue,
                Err(e) => return Err(xlsx_error(label, e)),
            };
            let mut rows = CellStream::new(&name, self.limits, || {
                reader
                    .next_cell()
                    .map(|cell| {
                        cell.map(|c| (c.get_position(), Cell::from_data_ref(c.get_value().clone())))
                    })
                    .map_err(|e| xlsx_error(label, e))
            });
            match self.sheet(Some(&name), format, &mut rows)? {
                SheetOutcome::Parsed(parsed) => return Ok(parsed),
                SheetOutcome::NoHeader(candidate) => best = closer(best, candidate),
            }
        }
        Err(self.missing_columns(best))
    }

    pub fn xlsb(&mut self, bytes: &[u8]) -> Result<ParsedFile, FileError> {
        let mut workbook: Xlsb<_> = Xlsb::new(Cursor::new(bytes)).map_err(xlsb_error)?;
        let mut best = None;
        for name in workbook.sheet_names() {
            let mut reader = match workbook.worksheet_cells_reader(&name) {
                Ok(reader) => reader,
                Err(XlsbError::WorksheetNotFound(_)) => continue,
                Err(e) => return Err(xlsb_error(e)),
            };
            let mut rows = CellStream::new(&name, self.limits, || {
                reader
                    .next_cell()
                    .map(|cell| {
                        cell.map(|c| (c.get_position(), Cell::from_data_ref(c.get_value().clone())))
                    })
                    .map_err(xlsb_error)
            });
            match self.sheet(Some(&name), Format::Xlsb, &mut rows)? {
                SheetOutcome::Parsed(parsed) => return Ok(parsed),
                SheetOutcome::NoHeader(candidate) => best = closer(best, candidate),
            }
        }
        Err(self.missing_columns(best))
    }

    pub fn xls(&mut self, bytes: &[u8]) -> Result<ParsedFile, FileError> {
        let workbook: Xls<_> = Xls::new(Cursor::new(bytes)).map_err(|e| match e {
            XlsError::Password => FileError::PasswordProtected,
            e => damaged("xls", e),
        })?;
        self.whole_sheets(workbook, Format::Xls, "xls")
    }

    pub fn ods(&mut self, bytes: &[u8]) -> Result<ParsedFile, FileError> {
        let workbook: Ods<_> = Ods::new(Cursor::new(bytes)).map_err(|e| match e {
            calamine::OdsError::Password => FileError::PasswordProtected,
            e => damaged("ods", e),
        })?;
        self.whole_sheets(workbook, Format::Ods, "ods")
    }

    /// Formats calamine reads a sheet at a time (the guard has capped their dimensions): the
    /// first sheet with the required headers, else the closest miss.
    fn whole_sheets<W, R>(
        &mut self,
        mut workbook: W,
        format: Format,
        name: &'static str,
    ) -> Result<ParsedFile, FileError>
    where
        W: Reader<R>,
        R: std::io::Read + std::io::Seek,
        W::Error: std::fmt::Display,
    {
        let mut best = None;
        for sheet in workbook.sheet_names() {
            let range = workbook
                .worksheet_range(&sheet)
                .map_err(|e| damaged(name, e))?;
            match self.range(&sheet, format, range)? {
                SheetOutcome::Parsed(parsed) => return Ok(parsed),
                SheetOutcome::NoHeader(candidate) => best = closer(best, candidate),
            }
        }
        Err(self.missing_columns(best))
    }

    fn range(
        &mut self,
        name: &str,
        format: Format,
        range: Range<Data>,
    ) -> Result<SheetOutcome, FileError> {
        let mut rows = RangeRows {
            sheet: name,
            limits: self.limits,
            range: &range,
            next: 0,
        };
        self.sheet(Some(name), format, &mut rows)
    }

    pub fn csv(&mut self, bytes: &[u8]) -> Result<ParsedFile, FileError> {
        let text = csv_text(bytes)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter(text))
            .from_reader(text.as_bytes());
        let mut rows = CsvRows {
            records: reader.records(),
            text,
            limits: self.limits,
            previous: None,
        };
        match self.sheet(None, Format::Csv, &mut rows)? {
            SheetOutcome::Parsed(parsed) => Ok(parsed),
            SheetOutcome::NoHeader(candidate) => Err(self.missing_columns(candidate)),
        }
    }

    /// Finds the header row among the first non-empty rows, then validates every row below it.
    fn sheet<'a>(
        &mut self,
        name: Option<&str>,
        format: Format,
        rows: &mut dyn RowSource<'a>,
    ) -> Result<SheetOutcome, FileError> {
        let mut best: Option<Candidate> = None;
        let mut header = None;
        let mut cells = RowCells::new();
        for _ in 0..HEADER_SEARCH_ROWS {
            let Some(row) = rows.next_row(&mut cells)? else {
                break;
            };
            let texts: Vec<(u32, String)> = cells
                .iter()
                .filter_map(|(index, cell)| Some((*index, cell.text().ok()??.into_owned())))
                .collect();
            let map = HeaderMap::match_row(self.kind, &texts);
            let missing = map.missing(self.kind);
            if missing.is_empty() {
                header = Some((row, map, OriginalRow::from_cells(&cells)));
                break;
            }
            let candidate = Candidate {
                sheet: name.map(str::to_owned),
                row,
                headers: map.headers(),
                missing,
            };
            best = closer(best, Some(candidate));
        }
        let Some((header_row, map, header_cells)) = header else {
            return Ok(SheetOutcome::NoHeader(best));
        };
        let ignored_columns = map.ignored();
        let mut validator = RowValidator::new(self.kind, map, self.today);
        let mut rows_seen: u32 = 0;
        let max_rows = self.limits.max_rows as usize;
        let (mut chunks_sent, mut rows_sent) = (0, 0);
        let mut chunk_rows = self.chunking.size(0, 0, max_rows);
        while let Some(row) = rows.next_row(&mut cells)? {
            if let Some(capture) = self.capture {
                if capture.contains(&row) {
                    validator.keep_original(row, &cells);
                }
                continue;
            }
            if validator.is_blank(&cells) {
                continue;
            }
            rows_seen += 1;
            if rows_seen > self.limits.max_rows {
                return Err(FileError::TooManyRows {
                    sheet: name.unwrap_or("CSV").to_owned(),
                    max: self.limits.max_rows,
                });
            }
            validator.push_row(row, &cells);
            if validator.records.len() >= chunk_rows {
                chunks_sent += 1;
                rows_sent += chunk_rows;
                chunk_rows = self.chunking.size(chunks_sent, rows_sent, max_rows);
                // Reserve the next chunk whole (a whole-file read, whose chunk is the file,
                // never gets here).
                let next = Records::with_capacity(self.kind, chunk_rows.min(MAX_RESERVED_ROWS));
                let chunk = std::mem::replace(&mut validator.records, next);
                if (self.sink)(chunk).is_break() {
                    return Err(FileError::Stopped);
                }
            }
        }
        Ok(SheetOutcome::Parsed(ParsedFile {
            format,
            sheet: name.map(str::to_owned),
            header_row,
            ignored_columns,
            header_cells: header_cells.cells().map(str::to_owned).collect(),
            records: validator.records,
            rejected: validator.rejected,
            rejected_originals: validator.rejected_originals,
            rows_seen,
        }))
    }

    fn missing_columns(&self, best: Option<Candidate>) -> FileError {
        let required = Field::required(self.kind);
        match best {
            Some(candidate) => FileError::MissingColumns {
                sheet: candidate.sheet,
                row: Some(candidate.row),
                missing: candidate.missing.iter().map(|f| f.name()).collect(),
                found: candidate.headers,
            },
            None => FileError::MissingColumns {
                sheet: None,
                row: None,
                missing: required.iter().map(|f| f.name()).collect(),
                found: Vec::new(),
            },
        }
    }
}

/// The candidate missing fewer required headers; the earlier one on a tie.
fn closer(best: Option<Candidate>, next: Option<Candidate>) -> Option<Candidate> {
    match (best, next) {
        (Some(best), Some(next)) if next.missing.len() < best.missing.len() => Some(next),
        (Some(best), _) => Some(best),
        (None, next) => next,
    }
}

fn damaged(format: &'static str, error: impl std::fmt::Display) -> FileError {
    FileError::Damaged {
        format,
        detail: error.to_string(),
    }
}

fn xlsx_error(format: &'static str, error: XlsxError) -> FileError {
    match error {
        XlsxError::Password => FileError::PasswordProtected,
        e => damaged(format, e),
    }
}

fn xlsb_error(error: XlsbError) -> FileError {
    match error {
        XlsbError::Password => FileError::PasswordProtected,
        e => damaged("xlsb", e),
    }
}

fn too_many_columns(sheet: &str, row: u32, column: u32, limits: &Limits) -> FileError {
    FileError::TooManyColumns {
        sheet: sheet.to_owned(),
        row,
        column: column.saturating_add(1),
        max: limits.max_columns,
    }
}

/// Cells as a streaming reader yields them, in sheet order, grouped into rows. Blank cells
/// (millions of formatted-but-empty ones) are dropped as they pass; only the current row is
/// held.
struct CellStream<'s, 'a, F> {
    sheet: &'s str,
    limits: &'s Limits,
    next_cell: F,
    pending: Option<((u32, u32), Cell<'a>)>,
    done: bool,
}

impl<'s, 'a, F> CellStream<'s, 'a, F>
where
    F: FnMut() -> Result<Option<((u32, u32), Cell<'a>)>, FileError>,
{
    fn new(sheet: &'s str, limits: &'s Limits, next_cell: F) -> Self {
        CellStream {
            sheet,
            limits,
            next_cell,
            pending: None,
            done: false,
        }
    }
}

impl<'a, F> RowSource<'a> for CellStream<'_, 'a, F>
where
    F: FnMut() -> Result<Option<((u32, u32), Cell<'a>)>, FileError>,
{
    fn next_row(&mut self, cells: &mut RowCells<'a>) -> Result<Option<u32>, FileError> {
        cells.clear();
        let mut current: Option<u32> = None;
        loop {
            let next = match self.pending.take() {
                Some(cell) => Some(cell),
                None if self.done => None,
                None => (self.next_cell)()?,
            };
            let Some(((row, column), cell)) = next else {
                self.done = true;
                break;
            };
            if cell.is_blank() {
                continue;
            }
            match current {
                Some(r) if r != row => {
                    self.pending = Some(((row, column), cell));
                    break;
                }
                _ => current = Some(row),
            }
            if column >= self.limits.max_columns {
                return Err(too_many_columns(
                    self.sheet,
                    row.saturating_add(1),
                    column,
                    self.limits,
                ));
            }
            cells.push((column, cell));
            // A row holds at most `max_columns` distinct cells; more are repeats of a cell (a
            // crafted sheet can list one cell a million times), so they are folded as they come.
            if cells.len() >= 2 * self.limits.max_columns as usize {
                cells.sort_by_key(|(column, _)| *column);
                cells.dedup_by_key(|(column, _)| *column);
            }
        }
        Ok(current.map(|row| {
            // Files list a row's cells in order; only an odd writer needs the sort.
            if !cells.is_sorted_by_key(|(column, _)| *column) {
                cells.sort_by_key(|(column, _)| *column);
            }
            cells.dedup_by_key(|(column, _)| *column);
            row.saturating_add(1)
        }))
    }
}

/// Rows of a sheet read whole.
struct RangeRows<'s> {
    sheet: &'s str,
    limits: &'s Limits,
    range: &'s Range<Data>,
    next: usize,
}

impl<'s> RowSource<'s> for RangeRows<'s> {
    fn next_row(&mut self, cells: &mut RowCells<'s>) -> Result<Option<u32>, FileError> {
        cells.clear();
        let Some((first_row, first_col)) = self.range.start() else {
            return Ok(None);
        };
        let width = self.range.width();
        while self.next < self.range.height() {
            let index = self.next;
            self.next += 1;
            let row = first_row.saturating_add(index as u32).saturating_add(1);
            for offset in 0..width {
                let Some(data) = self.range.get((index, offset)) else {
                    continue;
                };
                let cell = Cell::from_data(data);
                if cell.is_blank() {
                    continue;
                }
                let column = first_col.saturating_add(offset as u32);
                if column >= self.limits.max_columns {
                    return Err(too_many_columns(self.sheet, row, column, self.limits));
                }
                cells.push((column, cell));
            }
            if !cells.is_empty() {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }
}

/// Records of a CSV file. The row number is the one a spreadsheet program shows: each record is
/// one row however many lines its quoted cells span, and each blank line (which the csv reader
/// skips) is an empty row.
struct CsvRows<'a> {
    records: csv::StringRecordsIter<'a, &'a [u8]>,
    /// What the reader reads, to count the line breaks between records.
    text: &'a str,
    limits: &'a Limits,
    /// The last record's row, its first byte, and the line breaks inside its cells.
    previous: Option<(u64, usize, u64)>,
}

impl RowSource<'static> for CsvRows<'_> {
    fn next_row(&mut self, cells: &mut RowCells<'static>) -> Result<Option<u32>, FileError> {
        cells.clear();
        for record in self.records.by_ref() {
            let record = record.map_err(|e| damaged("csv", e))?;
            // The reader's position is where it began looking, before the blank lines it skips.
            let scan = record
                .position()
                .map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
            let start = scan
                + self.text.get(scan..).map_or(0, |rest| {
                    rest.bytes()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count()
                });
            let line_breaks = |from: usize, to: usize| {
                self.text.get(from..to).map_or(0, |part| {
                    part.bytes().filter(|b| *b == b'\n').count() as u64
                })
            };
            // Line breaks between the last record's start and this one's: those inside the
            // last record's cells, its own end, and one per blank line.
            let row = match self.previous {
                None => 1 + line_breaks(0, start),
                Some((row, previous_start, inside)) => {
                    let blank = line_breaks(previous_start, start).saturating_sub(inside + 1);
                    row + 1 + blank
                }
            };
            let inside = record
                .iter()
                .map(|field| field.bytes().filter(|b| *b == b'\n').count() as u64)
                .sum();
            self.previous = Some((row, start, inside));
            let row = u32::try_from(row).unwrap_or(u32::MAX);
            for (index, field) in record.iter().enumerate() {
                if clean(field).is_empty() {
                    continue;
                }
                let cell = Cell::Text(unguard_formula(field).to_owned().into());
                let column = u32::try_from(index).unwrap_or(u32::MAX);
                if column >= self.limits.max_columns {
                    return Err(too_many_columns("CSV", row, column, self.limits));
                }
                cells.push((column, cell));
            }
            if !cells.is_empty() {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }
}

fn csv_text(bytes: &[u8]) -> Result<&str, FileError> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(FileError::NotUtf8 { line: 1 });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
            + 1;
        FileError::NotUtf8 { line }
    })
}

/// Comma, unless the first line clearly uses semicolons (Excel in many European locales) or
/// tabs.
fn delimiter(text: &str) -> u8 {
    let first = text.lines().next().unwrap_or("");
    let count = |c: char| first.matches(c).count();
    let (commas, semicolons, tabs) = (count(','), count(';'), count('\t'));
    if semicolons > commas && semicolons >= tabs {
        b';'
    } else if tabs > commas && tabs > semicolons {
        b'\t'
    } else {
        b','
    }
}
