//! One cell's text to a typed value ("parse, don't validate"): a `Phone` cannot hold 9 digits,
//! a `Pincode` 5, a `RegistrationNo` 51 characters; each refusal is a reason a person can act
//! on. Also what a row keeps of its cells as uploaded, for the rejected-rows file.

use std::borrow::Cow;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use uuid::Uuid;

use super::cells::{clean, parse_date_text, quote, Cell};
use super::headers::Field;

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
pub(super) const ORIGINALS_BUDGET: usize = 32 * 1024 * 1024;

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

    /// Bytes it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
pub(super) fn free_text(text: &str) -> Result<String, String> {
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
pub(super) fn line(field: Field, text: &str) -> Result<String, String> {
    let text = collapse_spaces(text);
    within(field, &text)?;
    Ok(text)
}

pub(super) fn date_of_birth(
    cell: &Cell<'_>,
    text: &str,
    today: NaiveDate,
) -> Result<NaiveDate, String> {
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

pub(super) fn batch(text: &str) -> Result<i32, String> {
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
