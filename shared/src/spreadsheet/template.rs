//! The upload template an admin downloads: an `.xlsx` whose first sheet is the data sheet
//! ("Students" or "Stalls") holding only the header row the importer expects, then an
//! "Instructions" sheet (every column explained, with examples) and a "Schools" sheet (names and
//! ids). No example row is put in the data sheet: every row below the headers is imported.
//!
//! Columns that hold digits with meaningful leading zeros (registration and stall numbers,
//! pincode, phone) are formatted as text, and `date_of_birth` as a date, so what the admin types
//! survives the spreadsheet program.

use rust_xlsxwriter::{
    DataValidation, DataValidationErrorStyle, DataValidationRule, Format, Formula, Workbook,
    Worksheet, XlsxError,
};
use uuid::Uuid;

use super::headers::Field;
use super::values::{max_chars, BATCH_YEARS, EARLIEST_BIRTH_DATE, MIN_AGE_YEARS};
use crate::kind::Kind;

/// Name of the second sheet.
pub const INSTRUCTIONS_SHEET: &str = "Instructions";
/// Name of the third sheet.
pub const SCHOOLS_SHEET: &str = "Schools";

/// Last 0-based row a column format or validation reaches (Excel's last row).
const LAST_ROW: u32 = 1_048_575;

/// The template could not be written (a school name over Excel's 32,767-character cell limit,
/// or a bug).
#[derive(Debug, thiserror::Error)]
#[error("building the upload template: {0}")]
pub struct TemplateError(#[from] XlsxError);

/// The data sheet's name: "Students" or "Stalls".
pub fn data_sheet_name(kind: Kind) -> &'static str {
    kind.title()
}

/// The data sheet's columns, in order: the required fields, then the optional ones.
pub fn columns(kind: Kind) -> Vec<Field> {
    Field::required(kind)
        .iter()
        .chain(Field::optional(kind))
        .copied()
        .collect()
}

/// A column's header as the template spells it: the field's name, with `*` when required
/// ("registration_no*").
pub fn header(kind: Kind, field: Field) -> String {
    if Field::required(kind).contains(&field) {
        format!("{}*", field.name())
    } else {
        field.name().to_owned()
    }
}

/// The headers of the data sheet, in order.
pub fn headers(kind: Kind) -> Vec<String> {
    columns(kind)
        .into_iter()
        .map(|field| header(kind, field))
        .collect()
}

/// What a column holds, for the instructions.
pub fn description(field: Field) -> String {
    let limit = |text: &str| match max_chars(field) {
        Some(max) => format!("{text} At most {max} characters."),
        None => text.to_owned(),
    };
    match field {
        Field::RegistrationNo => limit(
            "The student's registration number, unique in the file. A number already imported \
             updates that student. Kept as text, so leading zeros stay.",
        ),
        Field::Email => limit("The student's email address, unique in the file."),
        Field::FullName => limit("The student's full name."),
        Field::School => format!(
            "The school: its name as in the \"{SCHOOLS_SHEET}\" sheet (case does not matter), or \
             its id from that sheet."
        ),
        Field::DateOfBirth => format!(
            "Date of birth as YYYY-MM-DD or DD/MM/YYYY (a date cell works too). The student must \
             be at least {MIN_AGE_YEARS} on the day of the import and born on or after \
             {EARLIEST_BIRTH_DATE} (the app's first login refuses earlier dates)."
        ),
        Field::Pincode => "6 digits. Kept as text, so a leading zero stays.".to_owned(),
        Field::Phone => "10 digits; spaces, dashes and a +91, 91 or 0 prefix are dropped. Kept as \
                         text, so a leading zero stays."
            .to_owned(),
        Field::Address => limit("The postal address."),
        Field::ProgramName => limit("The programme or course."),
        Field::Batch => format!(
            "Graduation year, a whole number from {} to {}.",
            BATCH_YEARS.start(),
            BATCH_YEARS.end()
        ),
        Field::StallNumber => limit(
            "The stall's number or code, unique in the file. A number already imported updates \
             that stall. Kept as text, so leading zeros stay.",
        ),
        Field::StallName => limit("The stall's name."),
        Field::Description => limit("What the stall shows."),
        Field::Location => limit("Where the stall is."),
        Field::Event => "The event the stall is at: its event code (case does not matter) or its \
                         id. Leave it out to use the event chosen for the whole upload; the app \
                         cannot scan a stall that has no event."
            .to_owned(),
    }
}

/// An example value of a column, valid for the importer (the school's is the first school's
/// name, when there is one).
pub fn example(field: Field) -> &'static str {
    match field {
        Field::RegistrationNo => "2025001",
        Field::Email => "priya.sharma@example.com",
        Field::FullName => "Priya Sharma",
        Field::School => "School of Engineering",
        Field::DateOfBirth => "2005-05-15",
        Field::Pincode => "110001",
        Field::Phone => "9876543210",
        Field::Address => "12 MG Road, New Delhi",
        Field::ProgramName => "B.Tech Computer Science",
        Field::Batch => "2027",
        Field::StallNumber => "S-007",
        Field::StallName => "Robotics Club",
        Field::Description => "Line-following robots and drones",
        Field::Location => "Block A, Hall 2",
        Field::Event => "TECH-FEST-2026",
    }
}

/// Column widths in characters.
fn width(field: Field) -> f64 {
    match field {
        Field::RegistrationNo => 20.0,
        Field::Email => 30.0,
        Field::FullName => 25.0,
        Field::School => 38.0,
        Field::DateOfBirth => 16.0,
        Field::Pincode => 11.0,
        Field::Phone => 15.0,
        Field::Address => 40.0,
        Field::ProgramName => 25.0,
        Field::Batch => 10.0,
        Field::StallNumber => 16.0,
        Field::StallName => 30.0,
        Field::Description => 50.0,
        Field::Location => 25.0,
        Field::Event => 20.0,
    }
}

/// The upload template of `kind`: the data sheet first, then the instructions, then `schools`
/// (id and name, in the order given).
pub fn template_xlsx(kind: Kind, schools: &[(Uuid, String)]) -> Result<Vec<u8>, TemplateError> {
    let mut workbook = Workbook::new();
    data_sheet(workbook.add_worksheet(), kind, schools.len())?;
    instructions_sheet(workbook.add_worksheet(), kind, schools)?;
    schools_sheet(workbook.add_worksheet(), schools)?;
    Ok(workbook.save_to_buffer()?)
}

fn header_format() -> Format {
    Format::new().set_bold().set_background_color(0xD9D9D9)
}

fn data_sheet(sheet: &mut Worksheet, kind: Kind, schools: usize) -> Result<(), XlsxError> {
    sheet.set_name(data_sheet_name(kind))?;
    sheet.set_active(true);
    let bold = header_format();
    // Built-in format 49 is "@", Text: what Excel itself writes for a text column.
    let text = Format::new().set_num_format_index(49);
    let date = Format::new().set_num_format("yyyy-mm-dd");
    for (index, field) in columns(kind).into_iter().enumerate() {
        let column = u16::try_from(index).map_err(|_| XlsxError::RowColumnLimitError)?;
        sheet.write_string_with_format(0, column, header(kind, field), &bold)?;
        sheet.set_column_width(column, width(field))?;
        match field {
            Field::RegistrationNo | Field::Pincode | Field::Phone | Field::StallNumber => {
                sheet.set_column_format(column, &text)?;
            }
            Field::DateOfBirth => {
                sheet.set_column_format(column, &date)?;
            }
            Field::School if schools > 0 => {
                // A drop-down of the school names that still lets an id be typed.
                let last = u32::try_from(schools).unwrap_or(u32::MAX).saturating_add(1);
                let list = DataValidation::new()
                    .allow_list_formula(Formula::new(format!("={SCHOOLS_SHEET}!$A$2:$A${last}")))
                    .set_error_style(DataValidationErrorStyle::Information)
                    .set_error_title("Not a school name")?
                    .set_error_message(
                        "Use a name from the Schools sheet, or the school's id from that sheet.",
                    )?;
                sheet.add_data_validation(1, column, LAST_ROW, column, &list)?;
            }
            Field::Batch => {
                let years = DataValidation::new()
                    .allow_whole_number(DataValidationRule::Between(
                        *BATCH_YEARS.start(),
                        *BATCH_YEARS.end(),
                    ))
                    .set_error_title("Not a batch year")?
                    .set_error_message(format!(
                        "The batch is a year from {} to {}.",
                        BATCH_YEARS.start(),
                        BATCH_YEARS.end()
                    ))?;
                sheet.add_data_validation(1, column, LAST_ROW, column, &years)?;
            }
            _ => {}
        }
    }
    sheet.set_freeze_panes(1, 0)?;
    Ok(())
}

fn instructions_sheet(
    sheet: &mut Worksheet,
    kind: Kind,
    schools: &[(Uuid, String)],
) -> Result<(), XlsxError> {
    sheet.set_name(INSTRUCTIONS_SHEET)?;
    let title = Format::new().set_bold().set_font_size(14);
    let heading = Format::new().set_bold().set_font_size(12);
    let wrap = Format::new().set_text_wrap();
    let bold = header_format();
    let data = data_sheet_name(kind);
    let row_word = match kind {
        Kind::Students => "student",
        Kind::Stalls => "stall",
    };

    sheet.set_column_width(0, 20)?;
    sheet.set_column_width(1, 11)?;
    sheet.set_column_width(2, 70)?;
    sheet.set_column_width(3, 30)?;

    sheet.write_string_with_format(0, 0, format!("{data} upload template"), &title)?;
    sheet.write_string_with_format(2, 0, "How to fill it in", &heading)?;
    let mut steps = vec![
        format!(
            "Enter one {row_word} per row in the \"{data}\" sheet (the first sheet), from row 2, \
             below the headers."
        ),
        "Keep the header row: columns marked * are required; optional columns may be left empty \
         or deleted. Other columns are ignored."
            .to_owned(),
        format!(
            "Every row below the headers is imported: do not add titles, notes or example rows to \
             the \"{data}\" sheet. The examples below are only here."
        ),
        format!(
            "School: a name from the \"{SCHOOLS_SHEET}\" sheet (the cell offers a list) or the \
             school's id from that sheet."
        ),
    ];
    if kind == Kind::Students {
        steps.push(format!(
            "Dates: YYYY-MM-DD (2005-05-15) or DD/MM/YYYY (15/05/2005). Students must be at least \
             {MIN_AGE_YEARS} years old. Phone: 10 digits. Pincode: 6 digits. Batch: a year from \
             {} to {}.",
            BATCH_YEARS.start(),
            BATCH_YEARS.end()
        ));
        steps.push(
            "New students set their password through the app's reset, with their date of birth \
             and pincode: check both carefully."
                .to_owned(),
        );
    }
    steps.push(
        "When pasting from another file, paste values only, so that the text columns keep \
         leading zeros."
            .to_owned(),
    );
    steps.push(
        "Rows with a problem are reported with their row number and the reason; the other rows \
         are imported."
            .to_owned(),
    );
    steps.push(
        "Save as .xlsx (.xls, .ods and CSV UTF-8 files are accepted too) and upload it.".to_owned(),
    );
    let mut row = 3;
    for (number, step) in steps.iter().enumerate() {
        sheet.write_string(row, 0, format!("{}.", number + 1))?;
        sheet.write_string_with_format(row, 1, step, &wrap)?;
        row += 1;
    }

    row += 1;
    sheet.write_string_with_format(row, 0, "Columns", &heading)?;
    row += 1;
    for (column, text) in ["Column", "Required", "What to enter", "Example"]
        .into_iter()
        .enumerate()
    {
        sheet.write_string_with_format(row, column as u16, text, &bold)?;
    }
    row += 1;
    let school_example = schools
        .first()
        .map(|(_, name)| name.as_str())
        .unwrap_or(example(Field::School));
    for field in columns(kind) {
        let required = Field::required(kind).contains(&field);
        sheet.write_string(row, 0, header(kind, field))?;
        sheet.write_string(row, 1, if required { "required" } else { "optional" })?;
        sheet.write_string_with_format(row, 2, description(field), &wrap)?;
        let example = match field {
            Field::School => school_example,
            other => example(other),
        };
        sheet.write_string(row, 3, example)?;
        row += 1;
    }
    Ok(())
}

fn schools_sheet(sheet: &mut Worksheet, schools: &[(Uuid, String)]) -> Result<(), XlsxError> {
    sheet.set_name(SCHOOLS_SHEET)?;
    let bold = header_format();
    sheet.write_string_with_format(0, 0, "School name", &bold)?;
    sheet.write_string_with_format(0, 1, "School id", &bold)?;
    sheet.set_column_width(0, 40)?;
    sheet.set_column_width(1, 38)?;
    if schools.is_empty() {
        sheet.write_string(
            1,
            0,
            "No schools yet: add them in the app before importing.",
        )?;
    }
    for (index, (id, name)) in schools.iter().enumerate() {
        let row = u32::try_from(index + 1).map_err(|_| XlsxError::RowColumnLimitError)?;
        sheet.write_string(row, 0, name)?;
        sheet.write_string(row, 1, id.to_string())?;
    }
    sheet.set_freeze_panes(1, 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};

    use calamine::{Reader, Xlsx};
    use chrono::NaiveDate;

    use super::*;
    use crate::spreadsheet::{
        headers::field_for, read_records, FileError, Format as FileFormat, Limits, Records,
    };

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
    }

    fn schools() -> Vec<(Uuid, String)> {
        vec![
            (
                Uuid::parse_str("0b6f1a8e-1c2d-4e3f-9a0b-1c2d3e4f5a6b").unwrap(),
                "School of Engineering".to_owned(),
            ),
            (
                Uuid::parse_str("1c7a2b9f-2d3e-4f50-8b1c-2d3e4f5a6b7c").unwrap(),
                "School of Design".to_owned(),
            ),
        ]
    }

    fn sheet_rows(bytes: &[u8], name: &str) -> Vec<Vec<String>> {
        let mut workbook: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).unwrap();
        let range = workbook.worksheet_range(name).unwrap();
        range
            .rows()
            .map(|row| row.iter().map(|cell| cell.to_string()).collect())
            .collect()
    }

    fn zip_part(bytes: &[u8], name: &str) -> String {
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let mut text = String::new();
        archive
            .by_name(name)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[test]
    fn the_data_sheet_comes_first_then_instructions_then_schools() {
        for kind in Kind::ALL {
            let bytes = template_xlsx(kind, &schools()).unwrap();
            let workbook: Xlsx<_> = Xlsx::new(Cursor::new(bytes.as_slice())).unwrap();
            assert_eq!(
                workbook.sheet_names(),
                vec![kind.title(), INSTRUCTIONS_SHEET, SCHOOLS_SHEET],
                "{kind}"
            );
        }
    }

    #[test]
    fn the_importer_recognises_every_header_and_finds_no_rows() {
        for kind in Kind::ALL {
            for schools in [schools(), Vec::new()] {
                let bytes = template_xlsx(kind, &schools).unwrap();
                let parsed =
                    read_records(&bytes, FileFormat::Xlsx, kind, &Limits::default(), today())
                        .unwrap_or_else(|e: FileError| panic!("{kind}: {e}"));
                assert_eq!(parsed.sheet.as_deref(), Some(kind.title()));
                assert_eq!(parsed.header_row, 1);
                assert!(
                    parsed.ignored_columns.is_empty(),
                    "{kind}: {:?}",
                    parsed.ignored_columns
                );
                assert_eq!(parsed.rows_seen, 0);
                assert!(parsed.records.is_empty());
                assert!(parsed.rejected.is_empty());
                assert_eq!(parsed.records, Records::new(kind));
            }
        }
    }

    #[test]
    fn headers_are_the_field_names_with_a_star_on_the_required_ones() {
        let bytes = template_xlsx(Kind::Students, &[]).unwrap();
        let rows = sheet_rows(&bytes, "Students");
        assert_eq!(rows.len(), 1, "only the header row: {rows:?}");
        assert_eq!(
            rows[0],
            [
                "registration_no*",
                "full_name*",
                "school*",
                "date_of_birth*",
                "pincode*",
                "email",
                "phone",
                "address",
                "program_name",
                "batch"
            ]
        );
        let bytes = template_xlsx(Kind::Stalls, &[]).unwrap();
        let rows = sheet_rows(&bytes, "Stalls");
        assert_eq!(
            rows,
            [[
                "stall_number*",
                "stall_name*",
                "school*",
                "description",
                "location",
                "event"
            ]]
        );
        for kind in Kind::ALL {
            for field in columns(kind) {
                assert_eq!(field_for(kind, &header(kind, field)), Some(field), "{kind}");
            }
        }
    }

    #[test]
    fn the_examples_in_the_instructions_import_cleanly() {
        for kind in Kind::ALL {
            let mut csv = csv::Writer::from_writer(Vec::new());
            csv.write_record(headers(kind)).unwrap();
            csv.write_record(columns(kind).into_iter().map(example))
                .unwrap();
            let bytes = csv.into_inner().unwrap();
            let parsed =
                read_records(&bytes, FileFormat::Csv, kind, &Limits::default(), today()).unwrap();
            assert!(parsed.rejected.is_empty(), "{kind}: {:?}", parsed.rejected);
            assert_eq!(parsed.records.len(), 1, "{kind}");
        }
    }

    #[test]
    fn instructions_explain_every_column_and_schools_are_listed() {
        for kind in Kind::ALL {
            let bytes = template_xlsx(kind, &schools()).unwrap();
            let instructions = sheet_rows(&bytes, INSTRUCTIONS_SHEET);
            for field in columns(kind) {
                let row = instructions
                    .iter()
                    .find(|row| row.first().map(String::as_str) == Some(&header(kind, field)))
                    .unwrap_or_else(|| panic!("{kind}: no row for {field}"));
                let required = Field::required(kind).contains(&field);
                assert_eq!(row[1], if required { "required" } else { "optional" });
                assert!(!row[2].is_empty());
                assert!(!row[3].is_empty());
            }
            let text = instructions.concat().join(" ");
            assert!(text.contains("School of Engineering"), "{text}");
            if kind == Kind::Students {
                for needle in [
                    "YYYY-MM-DD",
                    "DD/MM/YYYY",
                    "10 digits",
                    "6 digits",
                    "2000",
                    "2035",
                    "at least 15",
                ] {
                    assert!(text.contains(needle), "{needle}: {text}");
                }
            }

            let listed = sheet_rows(&bytes, SCHOOLS_SHEET);
            assert_eq!(listed[0], ["School name", "School id"]);
            assert_eq!(
                listed[1..],
                schools()
                    .iter()
                    .map(|(id, name)| vec![name.clone(), id.to_string()])
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn digit_columns_are_text_and_the_birth_date_a_date() {
        let bytes = template_xlsx(Kind::Students, &schools()).unwrap();
        let sheet = zip_part(&bytes, "xl/worksheets/sheet1.xml");
        let styles = zip_part(&bytes, "xl/styles.xml");
        // The `xf` elements of `cellXfs`, in order: a column's `style` indexes them.
        let cell_xfs = styles
            .split("<cellXfs")
            .nth(1)
            .and_then(|rest| rest.split("</cellXfs>").next())
            .unwrap();
        let xfs: Vec<&str> = cell_xfs.split("<xf ").skip(1).collect();
        let number_format_of = |column: usize| -> String {
            let tag = format!("<col min=\"{column}\" max=\"{column}\"");
            let col = sheet
                .split(&tag)
                .nth(1)
                .and_then(|rest| rest.split("/>").next())
                .unwrap_or_else(|| panic!("no <col> for column {column}: {sheet}"));
            let style: usize = col
                .split("style=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("column {column} has no style"))
                .parse()
                .unwrap();
            let id = xfs[style]
                .split("numFmtId=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap()
                .to_owned();
            if id == "49" {
                return "@".to_owned();
            }
            styles
                .split(&format!("<numFmt numFmtId=\"{id}\" formatCode=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no format {id}"))
                .to_owned()
        };
        let position = |field: Field| {
            columns(Kind::Students)
                .iter()
                .position(|f| *f == field)
                .unwrap()
                + 1
        };
        for field in [Field::RegistrationNo, Field::Pincode, Field::Phone] {
            assert_eq!(number_format_of(position(field)), "@", "{field}");
        }
        assert_eq!(number_format_of(position(Field::DateOfBirth)), "yyyy-mm-dd");
        // The school column offers the Schools sheet's names.
        assert!(sheet.contains("Schools!$A$2:$A$3"), "{sheet}");

        let bytes = template_xlsx(Kind::Stalls, &[]).unwrap();
        let sheet = zip_part(&bytes, "xl/worksheets/sheet1.xml");
        assert!(sheet.contains("<col min=\"1\" max=\"1\""), "{sheet}");
        assert!(!sheet.contains("Schools!"), "{sheet}");
    }

    #[test]
    fn odd_school_names_are_written_as_text() {
        let schools = vec![(Uuid::nil(), "=HYPERLINK(\"http://x\")".to_owned())];
        let bytes = template_xlsx(Kind::Stalls, &schools).unwrap();
        let listed = sheet_rows(&bytes, SCHOOLS_SHEET);
        assert_eq!(listed[1][0], "=HYPERLINK(\"http://x\")");
        let sheet = zip_part(&bytes, "xl/worksheets/sheet3.xml");
        assert!(!sheet.contains("<f>"), "{sheet}");
    }
}
