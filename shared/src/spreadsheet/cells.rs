//! Cell values as a person meant them: whole numbers without `.0`, text as typed, date cells
//! as calendar dates (no time zone involved), text dates in the formats written in India.

use std::borrow::Cow;

use calamine::{Data, DataRef, ExcelDateTime};
use chrono::{Datelike, NaiveDate};

/// One cell, read from any format, before a field gives it a meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Empty,
    /// Text as stored (shared, inline and rich text all arrive as their plain text), borrowed
    /// from the workbook's table of texts where it can be.
    Text(Cow<'a, str>),
    Number(f64),
    Bool(bool),
    /// A cell formatted as a date: its calendar day, or `None` when the serial is out of range
    /// or the day does not exist (Excel's 1900-02-29).
    Date(Option<NaiveDate>),
    /// A date or duration written as ISO 8601 text (OpenDocument files).
    IsoText(Cow<'a, str>),
    /// An error value such as `#N/A` or `#REF!`.
    Error(String),
}

impl<'a> Cell<'a> {
    pub fn from_data(data: &'a Data) -> Cell<'a> {
        match data {
            Data::Empty => Cell::Empty,
            Data::String(s) => Cell::Text(Cow::Borrowed(s)),
            Data::Float(f) => Cell::Number(*f),
            Data::Int(i) => Cell::Number(*i as f64),
            Data::Bool(b) => Cell::Bool(*b),
            Data::DateTime(dt) => excel_date(dt),
            Data::DateTimeIso(s) | Data::DurationIso(s) => Cell::IsoText(Cow::Borrowed(s)),
            Data::Error(e) => Cell::Error(e.to_string()),
        }
    }

    pub fn from_data_ref(data: DataRef<'a>) -> Cell<'a> {
        match data {
            DataRef::Empty => Cell::Empty,
            DataRef::String(s) => Cell::Text(Cow::Owned(s)),
            DataRef::SharedString(s) => Cell::Text(Cow::Borrowed(s)),
            DataRef::Float(f) => Cell::Number(f),
            DataRef::Int(i) => Cell::Number(i as f64),
            DataRef::Bool(b) => Cell::Bool(b),
            DataRef::DateTime(dt) => excel_date(&dt),
            DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Cell::IsoText(Cow::Owned(s)),
            DataRef::Error(e) => Cell::Error(e.to_string()),
        }
    }

    /// Empty, or text that is only spaces.
    pub fn is_blank(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(s) | Cell::IsoText(s) => clean(s).is_empty(),
            _ => false,
        }
    }

    /// The text a person sees in the cell, trimmed; `None` when there is none. Error cells have
    /// no text: `Err` carries the error's name.
    pub fn text(&self) -> Result<Option<Cow<'_, str>>, String> {
        let text = match self {
            Cell::Empty => return Ok(None),
            Cell::Text(s) | Cell::IsoText(s) => Cow::Borrowed(clean(s)),
            Cell::Number(f) => Cow::Owned(number_text(*f)),
            Cell::Bool(b) => Cow::Borrowed(if *b { "TRUE" } else { "FALSE" }),
            Cell::Date(Some(date)) => Cow::Owned(format!(
                "{:04}-{:02}-{:02}",
                date.year(),
                date.month(),
                date.day()
            )),
            Cell::Date(None) => return Err("an invalid date".to_owned()),
            Cell::Error(e) => return Err(format!("the error {e}")),
        };
        Ok((!text.is_empty()).then_some(text))
    }
}

/// The calendar day of a date cell. calamine resolves the workbook's 1900 or 1904 epoch; the
/// time of day, if any, is dropped, never shifted by a time zone.
fn excel_date(dt: &ExcelDateTime) -> Cell<'static> {
    if dt.is_duration() {
        return Cell::Number(dt.as_f64());
    }
    let value = dt.as_f64();
    // Serial 0 is Excel's "1900-01-00"; negative and huge serials are not days at all.
    if !value.is_finite() || !(1.0..2_958_466.0).contains(&value) {
        return Cell::Date(None);
    }
    let (year, month, day, ..) = dt.to_ymd_hms_milli();
    Cell::Date(NaiveDate::from_ymd_opt(
        i32::from(year),
        u32::from(month),
        u32::from(day),
    ))
}

/// Cells starting with these are formulas to Excel and LibreOffice; a leading `'` makes them text.
pub const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Neutralises a CSV cell that a spreadsheet program would run as a formula.
pub fn guard_formula(value: &str) -> String {
    if value.starts_with(FORMULA_STARTS) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

/// The value [`guard_formula`] neutralised, so a rejected-rows file re-uploads as it was typed.
pub fn unguard_formula(value: &str) -> &str {
    match value.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
        _ => value,
    }
}

/// Trims spaces, including no-break spaces and the zero-width characters web pages leave.
pub fn clean(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || matches!(c, '\u{200b}' | '\u{feff}'))
}

/// A number as a person reads it: `2021001`, not `2021001.0` or `2.021001e6`.
pub fn number_text(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        // Rust prints the shortest text that reads back as the same f64, never in exponent form.
        format!("{value}")
    }
}

/// A date from text: `YYYY-MM-DD` (optionally followed by a time; `/` and `.` also accepted),
/// `DD/MM/YYYY` or `DD-MM-YYYY` (day first, as written in India; `.` also accepted), with one-
/// or two-digit day and month. Returns a reason on failure.
pub fn parse_date_text(text: &str) -> Result<NaiveDate, String> {
    let text = clean(text);
    let malformed = || {
        format!(
            "`{}` is not a date: write it as YYYY-MM-DD or DD/MM/YYYY",
            quote(text)
        )
    };
    // Year first (ISO, or with `/` or `.`), allowing a trailing time ("2005-05-15 00:00:00",
    // "2005-05-15T00:00:00Z").
    let date_part = text.split(['T', ' ']).next().unwrap_or(text);
    let separator = ['-', '/', '.']
        .into_iter()
        .find(|s| date_part.contains(*s))
        .ok_or_else(malformed)?;
    let parts: Vec<&str> = date_part.split(separator).collect();
    if parts.len() != 3 {
        return Err(malformed());
    }
    if parts[0].len() == 4 {
        return ymd(parts[0], parts[1], parts[2]).ok_or_else(malformed);
    }
    // Day first: the time part is not accepted here ("15/05/2005 10:00" is unusual enough to
    // be a mistake).
    if date_part != text {
        return Err(malformed());
    }
    let (d, m, y) = (parts[0], parts[1], parts[2]);
    if y.len() != 4 {
        if y.len() == 2 && y.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "`{}` has a two-digit year: write the year in full (DD/MM/YYYY)",
                quote(text)
            ));
        }
        return Err(malformed());
    }
    ymd(y, m, d).ok_or_else(malformed)
}

fn ymd(y: &str, m: &str, d: &str) -> Option<NaiveDate> {
    let digits = |s: &str, max_len: usize| {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let year = i32::try_from(digits(y, 4)?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(m, 2)?, digits(d, 2)?)
}

/// Text for a reason, cut to a readable length.
pub fn quote(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::ExcelDateTimeType;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn numbers_read_as_written() {
        assert_eq!(number_text(2021001.0), "2021001");
        assert_eq!(number_text(110001.0), "110001");
        assert_eq!(number_text(-3.0), "-3");
        assert_eq!(number_text(0.5), "0.5");
        assert_eq!(number_text(9876543210.0), "9876543210");
        assert_eq!(
            Cell::Number(2025.0).text().unwrap().as_deref(),
            Some("2025")
        );
    }

    #[test]
    fn text_is_trimmed_and_blank_is_none() {
        assert_eq!(
            Cell::Text("\u{a0} 007 \u{200b}".into())
                .text()
                .unwrap()
                .as_deref(),
            Some("007")
        );
        assert_eq!(
            Cell::Date(Some(date(2005, 5, 15)))
                .text()
                .unwrap()
                .as_deref(),
            Some("2005-05-15")
        );
        assert_eq!(Cell::Text("   ".into()).text().unwrap(), None);
        assert!(Cell::Text(" \t".into()).is_blank());
        assert_eq!(Cell::Empty.text().unwrap(), None);
        assert!(Cell::Error("#N/A".into()).text().is_err());
    }

    #[test]
    fn date_cells_in_both_epochs() {
        let serial_1900 = ExcelDateTime::new(38487.0, ExcelDateTimeType::DateTime, false);
        assert_eq!(
            excel_date(&serial_1900),
            Cell::Date(Some(date(2005, 5, 15)))
        );
        let with_time = ExcelDateTime::new(38487.75, ExcelDateTimeType::DateTime, false);
        assert_eq!(excel_date(&with_time), Cell::Date(Some(date(2005, 5, 15))));
        let serial_1904 = ExcelDateTime::new(37025.0, ExcelDateTimeType::DateTime, true);
        assert_eq!(
            excel_date(&serial_1904),
            Cell::Date(Some(date(2005, 5, 15)))
        );
        let leap_bug = ExcelDateTime::new(60.0, ExcelDateTimeType::DateTime, false);
        assert_eq!(excel_date(&leap_bug), Cell::Date(None));
        let negative = ExcelDateTime::new(-5.0, ExcelDateTimeType::DateTime, false);
        assert_eq!(excel_date(&negative), Cell::Date(None));
    }

    #[test]
    fn text_dates_in_three_formats() {
        assert_eq!(parse_date_text("2005-05-15"), Ok(date(2005, 5, 15)));
        assert_eq!(
            parse_date_text("2005-05-15 00:00:00"),
            Ok(date(2005, 5, 15))
        );
        assert_eq!(parse_date_text("15/05/2005"), Ok(date(2005, 5, 15)));
        assert_eq!(parse_date_text("15-05-2005"), Ok(date(2005, 5, 15)));
        assert_eq!(parse_date_text("5/1/2005"), Ok(date(2005, 1, 5)));
        assert_eq!(parse_date_text(" 15.05.2005 "), Ok(date(2005, 5, 15)));
        assert_eq!(parse_date_text("2005/05/15"), Ok(date(2005, 5, 15)));
        assert!(parse_date_text("2005/15/05").is_err());
        assert!(parse_date_text("31/02/2005").is_err());
        assert!(parse_date_text("15/05/05")
            .unwrap_err()
            .contains("two-digit year"));
        assert!(parse_date_text("May 15 2005").is_err());
        assert!(parse_date_text("2005").is_err());
        assert!(parse_date_text("15/05/2005/1").is_err());
    }
}
