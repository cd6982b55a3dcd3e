//! Checks made before calamine opens a file: what the bytes really are, and whether reading
//! them could cost more than [`Limits`] allow. calamine trusts sizes written inside a file
//! (it reserves a sheet's declared `.xls` dimensions, an `.xlsx`'s declared count of texts,
//! every cell of an `.ods` sheet's area, the declared length of each `.xlsb` record), and an
//! allocation that fails aborts the process, so these numbers are read and capped here first.
//!
//! Where calamine 0.38 decides what it allocates, the guard reads the file the way calamine
//! does, step for step: the same XML reader settings and the same element it stops at for
//! `.xlsx` and `.ods`, calamine's own compound-file reading for `.xls` (which stream, which
//! sectors), the same record walk for `.xls` and `.xlsb`. A measure that only resembled calamine's could be steered:
//! a crafted file would show the guard one thing and calamine another. Where calamine would
//! give up on a file anyway, the guard refuses it as damaged.

use std::io::{BufRead, BufReader, Cursor};

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::QName;
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
        check_xlsb(&mut archive, &names, limits)?;
        return Ok(Container::Xlsb);
    }
    if has_suffix("workbook.xml") {
        // By index, not by name: a name may appear twice, and every copy is checked.
        for (index, _) in names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.to_ascii_lowercase().ends_with("sharedstrings.xml"))
        {
            check_shared_strings(&mut archive, index, label, limits)?;
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

/// An XML reader set up as calamine sets up the ones it reads parts with (`xml_reader` in
/// xlsx/mod.rs, `parse_content` in ods.rs): `<a/>` comes as a start and an end, end names and
/// comments are not checked, text is not trimmed. The guard must meet the same events, in the
/// same order, as calamine.
fn calamine_xml<R: BufRead>(source: R) -> quick_xml::Reader<R> {
    let mut reader = quick_xml::Reader::from_reader(source);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.trim_text(false);
    config.check_comments = false;
    config.expand_empty_elements = true;
    reader
}

/// The attributes of an element as calamine scans them (`RawAttrIter` in attrs.rs), which is
/// not how quick-xml does: a key is everything up to `=`, duplicates are allowed, values are
/// raw (entities not decoded). A malformed attribute is an error, as there.
fn raw_attributes(raw: &str) -> impl Iterator<Item = Result<(&str, &str), String>> {
    let bytes = raw.as_bytes();
    let end = bytes.len();
    let mut at = 0usize;
    std::iter::from_fn(move || {
        while at < end && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if at >= end {
            return None;
        }
        let key_start = at;
        while at < end && bytes[at] != b'=' {
            at += 1;
        }
        if at >= end {
            at = end;
            return Some(Err(format!(
                "the attribute `{}` has no value",
                excerpt(raw[key_start..].trim())
            )));
        }
        let key = raw[key_start..at].trim_ascii_end();
        at += 1;
        while at < end && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let quote = match bytes.get(at) {
            Some(&q) if q == b'"' || q == b'\'' => q,
            _ => {
                at = end;
                return Some(Err(format!(
                    "the attribute `{}` is not quoted",
                    excerpt(key)
                )));
            }
        };
        at += 1;
        let value_start = at;
        while at < end && bytes[at] != quote {
            at += 1;
        }
        let value = &raw[value_start..at];
        if at < end {
            at += 1;
        }
        Some(Ok((key, value)))
    })
}

/// At most 40 characters of `text` for an error message: what a file writes may be huge.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// calamine's `raw_attr`: the first attribute whose key is exactly `name`, its value raw.
fn raw_attribute<'e>(element: &'e BytesStart<'_>, name: &str) -> Result<Option<&'e str>, String> {
    for item in raw_attributes(element.attributes_raw()) {
        let (key, value) = item?;
        if key == name {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// An attribute value with its entities decoded, as calamine's `decode_attr` does.
fn decoded(value: &str) -> Result<String, String> {
    quick_xml::escape::unescape(value)
        .map(|text| text.into_owned())
        .map_err(|e| format!("`{}` cannot be decoded: {e}", excerpt(value)))
}

/// The count calamine takes from a raw `uniqueCount` (atoi_simd, digits only, leading zeros
/// skipped); anything else makes it reserve nothing. A leading `+` is accepted here too, to
/// be safe. Counts too large for a `u64` saturate: they are refused all the same.
fn declared_count(value: &str) -> Option<u64> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    }))
}

/// calamine reserves room for `uniqueCount` texts before reading any (`read_shared_strings` in
/// xlsx/mod.rs). It skips every event up to the first start element whose local name is
/// `sst`, however far into the part that is, and reads the attribute there. The guard reads
/// the part the same way to the same point (the part is already capped by the unpacked size);
/// a part that is not XML calamine could read that far is refused, since nothing in it can
/// be trusted.
fn check_shared_strings(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    label: &'static str,
    limits: &Limits,
) -> Result<(), FileError> {
    let part = archive.by_index(index).map_err(|e| damaged(label, e))?;
    let mut reader = calamine_xml(BufReader::new(part));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) if e.local_name().as_ref() == "sst" => {
                let declared = raw_attribute(&e, "uniqueCount")
                    .map_err(|detail| damaged(label, format!("the shared texts: {detail}")))?
                    .and_then(declared_count);
                return match declared {
                    Some(declared) if declared > limits.max_cells => Err(FileError::TooManyTexts {
                        declared,
                        max: limits.max_cells,
                    }),
                    _ => Ok(()),
                };
            }
            // calamine fails on a part without `<sst>`, before reserving anything.
            Ok(Event::Eof) => return Ok(()),
            Err(e) => {
                return Err(damaged(
                    label,
                    format!("the shared texts are not readable XML: {e}"),
                ))
            }
            Ok(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// .xlsb: calamine's record walk, step for step.
//
// An `.xlsb` part is a run of BIFF12 records, each a type (1-2 bytes), a size (1-4 bytes, up to
// 2^28 - 1) and that many bytes. calamine (`RecordIter` in xlsb/mod.rs) zero-fills a buffer of
// the declared size before reading the record into it, so a size is refused here unless the
// part still holds that many bytes. That buffer only ever grows, and calamine reads texts
// (`wide_str`) from the whole buffer, not from the record: a short record after a long one
// yields the long one's text again. A 2-byte record can so make calamine copy megabytes; what
// calamine writes is summed and held to the unpacked size (`XlsbBudget`). Where calamine gives
// up on a part (an error, a panic it catches as one), the walk of that part stops: calamine
// fails there itself, having written no more than what was measured.
// ---------------------------------------------------------------------------------------------

/// A `String` calamine keeps, besides its bytes.
const STRING_HANDLE: u64 = std::mem::size_of::<String>() as u64;

/// Excel's widest row: a row holding more cells than this is not a real one. Our reader keeps
/// a row's cells until the row ends, however many share a column.
const XLSB_MAX_ROW_CELLS: u64 = 16_384;

/// calamine's `parse_formula` calls itself once per nested sub-expression (`PtgMemFunc`), with
/// no limit: deep enough, it overflows the thread's stack, which aborts the process. Real
/// formulas nest a level or two.
const XLSB_MAX_FORMULA_NESTING: u32 = 32;

/// Functions calamine knows (`FTAB_LEN` in utils.rs), their longest name ("CUBEMEMBERPROPERTY")
/// and the most arguments one takes.
const XLSB_FUNCTIONS: u64 = 485;
const XLSB_FUNCTION_NAME: u64 = 18;
const XLSB_FUNCTION_ARGS: u64 = 255;

/// Why a walk of a part ends early.
#[derive(Debug)]
enum XlsbStop {
    /// calamine fails at this point of the part (or panics, which our reader catches).
    GivesUp,
    /// The guard refuses the file.
    Refused(FileError),
}

impl From<FileError> for XlsbStop {
    fn from(error: FileError) -> Self {
        XlsbStop::Refused(error)
    }
}

type Walk<T> = Result<T, XlsbStop>;

/// What calamine needs to go on; `None` where it fails (a slice or an index out of range
/// panics, a bad value is an error).
fn need<T>(value: Option<T>) -> Walk<T> {
    value.ok_or(XlsbStop::GivesUp)
}

/// The outcome of a part's walk for the file: where calamine gives up, it refuses the file
/// itself.
fn walked(walk: Walk<()>) -> Result<(), FileError> {
    match walk {
        Ok(()) | Err(XlsbStop::GivesUp) => Ok(()),
        Err(XlsbStop::Refused(error)) => Err(error),
    }
}

/// Bytes calamine (and our reader after it) writes while reading an `.xlsb`: the texts it
/// decodes, kept or not, the copies of texts it makes, and the bytes it moves to build a
/// formula's text. Held to the unpacked size a workbook may have.
struct XlsbBudget<'l> {
    limits: &'l Limits,
    written: u64,
}

impl XlsbBudget<'_> {
    fn add(&mut self, bytes: u64) -> Result<(), FileError> {
        self.written = self.written.saturating_add(bytes);
        if self.written > self.limits.max_unpacked_bytes {
            return Err(FileError::TooLargeUnpacked {
                size: self.written,
                max: self.limits.max_unpacked_bytes,
            });
        }
        Ok(())
    }
}

/// One part as calamine's `RecordIter` reads it, with the buffer calamine reads its records
/// into (one per reading function, never shrunk, cleared where calamine clears it).
struct XlsbPart<'n, R> {
    name: &'n str,
    reader: R,
    /// Bytes of the part not read yet: the zip reader yields the declared size, no more.
    left: u64,
    buf: Vec<u8>,
}

impl<R: std::io::Read> XlsbPart<'_, R> {
    fn byte(&mut self) -> Walk<u8> {
        let mut byte = [0u8];
        if self.left == 0 || self.reader.read_exact(&mut byte).is_err() {
            return Err(XlsbStop::GivesUp);
        }
        self.left -= 1;
        Ok(byte[0])
    }

    /// calamine's `read_type`: a byte, and a second one when its high bit is set (of which
    /// only the low 7 bits count).
    fn read_type(&mut self) -> Walk<u16> {
        let first = self.byte()?;
        if first & 0x80 == 0 {
            return Ok(u16::from(first));
        }
        let second = self.byte()?;
        Ok(u16::from(first & 0x7F) + (u16::from(second & 0x7F) << 7))
    }

    /// calamine's `fill_buffer`: the size (7 bits a byte, at most 4 bytes), then the record
    /// into the front of the buffer, which grows (zero-filled) to the declared size first.
    fn fill_buffer(&mut self) -> Walk<usize> {
        let mut byte = self.byte()?;
        let mut len = usize::from(byte & 0x7F);
        for i in 1..4 {
            if byte & 0x80 == 0 {
                break;
            }
            byte = self.byte()?;
            len += usize::from(byte & 0x7F) << (7 * i);
        }
        if len as u64 > self.left {
            return Err(XlsbStop::Refused(damaged(
                "xlsb",
                format!(
                    "a record declares {len} bytes but only {} remain in {}",
                    self.left, self.name
                ),
            )));
        }
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        if self.reader.read_exact(&mut self.buf[..len]).is_err() {
            return Err(XlsbStop::GivesUp);
        }
        self.left -= len as u64;
        Ok(len)
    }

    /// calamine's `next_skip_blocks`: records up to one of `record_type`, skipping whole the
    /// blocks `bounds` open and close.
    fn next_skip_blocks(&mut self, record_type: u16, bounds: &[(u16, Option<u16>)]) -> Walk<usize> {
        loop {
            let kind = self.read_type()?;
            let len = self.fill_buffer()?;
            if kind == record_type {
                return Ok(len);
            }
            if let Some(end) = bounds.iter().find(|b| b.0 == kind).and_then(|b| b.1) {
                while self.read_type()? != end {
                    self.fill_buffer()?;
                }
                self.fill_buffer()?;
            }
        }
    }
}

/// Hands each character of the text calamine decodes from `bytes` (encoding_rs's
/// `UTF_16LE.decode`) to `each`: a byte order mark switches to UTF-8 or UTF-16BE, and what
/// does not decode becomes U+FFFD (three bytes from one, in UTF-8).
fn xlsb_decode(bytes: &[u8], mut each: impl FnMut(char)) {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        for chunk in rest.utf8_chunks() {
            chunk.valid().chars().for_each(&mut each);
            if !chunk.invalid().is_empty() {
                each(char::REPLACEMENT_CHARACTER);
            }
        }
        return;
    }
    let (rest, big_endian) = match bytes.strip_prefix(&[0xFE, 0xFF]) {
        Some(rest) => (rest, true),
        None => (bytes.strip_prefix(&[0xFF, 0xFE]).unwrap_or(bytes), false),
    };
    let units = rest.chunks_exact(2).map(|pair| {
        let pair = [pair[0], pair[1]];
        if big_endian {
            u16::from_be_bytes(pair)
        } else {
            u16::from_le_bytes(pair)
        }
    });
    for c in char::decode_utf16(units) {
        each(c.unwrap_or(char::REPLACEMENT_CHARACTER));
    }
    if rest.len() % 2 == 1 {
        each(char::REPLACEMENT_CHARACTER);
    }
}

/// Bytes of the text calamine decodes from `bytes`.
fn xlsb_text_len(bytes: &[u8]) -> u64 {
    let mut len = 0u64;
    xlsb_decode(bytes, |c| len += c.len_utf8() as u64);
    len
}

/// The text calamine decodes from `bytes`.
fn xlsb_text(bytes: &[u8]) -> String {
    let mut text = String::new();
    xlsb_decode(bytes, |c| text.push(c));
    text
}

#[cfg(test)]
pub(super) fn xlsb_decoded_len(bytes: &[u8]) -> u64 {
    xlsb_text_len(bytes)
}

/// calamine's `wide_str` at the start of `field`: a count of UTF-16 units, then the units.
/// The text's size and the bytes the field spans; `None` where calamine fails.
fn wide_str_len(field: &[u8]) -> Option<(u64, usize)> {
    let units = usize::try_from(u32_at(field, 0)?).ok()?;
    let end = units.checked_mul(2)?.checked_add(4)?;
    Some((xlsb_text_len(field.get(4..end)?), end))
}

/// The parts calamine may open for `path` (`cached_zip_path` in utils.rs): names compared
/// without case and with `\` read as `/`, else the name exactly as written. All of them are
/// walked, not only the one calamine ends up with.
fn xlsb_parts(names: &[String], path: &str) -> Vec<usize> {
    let wanted = path.to_ascii_lowercase();
    let matching: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.replace('\\', "/").to_ascii_lowercase() == wanted)
        .map(|(index, _)| index)
        .collect();
    if matching.is_empty() {
        names.iter().position(|n| n == path).into_iter().collect()
    } else {
        matching
    }
}

/// A part of the archive as calamine reads it: through a `BufReader`.
type XlsbZipPart<'a, 'b> = XlsbPart<'a, BufReader<zip::read::ZipFile<'a, Cursor<&'b [u8]>>>>;

/// A part of the archive, opened for a walk.
fn xlsb_part<'a, 'b>(
    archive: &'a mut ZipArchive<Cursor<&'b [u8]>>,
    index: usize,
    name: &'a str,
) -> Result<XlsbZipPart<'a, 'b>, FileError> {
    let entry = archive.by_index(index).map_err(|e| damaged("xlsb", e))?;
    Ok(XlsbPart {
        name,
        left: entry.size(),
        reader: BufReader::new(entry),
        buf: Vec::new(),
    })
}

/// What the workbook part tells the rest of the walk.
#[derive(Default)]
struct XlsbWorkbook<'r> {
    /// Each sheet's part, as calamine names it (`xl/` and the relationship's target).
    sheets: Vec<&'r str>,
    /// Each sheet's name, its size.
    sheet_names: Vec<u64>,
}

/// Walks the parts of an `.xlsb` in the order calamine reads them (`Xlsb::new`: the shared
/// texts, the styles, the relationships, the workbook; then each sheet as our reader opens
/// it), measuring what each would cost.
fn check_xlsb(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    names: &[String],
    limits: &Limits,
) -> Result<(), FileError> {
    let mut budget = XlsbBudget { limits, written: 0 };
    // Each shared text's size, the longest where several parts answer to the name.
    let mut shared: Vec<u64> = Vec::new();
    for index in xlsb_parts(names, "xl/sharedStrings.bin") {
        let mut sizes = Vec::new();
        let mut part = xlsb_part(archive, index, &names[index])?;
        walked(check_xlsb_shared_strings(
            &mut part,
            &mut sizes,
            &mut budget,
        ))?;
        for (i, size) in sizes.into_iter().enumerate() {
            match shared.get_mut(i) {
                Some(known) => *known = (*known).max(size),
                None => shared.push(size),
            }
        }
    }
    for index in xlsb_parts(names, "xl/styles.bin") {
        let mut part = xlsb_part(archive, index, &names[index])?;
        walked(check_xlsb_styles(&mut part, &mut budget))?;
    }
    let Some(relationships) = xlsb_relationships(archive)? else {
        return Ok(());
    };
    let mut workbook = XlsbWorkbook::default();
    for index in xlsb_parts(names, "xl/workbook.bin") {
        let mut part = xlsb_part(archive, index, &names[index])?;
        walked(check_xlsb_workbook(
            &mut part,
            &relationships,
            &mut workbook,
            &mut budget,
        ))?;
    }
    // Our reader opens the sheets one after the other, each from the start of its part: a
    // part named by many sheets is read as many times.
    let parts: Vec<usize> = workbook
        .sheets
        .iter()
        .flat_map(|target| xlsb_parts(names, &format!("xl/{target}")))
        .collect();
    let mut read = 0u64;
    for index in &parts {
        let size = archive
            .by_index_data(*index)
            .map_err(|e| damaged("xlsb", e))?
            .size();
        read = read.saturating_add(size);
    }
    if read > limits.max_unpacked_bytes {
        return Err(FileError::TooLargeUnpacked {
            size: read,
            max: limits.max_unpacked_bytes,
        });
    }
    for index in parts {
        let mut part = xlsb_part(archive, index, &names[index])?;
        walked(check_xlsb_sheet(&mut part, &shared, &mut budget))?;
    }
    Ok(())
}

/// calamine's `read_shared_strings`: records up to `BrtBeginSst`, its count of distinct
/// texts, then that many `BrtSSTItem`s, each kept as a `String`. calamine reserves nothing
/// by the count, but reads that many texts even from 2-byte records (the buffer's text again),
/// so the count is capped as an `.xlsx`'s is.
fn check_xlsb_shared_strings<R: std::io::Read>(
    part: &mut XlsbPart<'_, R>,
    sizes: &mut Vec<u64>,
    budget: &mut XlsbBudget<'_>,
) -> Walk<()> {
    part.next_skip_blocks(0x009F, &[])?;
    let declared = need(u32_at(&part.buf, 4))?;
    if declared > budget.limits.max_cells {
        return Err(XlsbStop::Refused(FileError::TooManyTexts {
            declared,
            max: budget.limits.max_cells,
        }));
    }
    for _ in 0..declared {
        part.next_skip_blocks(0x0013, &[(0x0023, Some(0x0024))])?;
        let (size, _) = need(part.buf.get(1..).and_then(wide_str_len))?;
        budget.add(size + STRING_HANDLE)?;
        sizes.push(size);
    }
    Ok(())
}

/// calamine's `read_styles`. It does not skip the records it has no use for: it reads their
/// size and data as record types, byte after byte, until it meets the bytes of
/// `BrtBeginFmts` or `BrtBeginCellXFs`. The walk does the same.
fn check_xlsb_styles<R: std::io::Read>(
    part: &mut XlsbPart<'_, R>,
    budget: &mut XlsbBudget<'_>,
) -> Walk<()> {
    loop {
        match part.read_type()? {
            // BrtBeginFmts: its count of BrtFmt, each a number format's code, decoded and
            // scanned.
            0x0267 => {
                part.fill_buffer()?;
                let count = need(u32_at(&part.buf, 0))?;
                for _ in 0..count {
                    part.next_skip_blocks(0x002C, &[])?;
                    let (size, _) = need(part.buf.get(2..).and_then(wide_str_len))?;
                    budget.add(size)?;
                }
            }
            // BrtBeginCellXFs: its count of BrtXF, a cell format kept for each; then calamine
            // stops reading the part.
            0x0269 => {
                part.fill_buffer()?;
                let count = need(u32_at(&part.buf, 0))?;
                for _ in 0..count {
                    part.next_skip_blocks(0x002F, &[])?;
                    need(part.buf.get(2..4))?;
                    budget.add(1)?;
                }
                return Ok(());
            }
            _ => {}
        }
        part.buf.clear();
    }
}

/// calamine's `read_relationships`: `Id` to decoded `Target` of each `Relationship` in
/// `xl/workbook.bin.rels` (by that exact name; none without it). `None` where calamine fails.
fn xlsb_relationships(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
) -> Result<Option<std::collections::HashMap<String, String>>, FileError> {
    let mut relationships = std::collections::HashMap::new();
    let part = match archive.by_name("xl/_rels/workbook.bin.rels") {
        Ok(part) => part,
        Err(zip::result::ZipError::FileNotFound) => return Ok(Some(relationships)),
        Err(_) => return Ok(None),
    };
    let mut reader = calamine_xml(BufReader::new(part));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) if e.name().as_ref() == "Relationship" => {
                // calamine's `get_attrs!`: stops once it has met as many of the keys as it
                // wants, a repeated key counting again.
                let (mut id, mut target, mut found) = (None, None, 0);
                for item in raw_attributes(e.attributes_raw()) {
                    let Ok((key, value)) = item else {
                        return Ok(None);
                    };
                    match key {
                        "Id" => {
                            id = Some(value);
                            found += 1;
                        }
                        "Target" => {
                            target = Some(value);
                            found += 1;
                        }
                        _ => {}
                    }
                    if found == 2 {
                        break;
                    }
                }
                if let (Some(id), Some(target)) = (id, target) {
                    let Ok(target) = decoded(target) else {
                        return Ok(None);
                    };
                    relationships.insert(id.to_owned(), target);
                }
            }
            Ok(Event::Eof) => return Ok(Some(relationships)),
            Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// calamine's `read_workbook`: the sheets (`BrtBundleSh`) up to `BrtEndBundleShs`, then the
/// sheets formulas refer to (`BrtExternSheet`) and the defined names (`BrtName`, each with its
/// formula's text) up to the first record of what follows them.
fn check_xlsb_workbook<'r, R: std::io::Read>(
    part: &mut XlsbPart<'_, R>,
    relationships: &'r std::collections::HashMap<String, String>,
    workbook: &mut XlsbWorkbook<'r>,
    budget: &mut XlsbBudget<'_>,
) -> Walk<()> {
    loop {
        match part.read_type()? {
            // BrtWbProp
            0x0099 => {
                part.fill_buffer()?;
                need(part.buf.first())?;
            }
            // BrtBundleSh: state, tab id, relationship id, name.
            0x009C => {
                let len = part.fill_buffer()?;
                let record = &part.buf[..len];
                let relation = need(u32_at(record, 8))?;
                if relation != 0xFFFF_FFFF {
                    let id_end = 12 + relation as usize * 2;
                    // The id is read from the buffer, the name from the record.
                    let id = xlsb_text(need(part.buf.get(12..id_end))?);
                    let target = need(relationships.get(&id))?;
                    need(u32_at(&part.buf, 0).filter(|state| *state <= 2))?;
                    let path = format!("xl/{target}");
                    need(
                        matches!(
                            path.split('/').nth(1),
                            Some("worksheets" | "chartsheets" | "dialogsheets")
                        )
                        .then_some(()),
                    )?;
                    let (name, _) = need(part.buf.get(id_end..len).and_then(wide_str_len))?;
                    // The name is kept three times (calamine's two lists, our reader's), the
                    // part's name once.
                    budget.add(3 * (name + STRING_HANDLE) + path.len() as u64 + STRING_HANDLE)?;
                    workbook.sheets.push(target);
                    workbook.sheet_names.push(name);
                }
            }
            // BrtEndBundleShs
            0x0090 => {
                part.fill_buffer()?;
                break;
            }
            _ => {
                part.fill_buffer()?;
            }
        }
        part.buf.clear();
    }
    let mut formulas = XlsbFormulas::default();
    loop {
        match part.read_type()? {
            // BrtExternSheet: a count, then 12-byte entries from the whole buffer, each kept
            // as the name of the sheet it points to.
            0x016A => {
                part.fill_buffer()?;
                let count = need(u32_at(&part.buf, 0))?;
                let taken = usize::try_from(count).unwrap_or(usize::MAX);
                formulas.extern_sheets = 0;
                formulas.extern_name = 0;
                for entry in part.buf[4..].chunks(12).take(taken) {
                    let sheet = need(u32_at(entry, 4))? as u32 as i32;
                    let name = match sheet {
                        -2 => "#ThisWorkbook".len() as u64,
                        -1 => "#InvalidWorkSheet".len() as u64,
                        p if p >= 0 && (p as usize) < workbook.sheet_names.len() => {
                            workbook.sheet_names[p as usize]
                        }
                        _ => "#Unknown".len() as u64,
                    };
                    budget.add(name + STRING_HANDLE)?;
                    formulas.extern_sheets += 1;
                    formulas.extern_name = formulas.extern_name.max(name);
                }
            }
            // BrtName: flags, a name, then its formula.
            0x0027 => {
                let len = part.fill_buffer()?;
                let record = &part.buf[..len];
                let (name, name_len) = need(record.get(9..).and_then(wide_str_len))?;
                let rgce_start = 13 + name_len;
                let rgce_len = need(record.get(9 + name_len..).and_then(|r| u32_at(r, 0)))?;
                let rgce_len = need(usize::try_from(rgce_len).ok())?;
                let rgce_end = need(rgce_start.checked_add(rgce_len))?;
                let rgce = need(record.get(rgce_start..rgce_end))?;
                let formula = formulas.cost(rgce, 0)?;
                budget.add(name + formula.len + formula.moved + 2 * STRING_HANDLE)?;
                formulas.defined_name = formulas.defined_name.max(name);
            }
            // What follows the names: calamine stops reading the part.
            0x009D | 0x0225 | 0x018D | 0x0180 | 0x009A | 0x0252 | 0x0229 | 0x009B | 0x0084 => {
                return Ok(());
            }
            _ => {
                part.fill_buffer()?;
            }
        }
    }
}

/// What a formula calamine builds may refer to: the longest texts a reference writes.
#[derive(Default)]
struct XlsbFormulas {
    extern_sheets: u64,
    extern_name: u64,
    defined_name: u64,
}

/// What calamine's `parse_formula` writes for one formula, at most: its text, and the bytes it
/// moves while building it (an operator or a function splits the text and writes it back, a
/// sign or a parenthesis goes in before a part of it).
struct FormulaCost {
    len: u64,
    moved: u64,
}

impl XlsbFormulas {
    /// Follows calamine token by token (its operands' sizes, where it fails), counting what
    /// each token may add at most.
    fn cost(&self, mut rgce: &[u8], depth: u32) -> Walk<FormulaCost> {
        if depth > XLSB_MAX_FORMULA_NESTING {
            return Err(XlsbStop::Refused(damaged(
                "xlsb",
                format!(
                    "a defined name's formula nests more than {XLSB_MAX_FORMULA_NESTING} levels deep"
                ),
            )));
        }
        // Row numbers (10 digits), column letters (4), `$` signs.
        const CELL: u64 = 1 + 4 + 1 + 10;
        let mut cost = FormulaCost { len: 0, moved: 0 };
        while let Some((&ptg, rest)) = rgce.split_first() {
            rgce = rest;
            let sheet = |rgce: &[u8]| -> Walk<u64> {
                let index = need(u16_at(rgce, 0))?;
                need((index < self.extern_sheets).then_some(self.extern_name))
            };
            // Operand bytes, bytes the token may add, whether it moves the text.
            let (take, add, moves): (usize, u64, bool) = match ptg {
                0x3A | 0x5A | 0x7A => (8, sheet(rgce)? + 1 + CELL, false),
                0x3B | 0x5B | 0x7B => (14, sheet(rgce)? + 2 + 2 * CELL, false),
                0x3C | 0x5C | 0x7C => (8, sheet(rgce)? + 6, false),
                0x3D | 0x5D | 0x7D => (14, sheet(rgce)? + 6, false),
                0x01 => (4, 0, false),
                0x03..=0x11 => (0, 2, true),
                0x12 | 0x13 => (0, 1, true),
                0x14 => (0, 1, false),
                0x15 => (0, 2, true),
                0x16 => (0, 0, false),
                0x17 => {
                    let units = need(u16_at(rgce, 0))? as usize;
                    let text = need(rgce.get(2..2 + 2 * units))?;
                    (2 + 2 * units, 2 + xlsb_text_len(text), false)
                }
                0x18 => match need(rgce.first())? {
                    0x19 => (13, 0, false),
                    0x1D => (5, 0, false),
                    _ => return Err(XlsbStop::GivesUp),
                },
                0x19 => match need(rgce.first())? {
                    0x01 | 0x02 | 0x08 | 0x20 | 0x21 | 0x40 | 0x41 | 0x80 => (3, 0, false),
                    0x04 => (11, 0, false),
                    0x10 => (3, "SUM()".len() as u64, true),
                    _ => return Err(XlsbStop::GivesUp),
                },
                0x1C => match need(rgce.first())? {
                    0x00 | 0x07 | 0x0F | 0x17 | 0x1D | 0x24 | 0x2A | 0x2B => {
                        (1, "#GETTING_DATA".len() as u64, false)
                    }
                    _ => return Err(XlsbStop::GivesUp),
                },
                0x1D => (1, 5, false),
                0x1E => (2, 5, false),
                0x1F => {
                    let number = need(u64_at(rgce, 0))?;
                    (8, format!("{}", f64::from_bits(number)).len() as u64, false)
                }
                0x20 | 0x40 | 0x60 => (14, 0, false),
                0x21 | 0x41 | 0x61 => {
                    if need(u16_at(rgce, 0))? >= XLSB_FUNCTIONS {
                        return Err(XlsbStop::GivesUp);
                    }
                    (2, XLSB_FUNCTION_NAME + 2 + XLSB_FUNCTION_ARGS, true)
                }
                0x22 | 0x42 | 0x62 => {
                    let arguments = u64::from(*need(rgce.first())?);
                    if need(u16_at(rgce, 1))? >= XLSB_FUNCTIONS {
                        return Err(XlsbStop::GivesUp);
                    }
                    (3, XLSB_FUNCTION_NAME + 2 + arguments, true)
                }
                0x23 | 0x43 | 0x63 => (4, self.defined_name, false),
                0x24 | 0x44 | 0x64 => (6, CELL, false),
                0x25 | 0x45 | 0x65 => (12, 1 + 2 * CELL, false),
                0x2A | 0x4A | 0x6A => (6, 5, false),
                0x2B | 0x4B | 0x6B => (12, 5, false),
                // PtgMemFunc: a sub-expression, parsed on its own.
                0x29 | 0x49 | 0x69 => {
                    let len = need(u16_at(rgce, 0))? as usize;
                    let inner = self.cost(need(rgce.get(2..2 + len))?, depth + 1)?;
                    cost.moved = cost.moved.saturating_add(inner.moved);
                    (2 + len, inner.len, false)
                }
                0x39 | 0x59 | 0x79 => (6, "EXTERNAL_WB_NAME".len() as u64, false),
                _ => return Err(XlsbStop::GivesUp),
            };
            rgce = need(rgce.get(take..))?;
            cost.len = cost.len.saturating_add(add);
            if moves {
                cost.moved = cost.moved.saturating_add(2 * cost.len);
            }
        }
        Ok(cost)
    }
}

/// A sheet as our reader reads it through calamine's `XlsbCellsReader`: records up to
/// `BrtWsDim` and `BrtBeginSheetData` (skipping the blocks calamine skips), then every cell up
/// to `BrtEndSheetData`. A text cell's text comes from the whole buffer; a shared text is
/// copied into the row our reader keeps.
fn check_xlsb_sheet<R: std::io::Read>(
    part: &mut XlsbPart<'_, R>,
    shared: &[u64],
    budget: &mut XlsbBudget<'_>,
) -> Walk<()> {
    part.next_skip_blocks(0x0094, &[(0x0081, None), (0x0093, None)])?;
    need(part.buf.get(..16))?;
    part.next_skip_blocks(
        0x0091,
        &[
            (0x0085, Some(0x0086)),
            (0x0025, Some(0x0026)),
            (0x01E5, None),
            (0x0186, Some(0x0187)),
        ],
    )?;
    let (mut row, mut row_cells) = (0u64, 0u64);
    loop {
        let kind = part.read_type()?;
        part.fill_buffer()?;
        let buf = &part.buf;
        match kind {
            // BrtCellRk
            0x0002 => {
                need(buf.get(..12))?;
            }
            // BrtCellError
            0x0003 => {
                need(buf.get(8).filter(|code| {
                    matches!(code, 0x00 | 0x07 | 0x0F | 0x17 | 0x1D | 0x24 | 0x2A | 0x2B)
                }))?;
            }
            // BrtCellBool, BrtFmlaBool
            0x0004 | 0x000A => {
                need(buf.get(8))?;
            }
            // BrtCellReal, BrtFmlaNum
            0x0005 | 0x0009 => {
                need(buf.get(8..16))?;
            }
            // BrtCellSt, BrtFmlaString
            0x0006 | 0x0008 => {
                let (size, _) = need(buf.get(8..).and_then(wide_str_len))?;
                budget.add(size + STRING_HANDLE)?;
            }
            // BrtCellIsst
            0x0007 => {
                let index = need(u32_at(buf, 8))?;
                let size = usize::try_from(index).ok().and_then(|i| shared.get(i));
                budget.add(size.copied().unwrap_or(0))?;
            }
            // BrtRowHdr: calamine ends the sheet at a row past Excel's last.
            0x0000 => {
                let number = need(u32_at(buf, 0))?;
                if number > 0x0010_0000 {
                    return Ok(());
                }
                if number != row {
                    row = number;
                    row_cells = 0;
                }
                continue;
            }
            // BrtEndSheetData
            0x0092 => return Ok(()),
            _ => continue,
        }
        need(buf.get(..4))?;
        row_cells += 1;
        if row_cells > XLSB_MAX_ROW_CELLS {
            return Err(XlsbStop::Refused(damaged(
                "xlsb",
                format!(
                    "row {} of {} holds more than {XLSB_MAX_ROW_CELLS} cells",
                    row + 1,
                    part.name
                ),
            )));
        }
    }
}

/// calamine's caps on an `.ods` table (`MAX_ROWS`, `MAX_COLUMNS` in ods.rs): repeats past
/// them are cut, so they are cut here too.
const ODS_MAX_ROWS: u64 = 1_048_576;
const ODS_MAX_COLUMNS: u64 = 16_384;

/// `<text:s text:c="N"/>` is a run of N spaces, which calamine writes one by one (up to
/// 2,147,483,647 from a few bytes). No cell needs more than a cell holds: 32,767 characters
/// in Excel.
const ODS_MAX_SPACES: u64 = 32_767;

/// What calamine keeps of an `.ods` as `Ods::new` reads it: every table, each with its area
/// and the texts copied into it.
struct OdsWorkbook<'l> {
    limits: &'l Limits,
    /// Tables read so far.
    tables: u64,
    /// Cells of the areas of the tables read so far.
    cells: u64,
    /// Bytes of text in the cells so far, every copy counted.
    text: u64,
}

impl OdsWorkbook<'_> {
    /// calamine copies a text into every cell it repeats over, so the text of all cells,
    /// copies included, is held to the unpacked size a workbook may have.
    fn check_text(&self, more: u64) -> Result<(), FileError> {
        let size = self.text.saturating_add(more);
        if size > self.limits.max_unpacked_bytes {
            return Err(FileError::TooLargeUnpacked {
                size,
                max: self.limits.max_unpacked_bytes,
            });
        }
        Ok(())
    }
}

/// One table as calamine's `read_table` builds it (ods.rs).
struct OdsTable {
    name: String,
    /// Rows read so far, repeats included and capped as calamine caps them.
    rows: u64,
    first_used_row: Option<u64>,
    used_rows_end: u64,
    used_columns: u64,
    /// Cells calamine stores while reading rows, before repeats are expanded: it stores the
    /// empty cells before a cell with content, and those before any later cell, even an empty
    /// one, whatever the row holds.
    stored: u64,
    rows_storing: u64,
    widest: u64,
}

impl OdsTable {
    fn area(&self) -> (u64, u64) {
        match self.first_used_row {
            Some(first) => (self.used_rows_end.saturating_sub(first), self.used_columns),
            None => (0, 0),
        }
    }

    fn add_row(
        &mut self,
        rows: u64,
        row: &OdsRow,
        workbook: &mut OdsWorkbook<'_>,
    ) -> Result<(), FileError> {
        let max = workbook.limits.max_cells;
        if row.cells > 0 {
            self.stored = self.stored.saturating_add(row.cells);
            self.rows_storing += 1;
            self.widest = self.widest.max(row.cells);
            if self.stored > max {
                return Err(FileError::TooManyCells {
                    format: ".ods",
                    sheet: self.name.clone(),
                    rows: self.rows_storing,
                    columns: self.widest,
                    max,
                });
            }
        }
        if row.used > 0 {
            self.first_used_row.get_or_insert(self.rows);
            self.used_rows_end = self.rows.saturating_add(rows);
            self.used_columns = self.used_columns.max(row.used);
            // calamine copies the row once per repeat (and keeps the one it read).
            let text = row.text.saturating_mul(rows.max(1));
            workbook.check_text(text)?;
            workbook.text = workbook.text.saturating_add(text);
            // Refused as soon as the area is too big, not at the table's end.
            let (rows, columns) = self.area();
            let cells = rows.saturating_mul(columns);
            if cells > max {
                return Err(FileError::TooManyCells {
                    format: ".ods",
                    sheet: self.name.clone(),
                    rows,
                    columns,
                    max,
                });
            }
            let total = workbook.cells.saturating_add(cells);
            if total > max {
                return Err(FileError::TooManyCellsInWorkbook {
                    format: ".ods",
                    sheets: workbook.tables + 1,
                    cells: total,
                    max,
                });
            }
        }
        self.rows = self.rows.saturating_add(rows);
        Ok(())
    }
}

/// One row element as calamine's `read_row` stores it.
#[derive(Default)]
struct OdsRow {
    /// Cells stored (at most `ODS_MAX_COLUMNS`).
    cells: u64,
    /// Cells stored up to the last one with content: the row's width in the table's area.
    used: u64,
    /// Bytes of text in the stored cells.
    text: u64,
}

/// One cell as calamine's `get_datatype` reads it.
struct OdsCell {
    /// A value or a formula: calamine stores the cell (and its repeats).
    content: bool,
    /// Bytes of text in one copy of the cell (its text value and its formula).
    text: u64,
    /// calamine read the cell to its end.
    closed: bool,
}

fn ods_xml(e: quick_xml::Error) -> FileError {
    damaged("ods", format!("content.xml is not readable XML: {e}"))
}

/// A repeat count as calamine parses it. ODF counts are positive; calamine reads a row
/// repeated 0 times but stores its cells all the same, which no measure of rows follows, so
/// 0 is refused.
fn ods_repeats(value: &str, attribute: &str) -> Result<u64, FileError> {
    match value.parse::<u64>() {
        Ok(0) => Err(damaged(
            "ods",
            format!("{attribute}=\"0\": a repeat count must be at least 1"),
        )),
        Ok(count) => Ok(count),
        Err(_) => Err(damaged(
            "ods",
            format!("{attribute}=\"{}\" is not a count", excerpt(value)),
        )),
    }
}

/// Streams `content.xml` (already capped by the unpacked size) as calamine's `parse_content`
/// does and measures every table it would read: its area, the cells it stores on the way,
/// the text it copies. All tables stay in memory together, so their areas are summed too.
fn check_ods(archive: &mut ZipArchive<Cursor<&[u8]>>, limits: &Limits) -> Result<(), FileError> {
    let part = archive
        .by_name("content.xml")
        .map_err(|e| damaged("ods", e))?;
    let mut reader = calamine_xml(BufReader::new(part));
    let mut workbook = OdsWorkbook {
        limits,
        tables: 0,
        cells: 0,
        text: 0,
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf).map_err(ods_xml)? {
            // calamine reads a table only when it has a name.
            Event::Start(e) if e.name().as_ref() == "table:table" => {
                let name = raw_attribute(&e, "table:name")
                    .and_then(|name| name.map(decoded).transpose())
                    .map_err(|detail| damaged("ods", format!("a table: {detail}")))?;
                if let Some(name) = name {
                    check_ods_table(&mut reader, name, &mut workbook)?;
                }
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// calamine's `read_table`: every row element until the table's end, wherever it is.
fn check_ods_table<R: BufRead>(
    reader: &mut quick_xml::Reader<R>,
    name: String,
    workbook: &mut OdsWorkbook<'_>,
) -> Result<(), FileError> {
    let mut table = OdsTable {
        name,
        rows: 0,
        first_used_row: None,
        used_rows_end: 0,
        used_columns: 0,
        stored: 0,
        rows_storing: 0,
        widest: 0,
    };
    let (mut buf, mut row_buf, mut cell_buf) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf).map_err(ods_xml)? {
            Event::Start(e) if e.name().as_ref() == "table:table-row" => {
                let repeats = match raw_attribute(&e, "table:number-rows-repeated")
                    .and_then(|v| v.map(decoded).transpose())
                    .map_err(|detail| damaged("ods", format!("a row: {detail}")))?
                {
                    Some(value) => ods_repeats(&value, "table:number-rows-repeated")?,
                    None => 1,
                };
                // Past calamine's row cap the row is still read, but adds no rows.
                let rows = repeats.min(ODS_MAX_ROWS.saturating_sub(table.rows));
                let row =
                    check_ods_row(reader, &mut row_buf, &mut cell_buf, &table.name, workbook)?;
                table.add_row(rows, &row, workbook)?;
            }
            Event::End(e) if e.name().as_ref() == "table:table" => break,
            // calamine waits for the table's end past the end of the part: it never returns.
            Event::Eof => {
                return Err(damaged(
                    "ods",
                    format!(
                        "table \"{}\" does not end: the file was cut short",
                        table.name
                    ),
                ))
            }
            _ => {}
        }
    }
    let (rows, columns) = table.area();
    workbook.cells = workbook.cells.saturating_add(rows.saturating_mul(columns));
    workbook.tables += 1;
    Ok(())
}

/// calamine's `read_row`: the cells of one row element, the empty ones stored only when a
/// later cell follows them.
fn check_ods_row<R: BufRead>(
    reader: &mut quick_xml::Reader<R>,
    row_buf: &mut Vec<u8>,
    cell_buf: &mut Vec<u8>,
    table: &str,
    workbook: &OdsWorkbook<'_>,
) -> Result<OdsRow, FileError> {
    let mut row = OdsRow::default();
    let mut pending_empty = 0u64;
    loop {
        row_buf.clear();
        match reader.read_event_into(row_buf).map_err(ods_xml)? {
            Event::Start(e)
                if matches!(
                    e.name().as_ref(),
                    "table:table-cell" | "table:covered-table-cell"
                ) =>
            {
                // calamine parses this count raw, without decoding entities.
                let repeats = match raw_attribute(&e, "table:number-columns-repeated")
                    .map_err(|detail| damaged("ods", format!("a cell: {detail}")))?
                {
                    Some(value) => ods_repeats(value, "table:number-columns-repeated")?,
                    None => 1,
                };
                let cell = check_ods_cell(reader, &e, cell_buf, table, workbook, row.text)?;
                let empties = pending_empty.min(ODS_MAX_COLUMNS.saturating_sub(row.cells));
                row.cells += empties;
                pending_empty = 0;
                let copies = repeats.min(ODS_MAX_COLUMNS.saturating_sub(row.cells));
                if cell.content {
                    row.cells += copies;
                    row.used = row.cells;
                    row.text = row.text.saturating_add(cell.text.saturating_mul(copies));
                    workbook.check_text(row.text)?;
                } else {
                    pending_empty = copies;
                }
                if !cell.closed {
                    let name = e.name().as_ref().to_owned();
                    reader
                        .read_to_end_into(QName(&name), cell_buf)
                        .map_err(ods_xml)?;
                }
            }
            Event::End(e) if e.name().as_ref() == "table:table-row" => return Ok(row),
            // calamine refuses anything else inside a row (even the spaces of indented XML).
            other => {
                let found = match &other {
                    Event::Start(e) => format!("<{}>", excerpt(e.name().as_ref())),
                    Event::End(e) => format!("</{}>", excerpt(e.name().as_ref())),
                    Event::Eof => "the end of the file".to_owned(),
                    Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => "text".to_owned(),
                    _ => "markup".to_owned(),
                };
                return Err(damaged(
                    "ods",
                    format!("a row of table \"{table}\" holds {found} where a cell belongs"),
                ));
            }
        }
    }
}

/// What a cell's value is, as far as its cost goes.
enum OdsValue {
    /// A text kept as it is written: `office:string-value` (`string`), a date or a time.
    Text { bytes: u64, string: bool },
    /// A number or a truth value.
    Other,
}

/// calamine's `get_datatype`: the cell's attributes, then, for a text cell without
/// `office:string-value`, its content up to the cell's end.
fn check_ods_cell<R: BufRead>(
    reader: &mut quick_xml::Reader<R>,
    cell: &BytesStart<'_>,
    buf: &mut Vec<u8>,
    table: &str,
    workbook: &OdsWorkbook<'_>,
    row_text: u64,
) -> Result<OdsCell, FileError> {
    let mut is_string = false;
    let mut is_error = false;
    let mut value = None;
    let mut formula = 0u64;
    for item in raw_attributes(cell.attributes_raw()) {
        let (key, raw) = item.map_err(|detail| damaged("ods", format!("a cell: {detail}")))?;
        // Decoding entities never lengthens a value, so its raw length bounds the text.
        let bytes = raw.len() as u64;
        match key {
            "office:value" | "office:boolean-value" if value.is_none() => {
                value = Some(OdsValue::Other);
            }
            "office:string-value" if value.is_none() => {
                value = Some(OdsValue::Text {
                    bytes,
                    string: true,
                });
            }
            "office:date-value" | "office:time-value" if value.is_none() => {
                value = Some(OdsValue::Text {
                    bytes,
                    string: false,
                });
            }
            "office:value-type" if value.is_none() => is_string = raw == "string",
            "calcext:value-type" => is_error = raw == "error",
            "table:formula" => formula = bytes,
            _ => {}
        }
    }
    let reads_content = (value.is_none() && is_string)
        || (is_error
            && matches!(
                value,
                Some(OdsValue::Text {
                    bytes: 0,
                    string: true
                })
            ));
    if !reads_content {
        let text = match value {
            Some(OdsValue::Text { bytes, .. }) => bytes,
            _ => 0,
        };
        return Ok(OdsCell {
            content: value.is_some() || formula > 0,
            text: text.saturating_add(formula),
            closed: false,
        });
    }
    let cut_short = || {
        damaged(
            "ods",
            format!("a cell of table \"{table}\" does not end: the file was cut short"),
        )
    };
    let mut text = formula;
    let mut first_paragraph = true;
    loop {
        buf.clear();
        match reader.read_event_into(buf).map_err(ods_xml)? {
            Event::Text(t) => text = text.saturating_add(t.len() as u64),
            // One character, four bytes at most.
            Event::GeneralRef(_) => text = text.saturating_add(4),
            Event::End(e)
                if matches!(
                    e.name().as_ref(),
                    "table:table-cell" | "table:covered-table-cell"
                ) =>
            {
                return Ok(OdsCell {
                    content: true,
                    text,
                    closed: true,
                });
            }
            // calamine skips a comment up to its end and, past the end of the part, waits for
            // that end forever.
            Event::Start(e) if e.name().as_ref() == "office:annotation" => loop {
                buf.clear();
                match reader.read_event_into(buf).map_err(ods_xml)? {
                    Event::End(e) if e.name().as_ref() == "office:annotation" => break,
                    Event::Eof => return Err(cut_short()),
                    _ => {}
                }
            },
            Event::Start(e) if e.name().as_ref() == "text:p" => {
                if !first_paragraph {
                    text = text.saturating_add(1);
                }
                first_paragraph = false;
            }
            Event::Start(e) if e.name().as_ref() == "text:s" => {
                let spaces = match raw_attribute(&e, "text:c")
                    .and_then(|v| v.map(decoded).transpose())
                    .map_err(|detail| damaged("ods", format!("a run of spaces: {detail}")))?
                {
                    // calamine's count is an i32; a negative one writes nothing.
                    Some(count) => count
                        .parse::<i32>()
                        .map(|n| u64::try_from(n).unwrap_or(0))
                        .map_err(|_| {
                            damaged(
                                "ods",
                                format!("text:c=\"{}\" is not a count", excerpt(&count)),
                            )
                        })?,
                    None => 1,
                };
                if spaces > ODS_MAX_SPACES {
                    return Err(damaged(
                        "ods",
                        format!(
                            "a cell of table \"{table}\" holds a run of {spaces} spaces, more than a cell holds ({ODS_MAX_SPACES} characters)"
                        ),
                    ));
                }
                text = text.saturating_add(spaces);
            }
            Event::Start(e) if matches!(e.name().as_ref(), "text:tab" | "text:line-break") => {
                text = text.saturating_add(1);
            }
            Event::Eof => return Err(cut_short()),
            _ => {}
        }
        // A single cell may build a huge text from many runs: checked as it grows.
        workbook.check_text(row_text.saturating_add(text))?;
    }
}

/// Compound files: an encrypted OOXML package, or an `.xls` whose sheets are measured. Excel
/// saves a password-protected `.xlsx` as a compound file, so one named `.xlsx`/`.xlsm`/`.xlsb`
/// that is not a readable `.xls` is taken to be that.
fn inspect_cfb(bytes: &[u8], named: Format, limits: &Limits) -> Result<(), FileError> {
    let ooxml_name = matches!(named, Format::Xlsx | Format::Xlsm | Format::Xlsb);
    let file = match cfb::CompoundFile::open(Cursor::new(bytes)) {
        Ok(file) => file,
        Err(_) if ooxml_name => return Err(FileError::PasswordProtected),
        Err(e) => return Err(damaged("xls", e)),
    };
    if file.is_stream("/EncryptedPackage") || file.is_stream("/EncryptionInfo") {
        return Err(FileError::PasswordProtected);
    }
    if !["/Workbook", "/Book", "/WORKBOOK", "/BOOK"]
        .into_iter()
        .any(|p| file.is_stream(p))
    {
        if ooxml_name {
            return Err(FileError::PasswordProtected);
        }
        return Err(FileError::NotSpreadsheet {
            what: "an Office document without a workbook in it (a Word or PowerPoint file?)"
                .to_owned(),
        });
    }
    // The `cfb` crate only classified the file; the bytes measured are the ones calamine
    // will parse, read as calamine reads them.
    let workbook = calamine_workbook_stream(bytes)?;
    check_biff(&workbook, limits)
}

// Compound-file sector markers, as calamine names them (cfb.rs).
const RESERVED_SECTORS: u32 = 0xFFFF_FFFA;
const DIFSECT: u32 = 0xFFFF_FFFC;
const ENDOFCHAIN: u32 = 0xFFFF_FFFE;

/// The file as calamine's compound-file reader consumes it: from the end of the header,
/// front to back, never seeking; its sector caches and its mini stream all draw from this one
/// position.
struct Tail<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Tail<'_> {
    fn read(&mut self, out: &mut [u8]) -> usize {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let n = out.len().min(rest.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        n
    }
}

/// calamine's `Sectors` (cfb.rs): a cache of sectors grown on demand.
struct Sectors {
    data: Vec<u8>,
    size: usize,
    max_id: u64,
}

fn cfb_damaged(detail: impl std::fmt::Display) -> FileError {
    damaged("xls", format!("the compound file {detail}"))
}

impl Sectors {
    fn get(&mut self, id: u32, tail: &mut Tail<'_>) -> Result<&[u8], FileError> {
        if u64::from(id) > self.max_id {
            return Err(cfb_damaged(format_args!(
                "points to sector {id}, past its end"
            )));
        }
        let start = id as usize * self.size;
        let end = start + self.size;
        if end > self.data.len() {
            let mut filled = self.data.len();
            self.data.resize(end, 0);
            while filled < end {
                let read = tail.read(&mut self.data[filled..end]);
                if read == 0 {
                    // calamine returns the part read, and panics when that ends before the
                    // sector starts.
                    if filled < start {
                        return Err(cfb_damaged(format_args!("is cut short in sector {id}")));
                    }
                    return Ok(&self.data[start..filled]);
                }
                filled += read;
            }
        }
        Ok(&self.data[start..end])
    }

    /// calamine's `get_chain`: sectors linked by `fats` from `id` until the end of the chain
    /// or `len` bytes. calamine has no loop detection and takes `len` from the file (the
    /// directory's is unlimited), so a chain longer than the file, which must loop, is
    /// refused here.
    fn chain(
        &mut self,
        mut id: u32,
        fats: &[u32],
        tail: &mut Tail<'_>,
        len: u64,
    ) -> Result<Vec<u8>, FileError> {
        let file_len = tail.bytes.len();
        let mut chain = Vec::new();
        while id != ENDOFCHAIN {
            let sector = self.get(id, tail)?;
            let remaining = len.saturating_sub(chain.len() as u64);
            let take = usize::try_from(remaining).map_or(sector.len(), |r| r.min(sector.len()));
            chain.extend_from_slice(&sector[..take]);
            if chain.len() as u64 >= len {
                break;
            }
            if chain.len() > file_len {
                return Err(cfb_damaged("has a chain of sectors that loops"));
            }
            // calamine panics on a link outside its table.
            id = *fats
                .get(id as usize)
                .ok_or_else(|| cfb_damaged(format_args!("has no link for sector {id}")))?;
        }
        Ok(chain)
    }
}

/// Little-endian words of a sector, as calamine's `to_u32` (which panics on a partial word).
fn words(bytes: &[u8]) -> Result<impl Iterator<Item = u32> + '_, FileError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(cfb_damaged("ends inside a sector table"));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
}

/// A directory entry's name as calamine decodes it: encoding_rs's UTF-16LE decoding, which
/// sniffs a byte-order mark (so `FE FF` starts a big-endian name and `EF BB BF` a UTF-8 one),
/// cut at the first NUL.
fn entry_name(raw: &[u8]) -> String {
    fn utf16(bytes: &[u8], big_endian: bool) -> String {
        let units = bytes.chunks(2).map(|pair| match pair {
            [a, b] if big_endian => u16::from_be_bytes([*a, *b]),
            [a, b] => u16::from_le_bytes([*a, *b]),
            // A lone last byte: a replacement character.
            _ => 0xFFFD,
        });
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }
    let mut name = if let Some(rest) = raw.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        String::from_utf8_lossy(rest).into_owned()
    } else if let Some(rest) = raw.strip_prefix(&[0xFF, 0xFE]) {
        utf16(rest, false)
    } else if let Some(rest) = raw.strip_prefix(&[0xFE, 0xFF]) {
        utf16(rest, true)
    } else {
        utf16(raw, false)
    };
    if let Some(nul) = name.find('\0') {
        name.truncate(nul);
    }
    name
}

struct DirectoryEntry {
    name: String,
    start: u32,
    len: u64,
}

/// The workbook stream exactly as calamine 0.38 reads it (`Cfb::new` and `get_stream` in
/// cfb.rs, `parse_workbook` in xls.rs), with bounds where calamine has none:
/// - the stream is the first directory entry named `Workbook`, else `Book` (ASCII case
///   ignored), in directory order: at any depth, of any type, even one no storage links to;
/// - every size it trusts (each directory entry's, the root entry's mini stream, the header's
///   sector counts) must fit in the file; chains that would outgrow the file are refused.
///
/// A `Workbook` entry calamine fails to read makes it fall back to `Book`; such a file is
/// refused here instead.
fn calamine_workbook_stream(bytes: &[u8]) -> Result<Vec<u8>, FileError> {
    let file_len = bytes.len();
    let header = bytes
        .get(..512)
        .ok_or_else(|| cfb_damaged("is shorter than its header"))?;
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let version = u16::from_le_bytes([header[26], header[27]]);
    let (size, header_len) = match u16::from_le_bytes([header[30], header[31]]) {
        9 => (512usize, 512usize),
        12 => (4096, 4096),
        shift => return Err(cfb_damaged(format_args!("has a sector shift of {shift}"))),
    };
    if file_len < header_len {
        return Err(cfb_damaged("is shorter than its header"));
    }
    let mini_shift = u16::from_le_bytes([header[32], header[33]]);
    if mini_shift != 6 {
        return Err(cfb_damaged(format_args!(
            "has a mini sector shift of {mini_shift}"
        )));
    }
    let dir_start = word(48);
    let mini_fat_start = word(60);
    let mini_fat_len = word(64);
    let difat_start = word(68);
    // Sector counts calamine trusts (the mini FAT's sizes a chain) or that no file of this
    // size can hold.
    for (what, count) in [
        ("allocation", word(44)),
        ("mini allocation", mini_fat_len),
        ("DIFAT", word(72)),
    ] {
        if u64::from(count) * size as u64 > file_len as u64 {
            return Err(cfb_damaged(format_args!(
                "declares {count} {what} sectors of {size} bytes, more than its {file_len} bytes hold"
            )));
        }
    }
    let max_id = (file_len / size) as u64;
    let mut tail = Tail {
        bytes,
        at: header_len,
    };
    let mut sectors = Sectors {
        data: Vec::new(),
        size,
        max_id,
    };

    // The DIFAT: the header's 109 entries, then a chain whose last word links on.
    let mut difat: Vec<u32> = words(&header[76..512])?.collect();
    let mut id = difat_start;
    let mut hops = 0u64;
    while id < RESERVED_SECTORS {
        hops += 1;
        if hops > max_id + 1 {
            return Err(cfb_damaged("has a DIFAT chain longer than the file"));
        }
        let sector = sectors.get(id, &mut tail)?;
        difat.extend(words(sector)?);
        id = difat
            .pop()
            .ok_or_else(|| cfb_damaged("has an empty DIFAT sector"))?;
    }
    // calamine loads every sector the DIFAT lists, ignoring the header's count; a DIFAT that
    // lists the same sectors over and over would make the table 127 times the file's size.
    let listed: Vec<u32> = difat.into_iter().filter(|id| *id < DIFSECT).collect();
    if listed.len() as u64 > max_id + 1 + 109 {
        return Err(cfb_damaged(format_args!(
            "lists {} allocation sectors, more than it holds",
            listed.len()
        )));
    }
    let mut fats = Vec::new();
    for id in listed {
        let sector = sectors.get(id, &mut tail)?;
        fats.extend(words(sector)?);
    }

    let directory = sectors.chain(dir_start, &fats, &mut tail, u64::MAX)?;
    let entries: Vec<DirectoryEntry> = directory
        .chunks_exact(128)
        .map(|entry| DirectoryEntry {
            name: entry_name(&entry[..64]),
            start: u32::from_le_bytes([entry[116], entry[117], entry[118], entry[119]]),
            len: if size == 512 {
                u64::from(u32::from_le_bytes([
                    entry[120], entry[121], entry[122], entry[123],
                ]))
            } else {
                let mut len = [0u8; 8];
                len.copy_from_slice(&entry[120..128]);
                u64::from_le_bytes(len)
            },
        })
        .collect();
    let Some(root) = entries.first() else {
        return Err(cfb_damaged("has an empty directory"));
    };
    if version != 3 && root.start == ENDOFCHAIN {
        return Err(cfb_damaged("has an empty root entry"));
    }
    // A stream cannot be longer than the file holding it; calamine would follow a looping
    // chain up to the declared size.
    if let Some(entry) = entries.iter().find(|e| e.len > file_len as u64) {
        return Err(cfb_damaged(format_args!(
            "says its part \"{}\" holds {} bytes, more than the whole file ({file_len} bytes)",
            entry.name, entry.len
        )));
    }

    let (mini_fats, mini_stream) = if mini_fat_len > 0 {
        let mini_stream = sectors.chain(root.start, &fats, &mut tail, root.len)?;
        let mini_fat = sectors.chain(
            mini_fat_start,
            &fats,
            &mut tail,
            u64::from(mini_fat_len) * size as u64,
        )?;
        let mini_fats: Vec<u32> = words(&mini_fat)?.collect();
        (mini_fats, mini_stream)
    } else {
        (Vec::new(), Vec::new())
    };
    let mut mini_sectors = Sectors {
        data: mini_stream,
        size: 64,
        max_id: max_id * 8,
    };

    let named = |wanted: &str| {
        entries
            .iter()
            .find(|e| e.name.as_bytes().eq_ignore_ascii_case(wanted.as_bytes()))
    };
    let Some(workbook) = named("Workbook").or_else(|| named("Book")) else {
        return Err(cfb_damaged("has no part named Workbook or Book"));
    };
    if workbook.len < 4096 {
        mini_sectors.chain(workbook.start, &mini_fats, &mut tail, workbook.len)
    } else {
        sectors.chain(workbook.start, &fats, &mut tail, workbook.len)
    }
}

/// One BIFF record as calamine's `RecordIter` yields it (xls.rs): the CONTINUE records
/// (0x003C) right after it belong to it.
struct Record<'a> {
    kind: u16,
    data: &'a [u8],
    continued: Vec<&'a [u8]>,
}

impl Record<'_> {
    fn continued_len(&self) -> usize {
        self.continued.iter().map(|part| part.len()).sum()
    }
}

/// calamine stops at a record cut short (with an error); so does this walk.
fn records(stream: &[u8]) -> impl Iterator<Item = Record<'_>> {
    let mut rest = stream;
    let kind_at = |bytes: &[u8]| bytes.get(..2).map(|k| u16::from_le_bytes([k[0], k[1]]));
    let len_at = |bytes: &[u8]| {
        bytes
            .get(2..4)
            .map(|l| usize::from(u16::from_le_bytes([l[0], l[1]])))
    };
    std::iter::from_fn(move || {
        let kind = kind_at(rest)?;
        let len = len_at(rest)?;
        let data = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        let mut continued = Vec::new();
        while rest.len() > 4 && kind_at(rest) == Some(0x003C) {
            let len = len_at(rest)?;
            continued.push(rest.get(4..4 + len)?);
            rest = &rest[4 + len..];
        }
        Some(Record {
            kind,
            data,
            continued,
        })
    })
}

/// An upper bound of the UTF-8 bytes calamine makes of `bytes` of text: an ASCII byte stays
/// one byte, any other may become a character of up to three. (A compressed text decoded
/// with a code page other than UTF-16 also gains a NUL per character; Excel writes UTF-16.)
fn utf8_bound(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| if b < 0x80 { 1 } else { 3 }).sum()
}

/// A reader over a record's data and then its CONTINUE records, as calamine's `Record`
/// (`continue_record`, `skip`) moves through them.
struct Continued<'a> {
    data: &'a [u8],
    rest: std::vec::IntoIter<&'a [u8]>,
}

impl<'a> Continued<'a> {
    fn next_part(&mut self) -> bool {
        match self.rest.next() {
            Some(part) => {
                self.data = part;
                true
            }
            None => false,
        }
    }

    fn skip(&mut self, mut len: usize) -> Option<()> {
        while len > 0 {
            if self.data.is_empty() && !self.next_part() {
                return None;
            }
            let n = len.min(self.data.len());
            self.data = &self.data[n..];
            len -= n;
        }
        Some(())
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.data.get(..n)?;
        self.data = &self.data[n..];
        Some(taken)
    }
}

/// The size of every text of the shared string table (SST, 0x00FC), walked as calamine's
/// `parse_sst` / `read_rich_extended_string` / `read_dbcs` walk it, texts spanning CONTINUE
/// records included. Where calamine would stop with an error (or panic), the walk stops too:
/// calamine then keeps nothing.
fn sst_text_sizes(record: Record<'_>) -> Vec<u64> {
    let mut sizes = Vec::new();
    let Some(data) = record.data.get(8..) else {
        return sizes;
    };
    let mut r = Continued {
        data,
        rest: record.continued.into_iter(),
    };
    while !r.data.is_empty() || r.next_part() {
        let Some(size) = sst_text_size(&mut r) else {
            break;
        };
        sizes.push(size);
    }
    sizes
}

fn sst_text_size(r: &mut Continued<'_>) -> Option<u64> {
    if r.data.is_empty() {
        return Some(0);
    }
    let head = r.take(3)?;
    let mut chars = usize::from(u16::from_le_bytes([head[0], head[1]]));
    let flags = head[2];
    let mut high_byte = flags & 0x1 != 0;
    let mut runs = 0usize;
    if flags & 0x8 != 0 {
        let c = r.take(2)?;
        runs = usize::from(u16::from_le_bytes([c[0], c[1]]));
    }
    let mut ext = 0usize;
    if flags & 0x4 != 0 {
        let c = r.take(4)?;
        ext = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
    }
    let mut size = 0u64;
    while chars > 0 {
        let (n, bytes) = if high_byte {
            let n = (r.data.len() / 2).min(chars);
            (n, 2 * n)
        } else {
            let n = r.data.len().min(chars);
            (n, n)
        };
        size = size.saturating_add(utf8_bound(r.take(bytes)?));
        chars -= n;
        if chars > 0 {
            if !r.next_part() {
                return None;
            }
            high_byte = r.take(1)?[0] & 0x1 != 0;
        }
    }
    r.skip(runs * 4)?;
    r.skip(ext)?;
    Some(size)
}

/// What calamine's `Xls::new` keeps: every sheet's dense cell range (all sheets at once) and
/// the texts in it.
struct XlsWorkbook<'l> {
    limits: &'l Limits,
    /// Sizes of the shared string table's texts.
    shared: Vec<u64>,
    sheets: u64,
    cells: u64,
    text: u64,
}

impl XlsWorkbook<'_> {
    /// A text calamine builds: held, copies included, to the unpacked size a workbook may
    /// have.
    fn add_text(&mut self, bytes: u64) -> Result<(), FileError> {
        self.text = self.text.saturating_add(bytes);
        if self.text > self.limits.max_unpacked_bytes {
            return Err(FileError::TooLargeUnpacked {
                size: self.text,
                max: self.limits.max_unpacked_bytes,
            });
        }
        Ok(())
    }
}

/// Walks the workbook globals for the sheets' offsets and the shared texts (as calamine
/// does), then each sheet's records for its declared dimensions, the area its cells span and
/// the texts they hold.
pub fn check_biff(stream: &[u8], limits: &Limits) -> Result<(), FileError> {
    let mut sheets = Vec::new();
    let mut shared = Vec::new();
    for record in records(stream) {
        match record.kind {
            // FilePass: the workbook is encrypted.
            0x002F if u16_at(record.data, 0).unwrap_or(0) != 0 => {
                return Err(FileError::PasswordProtected)
            }
            // BoundSheet8: where a sheet's records start. Several may point to one sheet;
            // calamine then reads it once for each.
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
            // SST: the last one counts, as in calamine.
            0x00FC => shared = sst_text_sizes(record),
            0x000A => break,
            _ => {}
        }
    }
    let mut workbook = XlsWorkbook {
        limits,
        shared,
        sheets: sheets.len() as u64,
        cells: 0,
        text: 0,
    };
    for (offset, name) in sheets {
        let Some(sheet) = stream.get(offset..) else {
            continue;
        };
        check_biff_sheet(sheet, &name, &mut workbook)?;
    }
    Ok(())
}

/// A text cell's declared length (`cch`) must be backed by the bytes after it: calamine
/// reserves that many bytes for each such cell and keeps the reservation in the sheet (up to
/// 64 KiB from a 14-byte record). `text_at` is where the characters may start (the BIFF5
/// offset; BIFF8 has a flags byte more), so the rule is lenient by a byte, and the CONTINUE
/// records after the record count, though calamine does not read them.
fn check_text_length(
    record: &Record<'_>,
    cch_at: usize,
    text_at: usize,
    sheet: &str,
    workbook: &mut XlsWorkbook<'_>,
) -> Result<(), FileError> {
    let Some(cch) = u16_at(record.data, cch_at) else {
        return Ok(());
    };
    let text = record.data.get(text_at..).unwrap_or_default();
    let present = (text.len() + record.continued_len()) as u64;
    if cch > present {
        return Err(damaged(
            "xls",
            format!(
                "a text in sheet \"{sheet}\" claims {cch} characters but only {present} bytes follow"
            ),
        ));
    }
    workbook.add_text(cch.max(utf8_bound(text)))
}

fn check_biff_sheet(
    sheet: &[u8],
    name: &str,
    workbook: &mut XlsWorkbook<'_>,
) -> Result<(), FileError> {
    let max = workbook.limits.max_cells;
    let too_big = |rows: u64, columns: u64| FileError::TooManyCells {
        format: ".xls",
        sheet: name.to_owned(),
        rows,
        columns,
        max,
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
    // Where calamine puts the value of a String record: the last Formula's cell, A1 before
    // any Formula.
    let mut formula_at = (0u64, 0u64);
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
                    if rows.saturating_mul(columns) > max {
                        return Err(too_big(rows, columns));
                    }
                }
            }
            // Number, BoolErr, Rk: row, column first.
            0x0203 | 0x0205 | 0x027E => {
                if let (Some(row), Some(col)) = (u16_at(data, 0), u16_at(data, 2)) {
                    extend(row, col, col);
                }
            }
            // Label, RString: row, column, format, then the text with its length at 6.
            0x0204 | 0x00D6 => {
                if let (Some(row), Some(col)) = (u16_at(data, 0), u16_at(data, 2)) {
                    extend(row, col, col);
                }
                check_text_length(&record, 6, 8, name, workbook)?;
            }
            // String: a formula's text value, its length at 0.
            0x0207 => {
                extend(formula_at.0, formula_at.1, formula_at.1);
                check_text_length(&record, 0, 2, name, workbook)?;
            }
            // LabelSst: a copy of a shared text per cell.
            0x00FD => {
                if let (Some(row), Some(col)) = (u16_at(data, 0), u16_at(data, 2)) {
                    extend(row, col, col);
                }
                let shared = u32_at(data, 6)
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| workbook.shared.get(i).copied());
                if let Some(size) = shared {
                    workbook.add_text(size)?;
                }
            }
            // Formula: a cell, and where a String record after it goes.
            0x0006 => {
                if let (Some(row), Some(col)) = (u16_at(data, 0), u16_at(data, 2)) {
                    formula_at = (row, col);
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
        let cells = rows.saturating_mul(columns);
        if cells > max {
            return Err(too_big(rows, columns));
        }
        // calamine keeps every sheet's range at once.
        workbook.cells = workbook.cells.saturating_add(cells);
        if workbook.cells > max {
            return Err(FileError::TooManyCellsInWorkbook {
                format: ".xls",
                sheets: workbook.sheets,
                cells: workbook.cells,
                max,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn cfb_crate_stream(bytes: &[u8], path: &str) -> Vec<u8> {
        let mut file = cfb::CompoundFile::open(Cursor::new(bytes)).unwrap();
        let mut data = Vec::new();
        file.open_stream(path)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        data
    }

    fn made_by_cfb_crate(version: cfb::Version, workbook: &[u8]) -> Vec<u8> {
        let mut file =
            cfb::CompoundFile::create_with_version(version, Cursor::new(Vec::new())).unwrap();
        file.create_stream("/Other")
            .unwrap()
            .write_all(&[7; 300])
            .unwrap();
        file.create_stream("/Workbook")
            .unwrap()
            .write_all(workbook)
            .unwrap();
        file.flush().unwrap();
        file.into_inner().into_inner()
    }

    #[test]
    fn the_workbook_stream_is_read_as_calamine_reads_it() {
        // Files saved by an office suite, and files with the stream in the mini stream (under
        // 4,096 bytes) or in sectors, with either sector size: the same bytes as the cfb crate.
        for bytes in [
            include_bytes!("fixtures/students.xls").as_slice(),
            include_bytes!("fixtures/template.xls").as_slice(),
        ] {
            assert_eq!(
                calamine_workbook_stream(bytes).unwrap(),
                cfb_crate_stream(bytes, "/Workbook")
            );
        }
        // calamine's own outcome decides: it caps mini sectors at 8 per sector of the file,
        // too few with 4,096-byte sectors, and then cannot find the workbook.
        for version in [cfb::Version::V3, cfb::Version::V4] {
            for len in [100usize, 1_000, 4_095, 4_096, 70_000] {
                let workbook: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let bytes = made_by_cfb_crate(version, &workbook);
                let calamine =
                    <calamine::Xls<_> as calamine::Reader<_>>::new(Cursor::new(bytes.as_slice()))
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                let port = calamine_workbook_stream(&bytes);
                if calamine.starts_with("Cfb error") {
                    assert!(port.is_err(), "{version:?}, {len} bytes: {calamine}");
                } else {
                    assert_eq!(port.ok(), Some(workbook), "{version:?}, {len} bytes");
                }
            }
        }
    }

    #[test]
    fn attributes_are_scanned_as_calamine_scans_them() {
        let scan = |raw: &'static str| raw_attributes(raw).collect::<Vec<_>>();
        assert_eq!(
            scan(r#" a="1"  b = '2' a="3""#),
            [Ok(("a", "1")), Ok(("b", "2")), Ok(("a", "3"))]
        );
        // A key is everything up to `=`.
        assert_eq!(scan(r#" x a="1""#), [Ok(("x a", "1"))]);
        assert!(matches!(scan(r#" a=1 b="2""#)[..], [Err(_)]));
        assert!(matches!(scan(" a")[..], [Err(_)]));
        assert_eq!(declared_count("0005000000"), Some(5_000_000));
        assert_eq!(declared_count("99999999999999999999999"), Some(u64::MAX));
        assert_eq!(declared_count("5e6"), None);
        assert_eq!(declared_count(""), None);
    }

    #[test]
    fn entry_names_are_decoded_as_calamine_decodes_them() {
        let padded = |mut raw: Vec<u8>| {
            raw.resize(64, 0);
            raw
        };
        let utf16le = |s: &str| padded(s.encode_utf16().flat_map(u16::to_le_bytes).collect());
        assert_eq!(entry_name(&utf16le("Workbook")), "Workbook");
        assert_eq!(entry_name(&utf16le("\u{FEFF}Workbook")), "Workbook");
        let mut big_endian = vec![0xFE, 0xFF];
        big_endian.extend("Book".encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(entry_name(&padded(big_endian)), "Book");
        let mut utf8 = vec![0xEF, 0xBB, 0xBF];
        utf8.extend_from_slice(b"Workbook");
        assert_eq!(entry_name(&padded(utf8)), "Workbook");
    }

    fn word_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn a_directory_chain_that_loops_is_refused() {
        // calamine reads the directory chain with no size limit: a sector linking to itself
        // would grow it until memory runs out.
        let mut bytes = made_by_cfb_crate(cfb::Version::V3, &[1; 100]);
        let directory = word_at(&bytes, 0x30) as usize;
        let fat = word_at(&bytes, 0x4C) as usize;
        let link = (fat + 1) * 512 + directory * 4;
        bytes[link..link + 4].copy_from_slice(&(directory as u32).to_le_bytes());
        assert_eq!(
            calamine_workbook_stream(&bytes).map(|_| ()),
            Err(cfb_damaged("has a chain of sectors that loops"))
        );
    }

    #[test]
    fn a_difat_listing_sectors_over_and_over_is_refused() {
        // Three DIFAT sectors appended, chained, each listing the FAT sector 127 times:
        // calamine would load the FAT 382 times.
        let mut bytes = made_by_cfb_crate(cfb::Version::V3, &[1; 100]);
        let fat = word_at(&bytes, 0x4C);
        let first = (bytes.len() / 512 - 1) as u32;
        for k in 0..3u32 {
            for _ in 0..127 {
                bytes.extend_from_slice(&fat.to_le_bytes());
            }
            let next = if k < 2 { first + k + 1 } else { ENDOFCHAIN };
            bytes.extend_from_slice(&next.to_le_bytes());
        }
        bytes[0x44..0x48].copy_from_slice(&first.to_le_bytes());
        bytes[0x48..0x4C].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            calamine_workbook_stream(&bytes).map(|_| ()),
            Err(cfb_damaged(
                "lists 382 allocation sectors, more than it holds"
            ))
        );
    }
}
