//! Rows to typed records: each non-blank row of a sheet becomes a `StudentRecord` or
//! `StallRecord` (its values parsed by `values`), or row errors naming its row, its column and a
//! reason; duplicates within the file are caught here.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use serde::Serialize;

use super::cells::Cell;
use super::headers::{Column, Field, HeaderMap};
use super::values::{
    batch, date_of_birth, free_text, line, Email, EventRef, Optional, OriginalRow, Phone, Pincode,
    RegistrationNo, SchoolRef, StallNumber, ORIGINALS_BUDGET,
};
use crate::kind::Kind;

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

    /// Room for `rows` records: a chunk's rows are many hundred bytes each, and growing the
    /// vector by doubling copied each chunk about twice over.
    pub fn with_capacity(kind: Kind, rows: usize) -> Records {
        match kind {
            Kind::Students => Records::Students(Vec::with_capacity(rows)),
            Kind::Stalls => Records::Stalls(Vec::with_capacity(rows)),
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
        self.original_bytes += original.len();
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
