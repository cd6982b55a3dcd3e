//! Checks made before calamine opens a file: what the bytes really are, and whether reading
//! them could cost more than [`Limits`] allow. calamine trusts sizes written inside a file
//! (it reserves a sheet's declared `.xls` dimensions, an `.xlsx`'s declared count of texts,
//! every cell of an `.ods` sheet's area), and an allocation that fails aborts the process, so
//! these numbers are read and capped here first.

use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};
use zip::ZipArchive;

use super::{FileError, Format, Limits};

/// What the bytes hold, whatever the file was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// An OOXML workbook (`.xlsx` or `.xlsm`; the name's format when it is one of those).
    Xlsx(Format),
    Xlsb,
    Ods,
    Xls,
    /// Not a binary container: read as CSV text.
    Text,
}

const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
const ZIP_EMPTY_MAGIC: &[u8] = b"PK\x05\x06";
const CFB_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// Sniffs the container and runs its checks.
pub fn inspect(bytes: &[u8], named: Format, limits: &Limits) -> Result<Container, FileError> {
    if bytes.starts_with(ZIP_MAGIC) || bytes.starts_with(ZIP_EMPTY_MAGIC) {
        return inspect_zip(bytes, named, limits);
    }
    if bytes.starts_with(CFB_MAGIC) {
        inspect_cfb(bytes, named, limits)?;
        return Ok(Container::Xls);
    }
    if named == Format::Csv {
        return Ok(Container::Text);
    }
    Err(FileError::NotSpreadsheet {
        what: describe_other(bytes),
    })
}

/// A person's description of bytes that are neither a zip nor a compound file.
fn describe_other(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(1024)];
    let text = String::from_utf8_lossy(head);
    let lower = text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .to_ascii_lowercase();
    let what = if head.starts_with(b"%PDF") {
        "a PDF document"
    } else if head.starts_with(b"\x89PNG") {
        "a PNG image"
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "a JPEG image"
    } else if head.starts_with(&[0x1F, 0x8B]) {
        "a gzip archive"
    } else if head.starts_with(b"Rar!") || head.starts_with(b"7z\xBC\xAF") {
        "a compressed archive"
    } else if lower.starts_with("<?xml")
        && lower.contains("urn:schemas-microsoft-com:office:spreadsheet")
    {
        "an Excel 2003 XML spreadsheet (open it in Excel and save it as .xlsx)"
    } else if lower.starts_with("<!doctype html")
        || lower.starts_with("<html")
        || lower.starts_with("<table")
        || (lower.starts_with("<") && lower.contains("<table"))
    {
        "a web page (HTML) with a spreadsheet's name (open it in Excel and save it as .xlsx)"
    } else if is_text(head) {
        "plain text (a CSV file should be named .csv)"
    } else {
        "not in a format we recognise"
    };
    what.to_owned()
}

/// UTF-8 text, allowing a character cut at the end of the sample.
fn is_text(head: &[u8]) -> bool {
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fn damaged(format: &'static str, detail: impl std::fmt::Display) -> FileError {
    FileError::Damaged {
        format,
        detail: detail.to_string(),
    }
}

/// Zip containers: entry count and unpacked size from the central directory, then the format
/// by the parts present, then per-format checks.
fn inspect_zip(bytes: &[u8], named: Format, limits: &Limits) -> Result<Container, FileError> {
    let label = match named {
        Format::Ods => "ods",
        Format::Xlsb => "xlsb",
        Format::Xlsm => "xlsm",
        _ => "xlsx",
    };
    check_end_of_central_directory(bytes, label, limits)?;
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(|e| damaged(label, e))?;
    let entries = archive.len() as u64;
    if entries > limits.max_zip_entries {
        return Err(FileError::TooManyParts {
            entries,
            max: limits.max_zip_entries,
        });
    }
    let mut unpacked: u64 = 0;
    let mut names = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive
            .by_index_data(index)
            .map_err(|e| damaged(label, e))?;
        if entry.encrypted() {
            return Err(FileError::PasswordProtected);
        }
        unpacked = unpacked.saturating_add(entry.size());
        names.push(entry.name().map_err(|e| damaged(label, e))?.into_owned());
    }
    if unpacked > limits.max_unpacked_bytes {
        return Err(FileError::TooLargeUnpacked {
            size: unpacked,
            max: limits.max_unpacked_bytes,
        });
    }
    let has = |wanted: &str| names.iter().any(|n| n.eq_ignore_ascii_case(wanted));
    let has_suffix = |suffix: &str| {
        names
            .iter()
            .any(|n| n.to_ascii_lowercase().ends_with(suffix))
    };
    if has("content.xml") && (has("mimetype") || has("META-INF/manifest.xml")) {
        check_ods(&mut archive, limits)?;
        return Ok(Container::Ods);
    }
    if has_suffix("workbook.bin") {
        return Ok(Container::Xlsb);
    }
    if has_suffix("workbook.xml") {
        for name in names
            .iter()
            .filter(|n| n.to_ascii_lowercase().ends_with("sharedstrings.xml"))
        {
            check_shared_strings(&mut archive, name, limits)?;
        }
        let format = if named == Format::Xlsm {
            Format::Xlsm
        } else {
            Format::Xlsx
        };
        return Ok(Container::Xlsx(format));
    }
    let what = if has("word/document.xml") {
        "a Word document"
    } else if has("ppt/presentation.xml") {
        "a PowerPoint presentation"
    } else {
        "a zip archive without a workbook in it"
    };
    Err(FileError::NotSpreadsheet {
        what: what.to_owned(),
    })
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at + 2)?;
    Some(u64::from(u16::from_le_bytes([b[0], b[1]])))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at + 4)?;
    Some(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at + 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(b);
    Some(u64::from_le_bytes(word))
}

/// The zip reader sizes its table of entries by the count in the end-of-central-directory
/// record; every such record in the file's tail (the reader tries each) must claim no more
/// entries than allowed, and a directory no larger than the file.
fn check_end_of_central_directory(
    bytes: &[u8],
    label: &'static str,
    limits: &Limits,
) -> Result<(), FileError> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const ZIP64_LOCATOR: &[u8] = b"PK\x06\x07";
    const ZIP64_EOCD: &[u8] = b"PK\x06\x06";
    let len = bytes.len();
    if len < 22 {
        return Err(damaged(label, "the zip container is incomplete"));
    }
    let lowest = len.saturating_sub(22 + usize::from(u16::MAX));
    let mut found = false;
    for at in (lowest..=len - 22).rev() {
        if &bytes[at..at + 4] != EOCD {
            continue;
        }
        found = true;
        let mut entries = u16_at(bytes, at + 10).unwrap_or(0);
        let mut directory = u32_at(bytes, at + 12).unwrap_or(0);
        if entries == 0xFFFF || directory == 0xFFFF_FFFF {
            let zip64 = at
                .checked_sub(20)
                .filter(|l| bytes.get(*l..*l + 4) == Some(ZIP64_LOCATOR))
                .and_then(|l| u64_at(bytes, l + 8))
                .and_then(|offset| usize::try_from(offset).ok())
                .filter(|o| bytes.get(*o..*o + 4) == Some(ZIP64_EOCD));
            if let Some(record) = zip64 {
                entries = u64_at(bytes, record + 32).unwrap_or(u64::MAX);
                directory = u64_at(bytes, record + 40).unwrap_or(u64::MAX);
            }
        }
        if entries > limits.max_zip_entries {
            return Err(FileError::TooManyParts {
                entries,
                max: limits.max_zip_entries,
            });
        }
        if directory > len as u64 {
            return Err(damaged(
                label,
                "the zip directory is larger than the file: it was cut short",
            ));
        }
    }
    if found {
        Ok(())
    } else {
        Err(damaged(
            label,
            "the zip container has no directory: the file was cut short",
        ))
    }
}

fn attribute(element: &BytesStart<'_>, name: &str) -> Option<String> {
    element
        .try_get_attribute(name)
        .ok()
        .flatten()
        .map(|a| a.value.into_owned())
}

/// calamine reserves room for `uniqueCount` texts before reading any.
fn check_shared_strings(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limits: &Limits,
) -> Result<(), FileError> {
    let Ok(part) = archive.by_name(name) else {
        return Ok(());
    };
    let mut head = Vec::new();
    part.take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(|e| damaged("xlsx", e))?;
    let mut reader = quick_xml::Reader::from_reader(head.as_slice());
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                if e.local_name().as_ref() == "sst" {
                    let declared = attribute(&e, "uniqueCount")
                        .and_then(|v| v.trim().parse::<u128>().ok())
                        .unwrap_or(0);
                    if declared > u128::from(limits.max_cells) {
                        return Err(FileError::TooManyTexts {
                            declared: u64::try_from(declared).unwrap_or(u64::MAX),
                            max: limits.max_cells,
                        });
                    }
                }
                return Ok(());
            }
            Ok(Event::Eof) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        buf.clear();
    }
}

/// One table's extent in an `.ods`, counting repeated rows and columns as calamine expands
/// them.
#[derive(Default)]
struct OdsExtent {
    name: String,
    row: u64,
    first_used_row: Option<u64>,
    used_rows_end: u64,
    used_columns: u64,
}

impl OdsExtent {
    fn check(&self, limits: &Limits) -> Result<(), FileError> {
        let Some(first) = self.first_used_row else {
            return Ok(());
        };
        let rows = self.used_rows_end.saturating_sub(first);
        let columns = self.used_columns;
        if rows.saturating_mul(columns) > limits.max_cells {
            return Err(FileError::TooManyCells {
                format: ".ods",
                sheet: self.name.clone(),
                rows,
                columns,
                max: limits.max_cells,
            });
        }
        Ok(())
    }
}

fn repeats(element: &BytesStart<'_>, name: &str) -> Result<u64, FileError> {
    match attribute(element, name) {
        None => Ok(1),
        Some(value) => value
            .trim()
            .parse::<u64>()
            .map_err(|_| damaged("ods", format!("{name}=\"{value}\" is not a count"))),
    }
}

/// Streams `content.xml` (already capped by the unpacked size) and measures every table.
fn check_ods(archive: &mut ZipArchive<Cursor<&[u8]>>, limits: &Limits) -> Result<(), FileError> {
    let part = archive
        .by_name("content.xml")
        .map_err(|e| damaged("ods", e))?;
    let mut reader = quick_xml::Reader::from_reader(std::io::BufReader::new(part));
    let mut buf = Vec::new();
    let mut table: Option<OdsExtent> = None;
    // Within a row: the column reached, the end of the last cell with content, the repeats.
    let mut row: Option<(u64, u64, u64)> = None;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| damaged("ods", e))?;
        let open = matches!(event, Event::Start(_));
        match event {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == "table:table" => {
                if let Some(done) = table.take() {
                    done.check(limits)?;
                }
                table = Some(OdsExtent {
                    name: attribute(&e, "table:name").unwrap_or_default(),
                    ..OdsExtent::default()
                });
            }
            Event::End(e) if e.name().as_ref() == "table:table" => {
                if let Some(done) = table.take() {
                    done.check(limits)?;
                }
            }
            Event::Start(e) if e.name().as_ref() == "table:table-row" => {
                row = Some((0, 0, repeats(&e, "table:number-rows-repeated")?));
            }
            Event::Empty(e) if e.name().as_ref() == "table:table-row" => {
                if let Some(t) = table.as_mut() {
                    let r = repeats(&e, "table:number-rows-repeated")?;
                    t.row = t.row.saturating_add(r);
                }
            }
            Event::Start(e) | Event::Empty(e)
                if matches!(
                    e.name().as_ref(),
                    "table:table-cell" | "table:covered-table-cell"
                ) =>
            {
                // `<cell>...</cell>` may hold text; `<cell/>` holds a value only as attributes.
                let content = open || attribute(&e, "office:value-type").is_some();
                if let Some((column, used, _)) = row.as_mut() {
                    *column = column.saturating_add(repeats(&e, "table:number-columns-repeated")?);
                    if content {
                        *used = *column;
                    }
                }
            }
            Event::End(e) if e.name().as_ref() == "table:table-row" => {
                if let (Some(t), Some((_, used, r))) = (table.as_mut(), row.take()) {
                    if used > 0 {
                        t.first_used_row.get_or_insert(t.row);
                        t.used_rows_end = t.row.saturating_add(r);
                        t.used_columns = t.used_columns.max(used);
                        // Refuse as soon as the area is too big, not at the table's end.
                        t.check(limits)?;
                    }
                    t.row = t.row.saturating_add(r);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if let Some(done) = table.take() {
        done.check(limits)?;
    }
    Ok(())
}

/// Compound files: an encrypted OOXML package, or an `.xls` whose sheets are measured. Excel
/// saves a password-protected `.xlsx` as a compound file, so one named `.xlsx`/`.xlsm`/`.xlsb`
/// that is not a readable `.xls` is taken to be that.
fn inspect_cfb(bytes: &[u8], named: Format, limits: &Limits) -> Result<(), FileError> {
    let ooxml_name = matches!(named, Format::Xlsx | Format::Xlsm | Format::Xlsb);
    let mut file = match cfb::CompoundFile::open(Cursor::new(bytes)) {
        Ok(file) => file,
        Err(_) if ooxml_name => return Err(FileError::PasswordProtected),
        Err(e) => return Err(damaged("xls", e)),
    };
    if file.is_stream("/EncryptedPackage") || file.is_stream("/EncryptionInfo") {
        return Err(FileError::PasswordProtected);
    }
    let Some(path) = ["/Workbook", "/Book", "/WORKBOOK", "/BOOK"]
        .into_iter()
        .find(|p| file.is_stream(p))
    else {
        if ooxml_name {
            return Err(FileError::PasswordProtected);
        }
        return Err(FileError::NotSpreadsheet {
            what: "an Office document without a workbook in it (a Word or PowerPoint file?)"
                .to_owned(),
        });
    };
    let mut stream = file.open_stream(path).map_err(|e| damaged("xls", e))?;
    let mut workbook = Vec::new();
    // A stream cannot be longer than the file holding it.
    (&mut stream)
        .take(bytes.len() as u64)
        .read_to_end(&mut workbook)
        .map_err(|e| damaged("xls", e))?;
    check_biff(&workbook, limits)
}

/// One BIFF record of an `.xls` workbook stream.
struct Record<'a> {
    kind: u16,
    data: &'a [u8],
}

fn records(stream: &[u8]) -> impl Iterator<Item = Record<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = stream.get(at..at + 4)?;
        let kind = u16::from_le_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let data = stream.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        Some(Record { kind, data })
    })
}

/// Walks the workbook globals for the sheets' offsets (as calamine does), then each sheet's
/// records for its declared dimensions and the area its cells span.
pub fn check_biff(stream: &[u8], limits: &Limits) -> Result<(), FileError> {
    let mut sheets = Vec::new();
    for record in records(stream) {
        match record.kind {
            // FilePass: the workbook is encrypted.
            0x002F if u16_at(record.data, 0).unwrap_or(0) != 0 => {
                return Err(FileError::PasswordProtected)
            }
            // BoundSheet8: where a sheet's records start.
            0x0085 => {
                if let Some(offset) = u32_at(record.data, 0) {
                    let name_len = record.data.get(6).copied().unwrap_or(0);
                    let name = record
                        .data
                        .get(8..8 + usize::from(name_len))
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .unwrap_or_default();
                    sheets.push((offset as usize, name));
                }
            }
            0x000A => break,
            _ => {}
        }
    }
    for (offset, name) in sheets {
        let Some(sheet) = stream.get(offset..) else {
            continue;
        };
        check_biff_sheet(sheet, &name, limits)?;
    }
    Ok(())
}

fn check_biff_sheet(sheet: &[u8], name: &str, limits: &Limits) -> Result<(), FileError> {
    let too_big = |rows: u64, columns: u64| FileError::TooManyCells {
        format: ".xls",
        sheet: name.to_owned(),
        rows,
        columns,
        max: limits.max_cells,
    };
    let mut seen_bof = false;
    let mut depth = 0usize;
    let mut span: Option<(u64, u64, u64, u64)> = None;
    let mut extend = |row: u64, first: u64, last: u64| {
        let (r0, r1, c0, c1) = span.get_or_insert((row, row, first, last));
        *r0 = (*r0).min(row);
        *r1 = (*r1).max(row);
        *c0 = (*c0).min(first);
        *c1 = (*c1).max(last);
    };
    for record in records(sheet) {
        if depth > 0 {
            match record.kind {
                0x0809 => depth += 1,
                0x000A => depth -= 1,
                _ => {}
            }
            continue;
        }
        let data = record.data;
        match record.kind {
            0x0809 => {
                if seen_bof {
                    depth += 1;
                } else {
                    seen_bof = true;
                }
            }
            // Dimensions: calamine reserves rows x columns cells from it.
            0x0200 => {
                let fields = match data.len() {
                    10 => (
                        u16_at(data, 0),
                        u16_at(data, 2),
                        u16_at(data, 4),
                        u16_at(data, 6),
                    ),
                    14 | 16 => (
                        u32_at(data, 0),
                        u32_at(data, 4),
                        u16_at(data, 8),
                        u16_at(data, 10),
                    ),
                    _ => (None, None, None, None),
                };
                let (Some(first_row), Some(last_row), Some(first_col), Some(last_col)) = fields
                else {
                    return Err(damaged("xls", "a sheet's dimensions record is malformed"));
                };
                // As calamine reads it: a first column past 255 or after the last means 0.
                let first_col = if first_col > 0xFF || last_col < first_col {
                    0
                } else {
                    first_col
                };
                if last_row >= 1 && last_col >= 1 {
                    if last_row - 1 < first_row || last_col - 1 < first_col {
                        return Err(damaged("xls", "a sheet's dimensions are inverted"));
                    }
                    let rows = last_row - first_row;
                    let columns = last_col - first_col;
                    if rows.saturating_mul(columns) > limits.max_cells {
                        return Err(too_big(rows, columns));
                    }
                }
            }
            // Number, Label, RString, BoolErr, Rk, LabelSst, Formula: row, column first.
            0x0203 | 0x0204 | 0x00D6 | 0x0205 | 0x027E | 0x00FD | 0x0006 => {
                if let (Some(row), Some(col)) = (u16_at(data, 0), u16_at(data, 2)) {
                    extend(row, col, col);
                }
            }
            // MulRk: row, first column, ..., last column.
            0x00BD => {
                let last = data.len().checked_sub(2).and_then(|at| u16_at(data, at));
                if let (Some(row), Some(first), Some(last)) =
                    (u16_at(data, 0), u16_at(data, 2), last)
                {
                    extend(row, first, last.max(first));
                }
            }
            0x000A => break,
            _ => {}
        }
    }
    if let Some((r0, r1, c0, c1)) = span {
        let rows = r1 - r0 + 1;
        let columns = c1 - c0 + 1;
        if rows.saturating_mul(columns) > limits.max_cells {
            return Err(too_big(rows, columns));
        }
    }
    Ok(())
}
