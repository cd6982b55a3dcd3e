//! Rows to typed records ("parse, don't validate"): a `StudentRecord` cannot hold a 9-digit
//! phone, a 5-digit pincode or a 101-character name, and every rejection names its row, its
//! column and a reason a person can act on.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use uuid::Uuid;

use super::cells::{clean, parse_date_text, quote, Cell};
use super::headers::{Column, Field, HeaderMap};
use crate::kind::Kind;

/// Youngest age a student may have on the day of the import (the app's rule).
pub const MIN_AGE_YEARS: i32 = 15;
/// Earliest date of birth: the app's first-login reset (`Student.isValidDateOfBirth`) refuses
/// earlier dates, so a student born before it could never activate an imported account.
pub const EARLIEST_BIRTH_DATE: NaiveDate = match NaiveDate::from_ymd_opt(1990, 1, 1) {
    Some(date) => date,
    None => panic!("1990-01-01 is a date"),
};
/// Batch (graduation year) bounds, as the database's check constraint has them.
pub const BATCH_YEARS: std::ops::RangeInclusive<i32> = 2000..=2035;

/// Longest value of each field, in characters, as the app's columns allow (`varchar(n)`).
pub fn max_chars(field: Field) -> Option<usize> {
    match field {
        Field::RegistrationNo => Some(50),
        Field::Email => Some(100),
        Field::FullName => Some(100),
        Field::ProgramName => Some(100),
        Field::StallNumber => Some(20),
        Field::StallName => Some(200),
        Field::Location => Some(100),
        Field::School
        | Field::DateOfBirth
        | Field::Pincode
        | Field::Phone
        | Field::Address
        | Field::Batch
        | Field::Description
        | Field::Event => None,
    }
}

/// Why one value of one row was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// The sheet's own row number, 1-based, as the spreadsheet program shows it (for CSV, the
    /// line on which the record starts).
    pub row: u32,
    /// The column's header as the sheet spells it (the field's name when the sheet has no such
    /// column).
    pub column: Arc<str>,
    pub field: Field,
    pub reason: Cow<'static, str>,
}

/// An optional field's value in one row. What an update does with the stored value depends on
/// which it is: a column the file lacks never touches it; a blank cell keeps it unless the upload
/// asked to clear blanks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Optional<T> {
    NotInFile,
    Blank,
    Value(T),
}

impl<T> Optional<T> {
    pub fn value(&self) -> Option<&T> {
        match self {
            Optional::Value(value) => Some(value),
            Optional::NotInFile | Optional::Blank => None,
        }
    }

    /// The same choice, with the value (if any) turned into another.
    pub fn into_values<U>(self, f: impl FnOnce(T) -> U) -> Optional<U> {
        match self {
            Optional::Value(value) => Optional::Value(f(value)),
            Optional::Blank => Optional::Blank,
            Optional::NotInFile => Optional::NotInFile,
        }
    }

    pub fn map<U>(&self, f: impl FnOnce(&T) -> U) -> Optional<U> {
        match self {
            Optional::Value(value) => Optional::Value(f(value)),
            Optional::Blank => Optional::Blank,
            Optional::NotInFile => Optional::NotInFile,
        }
    }
}

impl Optional<String> {
    pub fn as_deref(&self) -> Option<&str> {
        self.value().map(String::as_str)
    }
}

/// A row's cells as uploaded (text as typed, numbers and dates as a person reads them), every
/// column up to the row's last non-blank one, for the rejected-rows file. One allocation a row.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct OriginalRow(Box<str>);

/// Text kept of one original cell: a hostile file's long cell repeated down a sheet must not
/// be copied into every rejected row in full.
const ORIGINAL_CELL_CHARS: usize = 2_000;

/// Bytes of original cells kept for one file's rejected rows; rows past it are listed with their
/// reasons but without their cells.
const ORIGINALS_BUDGET: usize = 32 * 1024 * 1024;

/// Separates the cells of an `OriginalRow`; a cell holding it gets a space instead.
const CELL_SEPARATOR: char = '\u{1f}';

impl OriginalRow {
    pub fn from_cells(cells: &[(u32, Cell<'_>)]) -> OriginalRow {
        let mut text = String::new();
        let mut column = 0;
        for (index, cell) in cells {
            while column < *index {
                text.push(CELL_SEPARATOR);
                column += 1;
            }
            let value = match cell {
                Cell::Text(s) | Cell::IsoText(s) => Cow::Borrowed(s.as_ref()),
                Cell::Error(e) => Cow::Borrowed(e.as_str()),
                other => other.text().ok().flatten().unwrap_or_default(),
            };
            text.extend(
                value
                    .chars()
                    .take(ORIGINAL_CELL_CHARS)
                    // NUL cannot be stored anywhere (Postgres text and JSON refuse it).
                    .map(|c| match c {
                        CELL_SEPARATOR => ' ',
                        '\0' => char::REPLACEMENT_CHARACTER,
                        c => c,
                    }),
            );
        }
        OriginalRow(text.into_boxed_str())
    }

    /// The cells, from the first column.
    pub fn cells(&self) -> impl Iterator<Item = &str> {
        self.0.split(CELL_SEPARATOR)
    }
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_newtype!(
    /// A student's registration number as typed (trimmed), at most 50 characters.
    RegistrationNo
);
text_newtype!(
    /// A stall number as typed (trimmed), at most 20 characters.
    StallNumber
);
text_newtype!(
    /// A lower-cased email address of sane syntax, at most 100 characters.
    Email
);
text_newtype!(
    /// Exactly 10 digits.
    Phone
);
text_newtype!(
    /// Exactly 6 digits.
    Pincode
);

impl RegistrationNo {
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Self(within(Field::RegistrationNo, text)?.to_owned()))
    }
}

impl StallNumber {
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Self(within(Field::StallNumber, text)?.to_owned()))
    }
}

impl Email {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = clean(text);
        let text = text
            .strip_prefix("mailto:")
            .or_else(|| text.strip_prefix("MAILTO:"))
            .unwrap_or(text);
        let lower = within(Field::Email, text)?.to_lowercase();
        if is_email(&lower) {
            Ok(Self(lower))
        } else {
            Err(format!("`{}` is not an email address", quote(text)))
        }
    }
}

/// name@domain.tld: one `@`, no spaces, a domain of dot-separated labels of letters, digits
/// and hyphens with at least one dot.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !matches!(
                    c,
                    '@' | ',' | ';' | ':' | '<' | '>' | '(' | ')' | '[' | ']' | '\\' | '"'
                )
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic));
    local_ok && domain_ok
}

impl Phone {
    /// Keeps the digits of an Indian phone number: spaces, dashes, dots and parentheses go, as
    /// does a `+91`, `91` (12 digits) or `0` (11 digits) prefix; 10 digits must remain.
    pub fn parse(text: &str) -> Result<Self, String> {
        let original = clean(text);
        let compact: String = original
            .chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '(' | ')' | '.'))
            .collect();
        let digits = compact.strip_prefix("+91").unwrap_or(&compact);
        let digits = if digits.len() == 12 && digits.starts_with("91") {
            &digits[2..]
        } else if digits.len() == 11 && digits.starts_with('0') {
            &digits[1..]
        } else {
            digits
        };
        if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits.to_owned()))
        } else {
            Err(format!(
                "`{}` is not a 10-digit phone number",
                quote(original)
            ))
        }
    }
}

impl Pincode {
    /// Six digits; spaces inside ("110 001") are dropped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let original = clean(text);
        let digits: String = original.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits))
        } else {
            Err(format!("`{}` is not a 6-digit pincode", quote(original)))
        }
    }
}

/// A school named by its id or by its name; the importer resolves it against `schools`
/// (names case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchoolRef {
    Id(Uuid),
    Name(String),
}

impl SchoolRef {
    pub fn parse(text: &str) -> SchoolRef {
        let text = clean(text);
        match Uuid::parse_str(text) {
            Ok(id) => SchoolRef::Id(id),
            Err(_) => SchoolRef::Name(collapse_spaces(text)),
        }
    }
}

impl std::fmt::Display for SchoolRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchoolRef::Id(id) => write!(f, "{id}"),
            SchoolRef::Name(name) => f.write_str(name),
        }
    }
}

/// An event named by its id or by its code; the importer resolves it against `events` (codes
/// case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventRef {
    Id(Uuid),
    Code(String),
}

impl EventRef {
    pub fn parse(text: &str) -> Result<EventRef, String> {
        let text = printable(clean(text))?;
        Ok(match Uuid::parse_str(text) {
            Ok(id) => EventRef::Id(id),
            Err(_) => EventRef::Code(text.to_owned()),
        })
    }
}

impl std::fmt::Display for EventRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventRef::Id(id) => write!(f, "{id}"),
            EventRef::Code(code) => f.write_str(code),
        }
    }
}

/// A valid students row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StudentRecord {
    pub registration_no: RegistrationNo,
    pub email: Optional<Email>,
    pub full_name: String,
    pub school: SchoolRef,
    pub date_of_birth: NaiveDate,
    pub pincode: Pincode,
    pub phone: Optional<Phone>,
    pub address: Optional<String>,
    pub program_name: Optional<String>,
    pub batch: Optional<i32>,
}

/// A valid stalls row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StallRecord {
    pub stall_number: StallNumber,
    pub stall_name: String,
    pub school: SchoolRef,
    pub description: Optional<String>,
    pub location: Optional<String>,
    pub event: Optional<EventRef>,
}

/// The valid rows of a file, each with its sheet row number.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Records {
    Students(Vec<(u32, StudentRecord)>),
    Stalls(Vec<(u32, StallRecord)>),
}

impl Records {
    pub fn new(kind: Kind) -> Records {
        match kind {
            Kind::Students => Records::Students(Vec::new()),
            Kind::Stalls => Records::Stalls(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Records::Students(rows) => rows.len(),
            Records::Stalls(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sheet row numbers of the records, in file order.
    pub fn rows(&self) -> Vec<u32> {
        match self {
            Records::Students(rows) => rows.iter().map(|(row, _)| *row).collect(),
            Records::Stalls(rows) => rows.iter().map(|(row, _)| *row).collect(),
        }
    }
}

/// Text the database refuses (NUL) or that no one typed on purpose (other control characters;
/// tabs and line breaks are fine in multi-line fields, and single-line ones collapse them).
fn printable(text: &str) -> Result<&str, String> {
    match text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        Some(c) => Err(format!(
            "holds the control character U+{:04X}: retype the value",
            u32::from(c)
        )),
        None => Ok(text),
    }
}

/// A multi-line text field as typed, trimmed.
fn free_text(text: &str) -> Result<String, String> {
    Ok(printable(clean(text))?.to_owned())
}

fn within(field: Field, text: &str) -> Result<&str, String> {
    let text = printable(clean(text))?;
    if let Some(max) = max_chars(field) {
        let count = text.chars().count();
        if count > max {
            return Err(format!("too long ({count} characters, at most {max})"));
        }
    }
    Ok(text)
}

/// Inner runs of spaces (and tabs, line breaks) become one space.
fn collapse_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// A single-line text field: inner runs of spaces collapsed, length checked.
fn line(field: Field, text: &str) -> Result<String, String> {
    let text = collapse_spaces(text);
    within(field, &text)?;
    Ok(text)
}

fn date_of_birth(cell: &Cell<'_>, text: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    let date = match cell {
        Cell::Date(Some(date)) => *date,
        Cell::Number(_) => {
            return Err(format!(
                "`{text}` is a number, not a date: format the cell as a date or write YYYY-MM-DD"
            ))
        }
        _ => parse_date_text(text)?,
    };
    if date > today {
        return Err(format!("{date} is in the future"));
    }
    let mut age = today.year() - date.year();
    if (today.month(), today.day()) < (date.month(), date.day()) {
        age -= 1;
    }
    if age < MIN_AGE_YEARS {
        return Err(format!(
            "{date} makes the student {age}: students must be at least {MIN_AGE_YEARS}"
        ));
    }
    if date < EARLIEST_BIRTH_DATE {
        return Err(format!(
            "{date} is before {EARLIEST_BIRTH_DATE}: the app's first-login reset refuses earlier dates of birth, so the student could never log in"
        ));
    }
    Ok(date)
}

fn batch(text: &str) -> Result<i32, String> {
    let range = || {
        format!(
            "`{}` is not a batch year between {} and {}",
            quote(text),
            BATCH_YEARS.start(),
            BATCH_YEARS.end()
        )
    };
    let year: i32 = text.parse().map_err(|_| range())?;
    if BATCH_YEARS.contains(&year) {
        Ok(year)
    } else {
        Err(range())
    }
}

/// The header of a field's first column, or the field's name when the sheet has none.
fn header_of(columns: &[Column], field: Field) -> Arc<str> {
    columns
        .first()
        .map(|c| c.header.clone())
        .unwrap_or_else(|| Arc::from(field.name()))
}

/// Turns the data rows of one sheet into records and row errors, catching duplicates within
/// the file.
pub struct RowValidator {
    kind: Kind,
    /// The columns of each field (indexed by `field as usize`), in sheet order.
    columns: [Vec<Column>; Field::COUNT],
    /// `used[i]`: column `i` holds a field.
    used: Vec<bool>,
    today: NaiveDate,
    /// First row of each natural key (trimmed, lower-cased) and of each email.
    keys: HashMap<String, u32>,
    emails: HashMap<String, u32>,
    pub records: Records,
    pub rejected: Vec<RowError>,
    /// The cells of each rejected row, by row number.
    pub rejected_originals: HashMap<u32, OriginalRow>,
    original_bytes: usize,
}

/// A row's value for one field: the cell, its text, and the header it came from.
struct Value<'a> {
    cell: &'a Cell<'a>,
    text: Cow<'a, str>,
    column: &'a Arc<str>,
}

impl RowValidator {
    pub fn new(kind: Kind, headers: HeaderMap, today: NaiveDate) -> RowValidator {
        let mut columns: [Vec<Column>; Field::COUNT] = Default::default();
        let mut used = Vec::new();
        for column in headers.columns {
            let Some(field) = column.field else {
                continue;
            };
            let index = column.index as usize;
            if used.len() <= index {
                used.resize(index + 1, false);
            }
            used[index] = true;
            columns[field as usize].push(column);
        }
        RowValidator {
            kind,
            columns,
            used,
            today,
            keys: HashMap::new(),
            emails: HashMap::new(),
            records: Records::new(kind),
            rejected: Vec::new(),
            rejected_originals: HashMap::new(),
            original_bytes: 0,
        }
    }

    /// True when none of the row's matched columns holds anything: the row is skipped.
    pub fn is_blank(&self, cells: &[(u32, Cell<'_>)]) -> bool {
        cells.iter().all(|(index, cell)| {
            !self.used.get(*index as usize).copied().unwrap_or(false) || cell.is_blank()
        })
    }

    fn columns_of(&self, field: Field) -> &[Column] {
        &self.columns[field as usize]
    }

    /// Validates one non-blank data row (`cells` sorted by column index).
    pub fn push_row(&mut self, row: u32, cells: &[(u32, Cell<'_>)]) {
        let mut errors = Vec::new();
        match self.kind {
            Kind::Students => {
                if let Some(record) = self.student(row, cells, &mut errors) {
                    if let Records::Students(records) = &mut self.records {
                        records.push((row, record));
                    }
                }
            }
            Kind::Stalls => {
                if let Some(record) = self.stall(row, cells, &mut errors) {
                    if let Records::Stalls(records) = &mut self.records {
                        records.push((row, record));
                    }
                }
            }
        }
        if !errors.is_empty() {
            self.keep_original(row, cells);
        }
        self.rejected.extend(errors);
    }

    /// The first non-empty value of `field` in the row. A cell holding an error value (`#N/A`)
    /// is reported and counts as present.
    fn value<'a>(
        &'a self,
        row: u32,
        field: Field,
        cells: &'a [(u32, Cell<'a>)],
        errors: &mut Vec<RowError>,
    ) -> Option<Value<'a>> {
        for column in self.columns_of(field) {
            let Ok(at) = cells.binary_search_by_key(&column.index, |(i, _)| *i) else {
                continue;
            };
            let cell = &cells[at].1;
            match cell.text() {
                Ok(Some(text)) => {
                    return Some(Value {
                        cell,
                        text,
                        column: &column.header,
                    })
                }
                Ok(None) => {}
                Err(what) => {
                    errors.push(RowError {
                        row,
                        column: column.header.clone(),
                        field,
                        reason: format!("the cell holds {what}").into(),
                    });
                    return None;
                }
            }
        }
        None
    }

    fn column_name(&self, field: Field) -> Arc<str> {
        header_of(self.columns_of(field), field)
    }

    /// Reads `field` with `parse`; a missing value of a required field is an error.
    fn read<T>(
        &self,
        row: u32,
        field: Field,
        required: bool,
        cells: &[(u32, Cell<'_>)],
        errors: &mut Vec<RowError>,
        parse: impl FnOnce(&Cell<'_>, &str) -> Result<T, String>,
    ) -> Option<T> {
        let before = errors.len();
        match self.value(row, field, cells, errors) {
            Some(value) => match parse(value.cell, &value.text) {
                Ok(parsed) => Some(parsed),
                Err(reason) => {
                    errors.push(RowError {
                        row,
                        column: value.column.clone(),
                        field,
                        reason: reason.into(),
                    });
                    None
                }
            },
            None => {
                if required && errors.len() == before {
                    errors.push(RowError {
                        row,
                        column: self.column_name(field),
                        field,
                        reason: Cow::Borrowed("missing"),
                    });
                }
                None
            }
        }
    }

    /// Keeps a rejected row's cells for the rejected-rows file, within the file's budget.
    pub fn keep_original(&mut self, row: u32, cells: &[(u32, Cell<'_>)]) {
        if self.original_bytes >= ORIGINALS_BUDGET {
            return;
        }
        let original = OriginalRow::from_cells(cells);
        self.original_bytes += original.0.len();
        self.rejected_originals.insert(row, original);
    }

    /// Reads an optional `field`: not in the file, blank, or its parsed value.
    fn optional<T>(
        &self,
        row: u32,
        field: Field,
        cells: &[(u32, Cell<'_>)],
        errors: &mut Vec<RowError>,
        parse: impl FnOnce(&Cell<'_>, &str) -> Result<T, String>,
    ) -> Optional<T> {
        if self.columns_of(field).is_empty() {
            return Optional::NotInFile;
        }
        match self.read(row, field, false, cells, errors, parse) {
            Some(value) => Optional::Value(value),
            None => Optional::Blank,
        }
    }

    /// Records the first row of `key`; a later row gets "duplicate of row N".
    fn first_row(
        seen: &mut HashMap<String, u32>,
        key: String,
        row: u32,
        columns: &[Column],
        field: Field,
        errors: &mut Vec<RowError>,
    ) {
        match seen.entry(key) {
            Entry::Occupied(first) if *first.get() != row => errors.push(RowError {
                row,
                column: header_of(columns, field),
                field,
                reason: format!("duplicate of row {}", first.get()).into(),
            }),
            Entry::Occupied(_) => {}
            Entry::Vacant(vacant) => {
                vacant.insert(row);
            }
        }
    }

    fn student(
        &mut self,
        row: u32,
        cells: &[(u32, Cell<'_>)],
        errors: &mut Vec<RowError>,
    ) -> Option<StudentRecord> {
        let today = self.today;
        let registration_no = self.read(row, Field::RegistrationNo, true, cells, errors, |_, t| {
            RegistrationNo::parse(t)
        });
        let email = self.optional(row, Field::Email, cells, errors, |_, t| Email::parse(t));
        let full_name = self.read(row, Field::FullName, true, cells, errors, |_, t| {
            line(Field::FullName, t)
        });
        let school = self.read(row, Field::School, true, cells, errors, |_, t| {
            Ok(SchoolRef::parse(t))
        });
        let date_of_birth = self.read(row, Field::DateOfBirth, true, cells, errors, |c, t| {
            date_of_birth(c, t, today)
        });
        let pincode = self.read(row, Field::Pincode, true, cells, errors, |_, t| {
            Pincode::parse(t)
        });
        let phone = self.optional(row, Field::Phone, cells, errors, |_, t| Phone::parse(t));
        let address = self.optional(row, Field::Address, cells, errors, |_, t| free_text(t));
        let program_name = self.optional(row, Field::ProgramName, cells, errors, |_, t| {
            line(Field::ProgramName, t)
        });
        let batch = self.optional(row, Field::Batch, cells, errors, |_, t| batch(t));

        if let Some(key) = &registration_no {
            let key = key.as_str().to_lowercase();
            let columns = &self.columns[Field::RegistrationNo as usize];
            Self::first_row(
                &mut self.keys,
                key,
                row,
                columns,
                Field::RegistrationNo,
                errors,
            );
        }
        if let Optional::Value(email) = &email {
            let key = email.as_str().to_owned();
            let columns = &self.columns[Field::Email as usize];
            Self::first_row(&mut self.emails, key, row, columns, Field::Email, errors);
        }
        if !errors.is_empty() {
            return None;
        }
        Some(StudentRecord {
            registration_no: registration_no?,
            email,
            full_name: full_name?,
            school: school?,
            date_of_birth: date_of_birth?,
            pincode: pincode?,
            phone,
            address,
            program_name,
            batch,
        })
    }

    fn stall(
        &mut self,
        row: u32,
        cells: &[(u32, Cell<'_>)],
        errors: &mut Vec<RowError>,
    ) -> Option<StallRecord> {
        let stall_number = self.read(row, Field::StallNumber, true, cells, errors, |_, t| {
            StallNumber::parse(t)
        });
        let stall_name = self.read(row, Field::StallName, true, cells, errors, |_, t| {
            line(Field::StallName, t)
        });
        let school = self.read(row, Field::School, true, cells, errors, |_, t| {
            Ok(SchoolRef::parse(t))
        });
        let description =
            self.optional(row, Field::Description, cells, errors, |_, t| free_text(t));
        let location = self.optional(row, Field::Location, cells, errors, |_, t| {
            line(Field::Location, t)
        });
        let event = self.optional(row, Field::Event, cells, errors, |_, t| EventRef::parse(t));
        if let Some(key) = &stall_number {
            let key = key.as_str().to_lowercase();
            let columns = &self.columns[Field::StallNumber as usize];
            Self::first_row(
                &mut self.keys,
                key,
                row,
                columns,
                Field::StallNumber,
                errors,
            );
        }
        if !errors.is_empty() {
            return None;
        }
        Some(StallRecord {
            stall_number: stall_number?,
            stall_name: stall_name?,
            school: school?,
            description,
            location,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_keep_their_digits() {
        for (input, expected) in [
            ("9876543210", "9876543210"),
            ("98765 43210", "9876543210"),
            ("98765-43210", "9876543210"),
            ("(987) 654-3210", "9876543210"),
            ("+91 98765 43210", "9876543210"),
            ("+91-9876543210", "9876543210"),
            ("919876543210", "9876543210"),
            ("09876543210", "9876543210"),
        ] {
            assert_eq!(Phone::parse(input).unwrap().as_str(), expected, "{input}");
        }
        for bad in [
            "987654321",
            "98765432101",
            "+44 7911 123456",
            "98765abcde",
            "+9198765",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pincodes_are_six_digits() {
        assert_eq!(Pincode::parse("110001").unwrap().as_str(), "110001");
        assert_eq!(Pincode::parse(" 110 001 ").unwrap().as_str(), "110001");
        for bad in ["11001", "1100011", "11000a", ""] {
            assert!(Pincode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            Email::parse(" John.Doe@Example.COM ").unwrap().as_str(),
            "john.doe@example.com"
        );
        assert_eq!(Email::parse("mailto:a@b.in").unwrap().as_str(), "a@b.in");
        for bad in [
            "john",
            "john@",
            "@example.com",
            "john@example",
            "john doe@example.com",
            "john@@example.com",
            "john@example..com",
            "john@.example.com",
            "john.@example.com",
            "john@example.c0m",
            "john@exa_mple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        let name = "अ".repeat(50);
        assert!(RegistrationNo::parse(&name).is_ok());
        let long = "x".repeat(51);
        assert_eq!(
            RegistrationNo::parse(&long).unwrap_err(),
            "too long (51 characters, at most 50)"
        );
        assert_eq!(
            StallNumber::parse(&"9".repeat(21)).unwrap_err(),
            "too long (21 characters, at most 20)"
        );
    }

    #[test]
    fn schools_by_id_or_name() {
        let id = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(
            SchoolRef::parse(id),
            SchoolRef::Id(Uuid::parse_str(id).unwrap())
        );
        assert_eq!(
            SchoolRef::parse("  School of   Engineering "),
            SchoolRef::Name("School of Engineering".into())
        );
    }

    #[test]
    fn age_and_batch() {
        let today = NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        let text = |s: &'static str| Cell::Text(s.into());
        assert!(date_of_birth(&text("2010-06-01"), "2010-06-01", today).is_ok());
        let young = date_of_birth(&text("2010-06-02"), "2010-06-02", today).unwrap_err();
        assert!(young.contains("at least 15"), "{young}");
        assert!(date_of_birth(&text("2030-01-01"), "2030-01-01", today)
            .unwrap_err()
            .contains("future"));
        assert!(date_of_birth(&Cell::Number(38487.0), "38487", today).is_err());
        assert_eq!(batch("2000"), Ok(2000));
        assert_eq!(batch("2035"), Ok(2035));
        assert!(batch("1999").is_err());
        assert!(batch("2036").is_err());
        assert!(batch("2025-26").is_err());
    }
}
