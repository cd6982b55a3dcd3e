//! Column headers: which column holds which field, matched loosely, with THE synonym table.

use std::sync::Arc;

use serde::Serialize;

use crate::kind::Kind;

/// A field an import reads. `name()` is the column name in the app's schema and template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    RegistrationNo,
    Email,
    FullName,
    School,
    DateOfBirth,
    Pincode,
    Phone,
    Address,
    ProgramName,
    Batch,
    StallNumber,
    StallName,
    Description,
    Location,
    /// The event a stall belongs to: its code or id.
    Event,
}

impl Field {
    /// How many fields there are: `field as usize` indexes an array of this length.
    pub const COUNT: usize = 15;

    pub fn name(self) -> &'static str {
        match self {
            Field::RegistrationNo => "registration_no",
            Field::Email => "email",
            Field::FullName => "full_name",
            Field::School => "school",
            Field::DateOfBirth => "date_of_birth",
            Field::Pincode => "pincode",
            Field::Phone => "phone",
            Field::Address => "address",
            Field::ProgramName => "program_name",
            Field::Batch => "batch",
            Field::StallNumber => "stall_number",
            Field::StallName => "stall_name",
            Field::Description => "description",
            Field::Location => "location",
            Field::Event => "event",
        }
    }

    /// The fields a row of this kind must have, in the order errors are reported.
    pub fn required(kind: Kind) -> &'static [Field] {
        match kind {
            Kind::Students => &[
                Field::RegistrationNo,
                Field::FullName,
                Field::School,
                Field::DateOfBirth,
                Field::Pincode,
            ],
            Kind::Stalls => &[Field::StallNumber, Field::StallName, Field::School],
        }
    }

    /// The fields a row of this kind may have.
    pub fn optional(kind: Kind) -> &'static [Field] {
        match kind {
            Kind::Students => &[
                Field::Email,
                Field::Phone,
                Field::Address,
                Field::ProgramName,
                Field::Batch,
            ],
            Kind::Stalls => &[Field::Description, Field::Location, Field::Event],
        }
    }

    fn of_kind(kind: Kind) -> impl Iterator<Item = Field> {
        Field::required(kind)
            .iter()
            .chain(Field::optional(kind))
            .copied()
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The one table of header names each field answers to, besides its own `Field::name()`.
///
/// Headers are compared after `normalize`: lower-cased, text in brackets dropped ("Phone (10
/// digits)"), and everything but letters and digits removed, so case, spaces, `*`, `_`, `-`, `.`
/// and other punctuation never matter ("Reg. No.*" = "reg no" = "REG_NO"). Write entries as a
/// person would; they are normalised the same way. A header is looked up only among the fields
/// of the kind being imported, so "Name" is the student's full name in a students file and the
/// stall's name in a stalls file. A test checks that no two fields of a kind share a spelling.
pub const SYNONYMS: &[(Field, &[&str])] = &[
    (
        Field::RegistrationNo,
        &[
            "Registration No",
            "Registration Number",
            "Registration ID",
            "Reg No",
            "Reg Number",
            "Regd No",
            "Enrollment No",
            "Enrollment Number",
            "Enrolment No",
            "Enrolment Number",
        ],
    ),
    (
        Field::Email,
        &[
            "E-mail",
            "Email ID",
            "Email Address",
            "E-mail Address",
            "Mail ID",
            "Mail",
        ],
    ),
    (
        Field::FullName,
        &["Full Name", "Name", "Student Name", "Name of Student"],
    ),
    (
        Field::School,
        &["School ID", "School Name", "School UUID", "School Code"],
    ),
    (
        Field::DateOfBirth,
        &["Date of Birth", "DOB", "D.O.B.", "Birth Date", "Birthdate"],
    ),
    (
        Field::Pincode,
        &[
            "Pin Code",
            "PIN",
            "Pin No",
            "Postal Code",
            "Post Code",
            "Zip",
            "Zip Code",
        ],
    ),
    (
        Field::Phone,
        &[
            "Phone No",
            "Phone Number",
            "Mobile",
            "Mobile No",
            "Mobile Number",
            "Contact",
            "Contact No",
            "Contact Number",
        ],
    ),
    (
        Field::Address,
        &["Full Address", "Postal Address", "Residential Address"],
    ),
    (
        Field::ProgramName,
        &[
            "Program",
            "Programme",
            "Programme Name",
            "Course",
            "Course Name",
        ],
    ),
    (
        Field::Batch,
        &[
            "Batch Year",
            "Graduation Year",
            "Passing Year",
            "Year of Passing",
        ],
    ),
    (
        Field::StallNumber,
        &["Stall No", "Stall Number", "Stall Code", "Stall ID"],
    ),
    (Field::StallName, &["Stall Name", "Name", "Stall Title"]),
    (Field::Description, &["Details", "About"]),
    (Field::Location, &["Venue", "Place", "Stall Location"]),
    (Field::Event, &["Event Code", "Event ID", "Event UUID"]),
];

/// Lower-cased letters and digits of `header`, bracketed text dropped: the form headers are
/// compared in.
pub fn normalize(header: &str) -> String {
    let mut depth = 0u32;
    let mut out = String::with_capacity(header.len());
    for c in header.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 && c.is_alphanumeric() => out.extend(c.to_lowercase()),
            _ => {}
        }
    }
    out
}

/// The field of `kind` a header names, if any.
pub fn field_for(kind: Kind, header: &str) -> Option<Field> {
    let wanted = normalize(header);
    if wanted.is_empty() {
        return None;
    }
    Field::of_kind(kind).find(|field| {
        normalize(field.name()) == wanted
            || SYNONYMS
                .iter()
                .filter(|(f, _)| f == field)
                .flat_map(|(_, names)| names.iter())
                .any(|name| normalize(name) == wanted)
    })
}

/// One column of the header row.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// 0-based column index in the sheet.
    pub index: u32,
    /// The header as the sheet spells it (trimmed).
    pub header: Arc<str>,
    /// The field it was matched to; `None` for a column the import ignores. A field may have
    /// more than one column ("school_id" and "School Name" side by side): the first non-empty
    /// one in the row is read.
    pub field: Option<Field>,
}

/// The header row of a sheet, matched to the fields of one kind.
#[derive(Debug, Clone)]
pub struct HeaderMap {
    pub columns: Vec<Column>,
}

impl HeaderMap {
    /// Matches a row's texts (index, trimmed text) as headers.
    pub fn match_row(kind: Kind, cells: &[(u32, String)]) -> HeaderMap {
        let columns = cells
            .iter()
            .filter(|(_, text)| !text.is_empty())
            .map(|(index, text)| Column {
                index: *index,
                header: Arc::from(text.as_str()),
                field: field_for(kind, text),
            })
            .collect();
        HeaderMap { columns }
    }

    /// Required fields of `kind` that no column answers to.
    pub fn missing(&self, kind: Kind) -> Vec<Field> {
        Field::required(kind)
            .iter()
            .copied()
            .filter(|field| !self.columns.iter().any(|c| c.field == Some(*field)))
            .collect()
    }

    pub fn headers(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.header.to_string()).collect()
    }

    pub fn ignored(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| c.field.is_none())
            .map(|c| c.header.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_spelling_names_two_fields_of_a_kind() {
        for kind in Kind::ALL {
            let mut seen: Vec<(String, Field)> = Vec::new();
            for field in Field::of_kind(kind) {
                let spellings = SYNONYMS
                    .iter()
                    .filter(|(f, _)| *f == field)
                    .flat_map(|(_, names)| names.iter().copied())
                    .chain(std::iter::once(field.name()));
                for spelling in spellings {
                    let key = normalize(spelling);
                    assert!(!key.is_empty(), "{spelling} normalises to nothing");
                    if let Some((_, other)) = seen.iter().find(|(k, f)| *k == key && *f != field) {
                        panic!("{spelling} names both {field} and {other} in {kind}");
                    }
                    seen.push((key, field));
                }
            }
        }
    }

    #[test]
    fn headers_match_loosely() {
        let students = Kind::Students;
        for (header, field) in [
            ("registration_no*", Field::RegistrationNo),
            ("Registration No", Field::RegistrationNo),
            ("REG. NO.", Field::RegistrationNo),
            ("  Reg No * ", Field::RegistrationNo),
            ("E-mail", Field::Email),
            ("Mobile", Field::Phone),
            ("Phone Number", Field::Phone),
            ("Phone (10 digits)", Field::Phone),
            ("DOB", Field::DateOfBirth),
            ("Date of Birth (DD/MM/YYYY)", Field::DateOfBirth),
            ("Pin Code", Field::Pincode),
            ("PIN", Field::Pincode),
            ("school_id*", Field::School),
            ("School Name", Field::School),
            ("Programme", Field::ProgramName),
            ("Program", Field::ProgramName),
            ("Batch Year", Field::Batch),
            ("Name", Field::FullName),
        ] {
            assert_eq!(field_for(students, header), Some(field), "{header}");
        }
        assert_eq!(
            field_for(Kind::Stalls, "Stall No"),
            Some(Field::StallNumber)
        );
        assert_eq!(field_for(Kind::Stalls, "Name"), Some(Field::StallName));
        assert_eq!(field_for(Kind::Stalls, "School"), Some(Field::School));
        assert_eq!(field_for(students, "Stall No"), None);
        assert_eq!(field_for(students, "Father's Name"), None);
        assert_eq!(field_for(students, "***"), None);
    }
}
