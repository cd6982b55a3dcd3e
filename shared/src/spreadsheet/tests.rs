//! Whole-file tests: fixtures are built in memory (rust_xlsxwriter for ordinary workbooks, the
//! zip and cfb crates for hand-made and hostile ones).

use std::io::{Cursor, Write};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rust_xlsxwriter::{ExcelDateTime, Format as CellFormat, Formula, Workbook};
use zip::write::SimpleFileOptions;

use super::values::Optional;
use super::*;

const TEMPLATE_HEADERS: [&str; 10] = [
    "registration_no*",
    "email",
    "full_name*",
    "school_id*",
    "date_of_birth*",
    "pincode*",
    "phone",
    "address",
    "program_name",
    "batch",
];
const SCHOOL: &str = "123e4567-e89b-12d3-a456-426614174000";

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 1).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// A cell to write into a fixture.
#[derive(Clone)]
enum V {
    S(&'static str),
    Owned(String),
    N(f64),
    D(u16, u8, u8),
    Formula(&'static str, &'static str),
    Rich(&'static [&'static str]),
    Blank,
}

use V::{Blank, N, S};

/// Writes `rows` (each starting at column A, sheet row `first_row`, 0-based) into a sheet.
fn write_rows(sheet: &mut rust_xlsxwriter::Worksheet, first_row: u32, rows: &[Vec<V>]) {
    let date_format = CellFormat::new().set_num_format("dd/mm/yyyy");
    let bold = CellFormat::new().set_bold();
    for (r, row) in rows.iter().enumerate() {
        let r = first_row + r as u32;
        for (c, value) in row.iter().enumerate() {
            let c = c as u16;
            match value {
                S(text) => {
                    sheet.write_string(r, c, *text).unwrap();
                }
                V::Owned(text) => {
                    sheet.write_string(r, c, text.as_str()).unwrap();
                }
                N(number) => {
                    sheet.write_number(r, c, *number).unwrap();
                }
                V::D(y, m, d) => {
                    let dt = ExcelDateTime::from_ymd(*y, *m, *d).unwrap();
                    sheet
                        .write_datetime_with_format(r, c, &dt, &date_format)
                        .unwrap();
                }
                V::Formula(formula, result) => {
                    sheet
                        .write_formula(r, c, Formula::new(*formula).set_result(*result))
                        .unwrap();
                }
                V::Rich(parts) => {
                    let plain = CellFormat::new();
                    let segments: Vec<(&CellFormat, &str)> = parts
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (if i % 2 == 0 { &bold } else { &plain }, *p))
                        .collect();
                    sheet.write_rich_string(r, c, &segments).unwrap();
                }
                Blank => {}
            }
        }
    }
}

/// A workbook of named sheets, each a list of rows starting at A1.
fn xlsx(sheets: &[(&str, Vec<Vec<V>>)]) -> Vec<u8> {
    let mut workbook = Workbook::new();
    for (name, rows) in sheets {
        let sheet = workbook.add_worksheet();
        sheet.set_name(*name).unwrap();
        write_rows(sheet, 0, rows);
    }
    workbook.save_to_buffer().unwrap()
}

fn headers(names: &[&'static str]) -> Vec<V> {
    names.iter().map(|n| S(n)).collect()
}

/// A valid template row: registration number, email, name, then the rest as the template has
/// them.
fn student(reg: f64, email: &'static str, name: &'static str) -> Vec<V> {
    vec![
        N(reg),
        S(email),
        S(name),
        S(SCHOOL),
        S("2005-05-15"),
        N(110001.0),
        N(9876543210.0),
        S("New Delhi, India"),
        S("B.Tech Computer Science"),
        N(2025.0),
    ]
}

fn read(bytes: &[u8], format: Format, kind: Kind) -> Result<ParsedFile, FileError> {
    read_records(bytes, format, kind, &Limits::default(), today())
}

fn students(parsed: &ParsedFile) -> &[(u32, StudentRecord)] {
    match &parsed.records {
        Records::Students(rows) => rows,
        Records::Stalls(_) => panic!("expected students"),
    }
}

fn stalls(parsed: &ParsedFile) -> &[(u32, StallRecord)] {
    match &parsed.records {
        Records::Stalls(rows) => rows,
        Records::Students(_) => panic!("expected stalls"),
    }
}

/// (row, column, reason) of each rejection, for compact assertions.
fn errors(parsed: &ParsedFile) -> Vec<(u32, String, String)> {
    parsed
        .rejected
        .iter()
        .map(|e| (e.row, e.column.to_string(), e.reason.to_string()))
        .collect()
}

fn one_student_sheet(row: Vec<V>) -> ParsedFile {
    let bytes = xlsx(&[("Students", vec![headers(&TEMPLATE_HEADERS), row])]);
    read(&bytes, Format::Xlsx, Kind::Students).unwrap()
}

#[test]
fn formats_from_file_names() {
    assert_eq!(
        Format::from_file_name("imports/students/a.XLSX"),
        Some(Format::Xlsx)
    );
    assert_eq!(
        Format::from_file_name("list.final.xlsm"),
        Some(Format::Xlsm)
    );
    assert_eq!(Format::from_file_name("x.Xlsb"), Some(Format::Xlsb));
    assert_eq!(Format::from_file_name("old.xls"), Some(Format::Xls));
    assert_eq!(Format::from_file_name("calc.ods"), Some(Format::Ods));
    assert_eq!(Format::from_file_name("export.CSV"), Some(Format::Csv));
    assert_eq!(Format::from_file_name("notes.txt"), None);
    assert_eq!(Format::from_file_name("xlsx"), None);
    assert_eq!(Format::from_file_name("imports/students/"), None);
}

#[test]
fn the_apps_template_with_instructions_first() {
    let instructions = vec![
        vec![S("STUDENT BULK UPLOAD TEMPLATE")],
        vec![],
        vec![S("Instructions:")],
        vec![S("1. Fill the \"Students\" sheet with student data")],
        vec![S("* registration_no: Unique student registration number")],
    ];
    let data = vec![
        headers(&TEMPLATE_HEADERS),
        student(2025001.0, "john.doe@example.com", "John Doe"),
        student(2025002.0, "jane.smith@example.com", "Jane Smith"),
        vec![
            N(2025003.0),
            S("robert.johnson@example.com"),
            S("Robert Johnson"),
            S(SCHOOL),
            S("2004-12-10"),
            N(110003.0),
            S(""),
            S(""),
            S(""),
            S(""),
        ],
    ];
    let bytes = xlsx(&[("Instructions", instructions), ("Students", data)]);
    let parsed = read(&bytes, Format::Xlsx, Kind::Students).unwrap();
    assert_eq!(parsed.sheet.as_deref(), Some("Students"));
    assert_eq!(parsed.header_row, 1);
    assert_eq!(parsed.rows_seen, 3);
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let rows = students(&parsed);
    assert_eq!(rows.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [2, 3, 4]);
    let (_, john) = &rows[0];
    assert_eq!(john.registration_no.as_str(), "2025001");
    assert_eq!(john.email.value().unwrap().as_str(), "john.doe@example.com");
    assert_eq!(john.full_name, "John Doe");
    assert_eq!(john.school, SchoolRef::parse(SCHOOL));
    assert_eq!(john.date_of_birth, date(2005, 5, 15));
    assert_eq!(john.pincode.as_str(), "110001");
    assert_eq!(john.phone.value().unwrap().as_str(), "9876543210");
    assert_eq!(john.address.as_deref(), Some("New Delhi, India"));
    assert_eq!(
        john.program_name.as_deref(),
        Some("B.Tech Computer Science")
    );
    assert_eq!(john.batch, Optional::Value(2025));
    let (_, robert) = &rows[2];
    assert_eq!(robert.phone, Optional::Blank);
    assert_eq!(robert.address, Optional::Blank);
    assert_eq!(robert.program_name, Optional::Blank);
    assert_eq!(robert.batch, Optional::Blank);
}

#[test]
fn title_row_above_headers_and_synonyms() {
    let rows = vec![
        vec![S("SGT University — students of 2025")],
        vec![],
        vec![
            S("S. No."),
            S("Reg. No."),
            S("Student Name"),
            S("School Name"),
            S("DOB"),
            S("Pin Code"),
            S("Mobile Number"),
            S("E-mail"),
            S("Programme"),
            S("Batch Year"),
            S("Father's Name"),
        ],
        vec![
            N(1.0),
            S("2021CSE001"),
            S("  Asha   Verma "),
            S("School of Engineering"),
            V::D(2004, 2, 29),
            S("122505"),
            S("+91 98765-43210"),
            S("Asha.Verma@SGTUniversity.org"),
            S("B.Tech"),
            N(2025.0),
            S("R. Verma"),
        ],
    ];
    let bytes = xlsx(&[("Sheet1", rows)]);
    let parsed = read(&bytes, Format::Xlsx, Kind::Students).unwrap();
    assert_eq!(parsed.header_row, 3);
    assert_eq!(parsed.ignored_columns, ["S. No.", "Father's Name"]);
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let (row, asha) = &students(&parsed)[0];
    assert_eq!(*row, 4);
    assert_eq!(asha.registration_no.as_str(), "2021CSE001");
    assert_eq!(asha.full_name, "Asha Verma");
    assert_eq!(
        asha.school,
        SchoolRef::Name("School of Engineering".to_owned())
    );
    assert_eq!(asha.date_of_birth, date(2004, 2, 29));
    assert_eq!(asha.phone.value().unwrap().as_str(), "9876543210");
    assert_eq!(
        asha.email.value().unwrap().as_str(),
        "asha.verma@sgtuniversity.org"
    );
    assert_eq!(asha.program_name.as_deref(), Some("B.Tech"));
}

#[test]
fn cells_as_a_person_meant_them() {
    let rows = vec![
        headers(&TEMPLATE_HEADERS),
        // Leading zeros of text cells, a numeric pincode, a date cell, a formula's cached value.
        vec![
            S("007"),
            Blank,
            V::Rich(&["Ravi ", "Kumar"]),
            S(SCHOOL),
            V::D(2003, 1, 31),
            S("011001"),
            V::Formula("=\"98765\"&\"43210\"", "9876543210"),
            S("   "),
            Blank,
            V::Formula("=2020+5", "2025"),
        ],
        // Text dates, day first.
        vec![
            N(2021001.0),
            Blank,
            S("Meena"),
            S(SCHOOL),
            S("15/05/2005"),
            N(110001.0),
        ],
        vec![
            N(2021002.0),
            Blank,
            S("Kiran"),
            S(SCHOOL),
            S("15-05-2005"),
            N(110001.0),
        ],
    ];
    let bytes = xlsx(&[("Students", rows)]);
    let parsed = read(&bytes, Format::Xlsx, Kind::Students).unwrap();
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let rows = students(&parsed);
    let ravi = &rows[0].1;
    assert_eq!(ravi.registration_no.as_str(), "007");
    assert_eq!(ravi.full_name, "Ravi Kumar");
    assert_eq!(ravi.email, Optional::Blank);
    assert_eq!(ravi.address, Optional::Blank, "a cell of spaces is empty");
    assert_eq!(ravi.date_of_birth, date(2003, 1, 31));
    assert_eq!(ravi.pincode.as_str(), "011001");
    assert_eq!(ravi.phone.value().unwrap().as_str(), "9876543210");
    assert_eq!(ravi.batch, Optional::Value(2025));
    assert_eq!(rows[1].1.registration_no.as_str(), "2021001");
    assert_eq!(rows[1].1.date_of_birth, date(2005, 5, 15));
    assert_eq!(rows[2].1.date_of_birth, date(2005, 5, 15));
}

#[test]
fn blank_rows_are_skipped_and_row_numbers_kept() {
    let rows = vec![
        headers(&TEMPLATE_HEADERS),
        student(1.0, "a@example.com", "A"),
        vec![],
        vec![S("  "), Blank, S("")],
        vec![],
        student(2.0, "b@example.com", "B"),
    ];
    let bytes = xlsx(&[("Students", rows)]);
    let parsed = read(&bytes, Format::Xlsx, Kind::Students).unwrap();
    assert_eq!(parsed.rows_seen, 2);
    let numbers: Vec<u32> = students(&parsed).iter().map(|(r, _)| *r).collect();
    assert_eq!(numbers, [2, 6]);
}

#[test]
fn every_rule_rejects_its_row_with_row_and_column() {
    let bad = |column: usize, value: V| {
        let mut row = student(5.0, "e@example.com", "E");
        row[column] = value;
        errors(&one_student_sheet(row))
    };
    let case = |found: Vec<(u32, String, String)>, column: &str, reason: &str| {
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, 2);
        assert_eq!(found[0].1, column);
        assert!(
            found[0].2.contains(reason),
            "{:?} should say {reason}",
            found[0]
        );
    };
    case(bad(0, Blank), "registration_no*", "missing");
    case(bad(2, S("  ")), "full_name*", "missing");
    case(bad(3, Blank), "school_id*", "missing");
    case(bad(4, Blank), "date_of_birth*", "missing");
    case(bad(5, Blank), "pincode*", "missing");
    case(bad(1, S("not-an-email")), "email", "not an email address");
    case(bad(4, S("2005/15/05")), "date_of_birth*", "not a date");
    case(bad(4, S("31/02/2005")), "date_of_birth*", "not a date");
    case(bad(4, S("2012-01-01")), "date_of_birth*", "at least 15");
    case(bad(4, N(38487.0)), "date_of_birth*", "a number, not a date");
    case(bad(5, N(11001.0)), "pincode*", "6-digit pincode");
    case(bad(5, S("1100011")), "pincode*", "6-digit pincode");
    case(bad(6, N(987654321.0)), "phone", "10-digit phone");
    case(bad(6, S("+44 7911 123456")), "phone", "10-digit phone");
    case(bad(9, N(1999.0)), "batch", "between 2000 and 2035");
    case(bad(9, N(2036.0)), "batch", "between 2000 and 2035");
    case(bad(9, S("2025-26")), "batch", "between 2000 and 2035");
    case(
        bad(0, V::Owned("R".repeat(51))),
        "registration_no*",
        "too long (51 characters, at most 50)",
    );
    case(
        bad(1, V::Owned(format!("{}@example.com", "e".repeat(90)))),
        "email",
        "too long (102 characters, at most 100)",
    );
    case(
        bad(2, V::Owned("N".repeat(101))),
        "full_name*",
        "too long (101 characters, at most 100)",
    );
    case(
        bad(8, V::Owned("P".repeat(101))),
        "program_name",
        "too long (101 characters, at most 100)",
    );
    // Several problems in one row: one error each, the record withheld.
    let mut row = student(5.0, "bad", "E");
    row[5] = S("12");
    let parsed = one_student_sheet(row);
    assert_eq!(errors(&parsed).len(), 2);
    assert!(students(&parsed).is_empty());
    assert_eq!(parsed.rows_seen, 1);
    assert_eq!(parsed.rejected_rows(), [2]);
}

#[test]
fn duplicates_name_the_first_row() {
    let rows = vec![
        headers(&TEMPLATE_HEADERS),
        student(1.0, "a@example.com", "A"),
        {
            let mut row = student(2.0, "b@example.com", "B");
            row[0] = S("r-7");
            row
        },
        {
            let mut row = student(3.0, "A@Example.com", "C");
            row[0] = S(" R-7 ");
            row
        },
        student(1.0, "d@example.com", "D"),
    ];
    let bytes = xlsx(&[("Students", rows)]);
    let parsed = read(&bytes, Format::Xlsx, Kind::Students).unwrap();
    assert_eq!(
        errors(&parsed),
        [
            (4, "registration_no*".into(), "duplicate of row 3".into()),
            (4, "email".into(), "duplicate of row 2".into()),
            (5, "registration_no*".into(), "duplicate of row 2".into()),
        ]
    );
    assert_eq!(students(&parsed).len(), 2);
}

#[test]
fn missing_required_columns_name_them_and_the_headers_found() {
    let rows = vec![
        vec![
            S("registration_no"),
            S("email"),
            S("full_name"),
            S("school_id"),
        ],
        vec![N(1.0), S("a@example.com"), S("A"), S(SCHOOL)],
    ];
    let bytes = xlsx(&[
        ("Instructions", vec![vec![S("Read me")]]),
        ("Students", rows),
    ]);
    let error = read(&bytes, Format::Xlsx, Kind::Students).unwrap_err();
    assert_eq!(
        error,
        FileError::MissingColumns {
            sheet: Some("Students".into()),
            row: Some(1),
            missing: vec!["date_of_birth", "pincode"],
            found: vec![
                "registration_no".into(),
                "email".into(),
                "full_name".into(),
                "school_id".into()
            ],
        }
    );
    let message = error.to_string();
    assert!(
        message.starts_with("missing required columns: date_of_birth, pincode"),
        "{message}"
    );
    assert!(
        message.contains("sheet \"Students\", row 1 has: registration_no, email"),
        "{message}"
    );
    // A workbook with no text at all.
    let bytes = xlsx(&[("Sheet1", vec![])]);
    let error = read(&bytes, Format::Xlsx, Kind::Students).unwrap_err();
    assert!(
        matches!(error, FileError::MissingColumns { row: None, .. }),
        "{error:?}"
    );
}

#[test]
fn stalls_by_number_name_and_school() {
    let rows = vec![
        vec![
            S("Stall No*"),
            S("Stall Name*"),
            S("School"),
            S("Description"),
            S("Location"),
        ],
        vec![
            N(12.0),
            S("Robotics  Lab"),
            S("School of Engineering"),
            Blank,
            S("Hall A"),
        ],
        vec![
            S("A-01"),
            S("Food Court"),
            S(SCHOOL),
            S("Snacks\nand tea"),
            Blank,
        ],
        vec![S("a-01"), S("Again"), S(SCHOOL), Blank, Blank],
        vec![
            V::Owned("9".repeat(21)),
            V::Owned("x".repeat(201)),
            Blank,
            Blank,
            V::Owned("L".repeat(101)),
        ],
    ];
    let bytes = xlsx(&[("Stalls", rows)]);
    let parsed = read(&bytes, Format::Xlsx, Kind::Stalls).unwrap();
    let rows = stalls(&parsed);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].1.stall_number.as_str(), "12");
    assert_eq!(rows[0].1.stall_name, "Robotics Lab");
    assert_eq!(rows[0].1.description, Optional::Blank);
    assert_eq!(rows[0].1.location.as_deref(), Some("Hall A"));
    assert_eq!(rows[1].1.description.as_deref(), Some("Snacks\nand tea"));
    assert_eq!(
        errors(&parsed),
        [
            (4, "Stall No*".into(), "duplicate of row 3".into()),
            (
                5,
                "Stall No*".into(),
                "too long (21 characters, at most 20)".into()
            ),
            (
                5,
                "Stall Name*".into(),
                "too long (201 characters, at most 200)".into()
            ),
            (5, "School".into(), "missing".into()),
            (
                5,
                "Location".into(),
                "too long (101 characters, at most 100)".into()
            ),
        ]
    );
}

const CSV: &str = "registration_no*,email,full_name*,school_id*,date_of_birth*,pincode*,phone\n\
2025001,John.Doe@Example.com,John Doe,123e4567-e89b-12d3-a456-426614174000,15/05/2005,110001,098765 43210\n\
\n\
,,,,,,\n\
007,,\"Rao, Priya\",School of Law,2005-05-15,011001,\n";

#[test]
fn csv_with_and_without_bom() {
    for bytes in [
        CSV.as_bytes().to_vec(),
        [b"\xEF\xBB\xBF".as_slice(), CSV.as_bytes()].concat(),
    ] {
        let parsed = read(&bytes, Format::Csv, Kind::Students).unwrap();
        assert_eq!(parsed.sheet, None);
        assert_eq!(parsed.format, Format::Csv);
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
        let rows = students(&parsed);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, 2);
        assert_eq!(
            rows[0].1.email.value().unwrap().as_str(),
            "john.doe@example.com"
        );
        assert_eq!(rows[0].1.phone.value().unwrap().as_str(), "9876543210");
        assert_eq!(rows[1].0, 5, "the CSV line number");
        assert_eq!(rows[1].1.registration_no.as_str(), "007");
        assert_eq!(rows[1].1.full_name, "Rao, Priya");
        assert_eq!(rows[1].1.pincode.as_str(), "011001");
    }
    let semicolons = CSV.replace(',', ";").replace("\"Rao; Priya\"", "Rao Priya");
    let parsed = read(semicolons.as_bytes(), Format::Csv, Kind::Students).unwrap();
    assert_eq!(students(&parsed).len(), 2);
}

#[test]
fn csv_not_utf8_is_refused() {
    let mut bytes = CSV.as_bytes().to_vec();
    bytes.extend_from_slice(b"2025009,,Jos\xE9,School of Law,2005-05-15,110001,\n");
    let error = read(&bytes, Format::Csv, Kind::Students).unwrap_err();
    assert_eq!(error, FileError::NotUtf8 { line: 6 });
    assert_eq!(
        error.to_string(),
        "not UTF-8 (line 6): save the file as \"CSV UTF-8\" and upload again"
    );
    let utf16 = [0xFF, 0xFE, b'r', 0, b'e', 0];
    assert!(matches!(
        read(&utf16, Format::Csv, Kind::Students),
        Err(FileError::NotUtf8 { .. })
    ));
}

#[test]
fn empty_and_oversized_files() {
    assert_eq!(
        read(b"", Format::Xlsx, Kind::Students),
        Err(FileError::Empty)
    );
    let limits = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    let error = read_records(&[b'x'; 11], Format::Csv, Kind::Students, &limits, today());
    assert_eq!(error, Err(FileError::TooLarge { size: 11, max: 10 }));
}

#[test]
fn not_a_spreadsheet() {
    let random: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (bytes, what) in [
        (random.clone(), "not in a format we recognise"),
        (
            b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj".to_vec(),
            "a PDF document",
        ),
        (
            b"<html><body><table><tr><td>1</td></tr></table>".to_vec(),
            "a web page",
        ),
        (b"registration_no,full_name\n1,A\n".to_vec(), "plain text"),
    ] {
        let error = read(&bytes, Format::Xlsx, Kind::Students).unwrap_err();
        match &error {
            FileError::NotSpreadsheet { what: found } => assert!(found.contains(what), "{found}"),
            other => panic!("{other:?}"),
        }
        assert!(error.to_string().starts_with("not a spreadsheet: "));
    }
    // A zip that is no workbook.
    let error = read(
        &zip_of(&[("notes.txt", b"hello")]),
        Format::Xlsx,
        Kind::Students,
    );
    assert!(
        matches!(error, Err(FileError::NotSpreadsheet { .. })),
        "{error:?}"
    );
}

#[test]
fn truncated_xlsx() {
    let bytes = xlsx(&[("Students", vec![headers(&TEMPLATE_HEADERS)])]);
    for cut in [bytes.len() / 2, bytes.len() - 10, 30] {
        let error = read(&bytes[..cut], Format::Xlsx, Kind::Students).unwrap_err();
        assert!(
            matches!(error, FileError::Damaged { format: "xlsx", .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("damaged or incomplete"),
            "{error}"
        );
    }
}

#[test]
fn password_protected() {
    // What Excel writes for a password-protected .xlsx: a compound file holding the package.
    let mut file = cfb::CompoundFile::create(Cursor::new(Vec::new())).unwrap();
    file.create_stream("EncryptionInfo")
        .unwrap()
        .write_all(&[4, 0, 4, 0])
        .unwrap();
    file.create_stream("EncryptedPackage")
        .unwrap()
        .write_all(&[0; 512])
        .unwrap();
    let bytes = file.into_inner().into_inner();
    for format in [Format::Xlsx, Format::Xls, Format::Csv] {
        let error = read(&bytes, format, Kind::Students).unwrap_err();
        assert_eq!(error, FileError::PasswordProtected, "{format}");
    }
    assert_eq!(
        FileError::PasswordProtected.to_string(),
        "password protected: remove the password and upload again"
    );
    // Only the compound file's magic bytes, named .xlsx.
    let mut fake = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    fake.extend_from_slice(&[0u8; 600]);
    assert_eq!(
        read(&fake, Format::Xlsx, Kind::Students),
        Err(FileError::PasswordProtected)
    );
    // The same named .xls is just damaged.
    assert!(matches!(
        read(&fake, Format::Xls, Kind::Students),
        Err(FileError::Damaged { format: "xls", .. })
    ));
}

fn zip_of(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in parts {
        writer.start_file(*name, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn zip_bomb() {
    let limits = Limits {
        max_unpacked_bytes: 1024 * 1024,
        ..Limits::default()
    };
    let zeros = vec![0u8; 4 * 1024 * 1024];
    let bytes = zip_of(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("xl/worksheets/sheet1.xml", &zeros),
    ]);
    assert!(
        bytes.len() < 64 * 1024,
        "the bomb is small: {}",
        bytes.len()
    );
    let error = read_records(&bytes, Format::Xlsx, Kind::Students, &limits, today()).unwrap_err();
    assert!(
        matches!(error, FileError::TooLargeUnpacked { .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), "zip_bomb");
    // Too many parts.
    let limits = Limits {
        max_zip_entries: 5,
        ..Limits::default()
    };
    let names: Vec<String> = (0..6).map(|i| format!("part{i}.xml")).collect();
    let parts: Vec<(&str, &[u8])> = names
        .iter()
        .map(|n| (n.as_str(), b"x".as_slice()))
        .collect();
    let error = read_records(
        &zip_of(&parts),
        Format::Xlsx,
        Kind::Students,
        &limits,
        today(),
    );
    assert!(
        matches!(error, Err(FileError::TooManyParts { entries: 6, max: 5 })),
        "{error:?}"
    );
}

/// A minimal `.xlsx` written by hand: one sheet with the given `<worksheet>` body, a date
/// style at index 1, and the workbook's `date1904` flag.
fn raw_xlsx(sheet_data: &str, dimension: &str, date1904: bool) -> Vec<u8> {
    let content_types = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/></Types>"#;
    let rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#;
    let workbook = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><workbookPr{}/><sheets><sheet name="Students" sheetId="1" r:id="rId1"/></sheets></workbook>"#,
        if date1904 { r#" date1904="1""# } else { "" }
    );
    let workbook_rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>"#;
    let styles = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts><fills count="1"><fill><patternFill patternType="none"/></fill></fills><borders count="1"><border/></borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs><cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/><xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs></styleSheet>"#;
    let sheet = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><dimension ref="{dimension}"/><sheetData>{sheet_data}</sheetData></worksheet>"#
    );
    zip_of(&[
        ("[Content_Types].xml", content_types.as_bytes()),
        ("_rels/.rels", rels.as_bytes()),
        ("xl/workbook.xml", workbook.as_bytes()),
        ("xl/_rels/workbook.xml.rels", workbook_rels.as_bytes()),
        ("xl/styles.xml", styles.as_bytes()),
        ("xl/worksheets/sheet1.xml", sheet.as_bytes()),
    ])
}

fn inline(cell: &str, text: &str) -> String {
    format!(r#"<c r="{cell}" t="inlineStr"><is><t>{text}</t></is></c>"#)
}

/// Header row 1 and one student in row `row` with the date-of-birth cell `dob` (raw XML).
fn raw_student_rows(row: u32, dob: &str) -> String {
    let header: String = [
        "registration_no",
        "full_name",
        "school",
        "date_of_birth",
        "pincode",
    ]
    .iter()
    .zip(["A1", "B1", "C1", "D1", "E1"])
    .map(|(text, cell)| inline(cell, text))
    .collect();
    format!(
        r#"<row r="1">{header}</row><row r="{row}">{}{}{}{dob}<c r="E{row}"><v>110001</v></c></row>"#,
        inline(&format!("A{row}"), "R1"),
        inline(&format!("B{row}"), "Ravi"),
        inline(&format!("C{row}"), "School of Law"),
    )
}

#[test]
fn date_cells_in_the_1904_epoch() {
    // 2005-05-15 is serial 38487 from 1900 and 37025 from 1904.
    for (serial, date1904) in [(38487, false), (37025, true)] {
        let dob = format!(r#"<c r="D2" s="1"><v>{serial}</v></c>"#);
        let bytes = raw_xlsx(&raw_student_rows(2, &dob), "A1:E2", date1904);
        let parsed = read(&bytes, Format::Xlsx, Kind::Students).unwrap();
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
        assert_eq!(
            students(&parsed)[0].1.date_of_birth,
            date(2005, 5, 15),
            "1904: {date1904}"
        );
    }
}

#[test]
fn a_cell_listed_over_and_over_in_one_row_is_read_once() {
    // 200,000 copies of one cell in one row: the reader folds repeats as they come instead of
    // holding them all until the row ends, and the first copy is the one read.
    let dob = r#"<c r="D2" s="1"><v>38487</v></c>"#;
    let repeats: String = (0..200_000)
        .map(|i| inline("F2", &format!("note {i}")))
        .collect();
    let mut rows = raw_student_rows(2, dob);
    let end = rows.rfind("</row>").unwrap();
    rows.insert_str(end, &repeats);
    let parsed = read(
        &raw_xlsx(&rows, "A1:F2", false),
        Format::Xlsx,
        Kind::Students,
    )
    .unwrap();
    assert_eq!(students(&parsed).len(), 1);
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
}

#[test]
fn absurd_declared_dimensions_cost_nothing() {
    // The sheet claims every cell Excel allows; calamine's range API would allocate 17 billion
    // cells. Streamed, only the cells present are read.
    let dob = r#"<c r="D2" s="1"><v>38487</v></c>"#;
    let bytes = raw_xlsx(&raw_student_rows(2, dob), "A1:XFD1048576", false);
    let started = Instant::now();
    let parsed = read(&bytes, Format::Xlsx, Kind::Students).unwrap();
    assert_eq!(students(&parsed).len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A value really placed in the last column is refused by the column cap.
    let far = format!(
        "{}<row r=\"3\">{}</row>",
        raw_student_rows(2, dob),
        inline("XFD3", "x")
    );
    let error = read(
        &raw_xlsx(&far, "A1:XFD1048576", false),
        Format::Xlsx,
        Kind::Students,
    )
    .unwrap_err();
    assert_eq!(
        error,
        FileError::TooManyColumns {
            sheet: "Students".into(),
            row: 3,
            column: 16384,
            max: 200
        }
    );
    assert!(error.to_string().contains("column XFD"), "{error}");
}

#[test]
fn many_empty_rows_are_cheap() {
    // 120,000 formatted-but-empty rows between the header and a student at the bottom (about
    // 0.1 s in a release build; a debug build takes ten times longer).
    let mut body = String::with_capacity(16 * 1024 * 1024);
    let rows = raw_student_rows(120_002, r#"<c r="D120002" s="1"><v>38487</v></c>"#);
    let (header, student) = rows.split_at(rows.find("<row r=\"120002\"").unwrap());
    body.push_str(header);
    for row in 2..120_002 {
        body.push_str(&format!(
            r#"<row r="{row}"><c r="A{row}" s="1"/><c r="B{row}" s="1"/></row>"#
        ));
    }
    body.push_str(student);
    let bytes = raw_xlsx(&body, "A1:E120002", false);
    let started = Instant::now();
    let parsed = read(&bytes, Format::Xlsx, Kind::Students).unwrap();
    assert_eq!(parsed.rows_seen, 1);
    assert_eq!(students(&parsed)[0].0, 120_002);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn row_cap() {
    let mut rows = vec![headers(&TEMPLATE_HEADERS)];
    for i in 0..4 {
        rows.push(student(f64::from(i), "", "A"));
    }
    let bytes = xlsx(&[("Students", rows)]);
    let limits = Limits {
        max_rows: 3,
        ..Limits::default()
    };
    let error = read_records(&bytes, Format::Xlsx, Kind::Students, &limits, today());
    assert_eq!(
        error,
        Err(FileError::TooManyRows {
            sheet: "Students".into(),
            max: 3
        })
    );
}

/// A minimal `.ods` with one table whose rows are given as `content.xml` markup.
fn raw_ods(table_rows: &str) -> Vec<u8> {
    ods_of_body(&format!(
        r#"<table:table table:name="Students">{table_rows}</table:table></office:spreadsheet></office:body></office:document-content>"#
    ))
}

/// A minimal `.ods` whose `content.xml` is the usual opening followed by `body` as given
/// (which closes, or does not close, what it opens).
fn ods_of_body(body: &str) -> Vec<u8> {
    let content = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body><office:spreadsheet>{body}"#
    );
    let manifest = r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"#;
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    writer.start_file("mimetype", stored).unwrap();
    writer
        .write_all(b"application/vnd.oasis.opendocument.spreadsheet")
        .unwrap();
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    writer.start_file("content.xml", deflated).unwrap();
    writer.write_all(content.as_bytes()).unwrap();
    writer
        .start_file("META-INF/manifest.xml", deflated)
        .unwrap();
    writer.write_all(manifest.as_bytes()).unwrap();
    writer.finish().unwrap().into_inner()
}

fn ods_text(text: &str) -> String {
    format!(
        r#"<table:table-cell office:value-type="string"><text:p>{text}</text:p></table:table-cell>"#
    )
}

#[test]
fn ods_reads_and_absurd_ods_is_refused() {
    let header: String = ["Reg No", "Name", "School", "DOB", "PIN"]
        .iter()
        .map(|t| ods_text(t))
        .collect();
    let student = format!(
        r#"{}{}{}<table:table-cell office:value-type="date" office:date-value="2005-05-15"/><table:table-cell office:value-type="float" office:value="110001"/>"#,
        ods_text("R1"),
        ods_text("Ravi"),
        ods_text("School of Law")
    );
    let rows = format!(
        r#"<table:table-row>{header}</table:table-row><table:table-row table:number-rows-repeated="3"><table:table-cell table:number-columns-repeated="5"/></table:table-row><table:table-row>{student}</table:table-row><table:table-row table:number-rows-repeated="1048000"><table:table-cell table:number-columns-repeated="1024"/></table:table-row>"#
    );
    let parsed = read(&raw_ods(&rows), Format::Ods, Kind::Students).unwrap();
    assert_eq!(parsed.format, Format::Ods);
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let (row, ravi) = &students(&parsed)[0];
    assert_eq!(*row, 5);
    assert_eq!(ravi.date_of_birth, date(2005, 5, 15));
    assert_eq!(ravi.pincode.as_str(), "110001");
    // A value repeated over 1,000 columns and 10,000 rows: 10 million cells from a few bytes.
    let bomb = format!(
        r#"<table:table-row>{header}</table:table-row><table:table-row table:number-rows-repeated="10000"><table:table-cell table:number-columns-repeated="1000" office:value-type="float" office:value="1"/></table:table-row>"#
    );
    let error = read(&raw_ods(&bomb), Format::Ods, Kind::Students).unwrap_err();
    assert!(
        matches!(error, FileError::TooManyCells { format: ".ods", .. }),
        "{error:?}"
    );
}

/// One BIFF record: type, length, data.
fn record(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_le_bytes().to_vec();
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// A BIFF8 BOF record (a workbook's globals and each sheet start with one).
fn bof() -> Vec<u8> {
    record(
        0x0809,
        &[0x00, 0x06, 0x10, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    )
}

fn eof() -> Vec<u8> {
    record(0x000A, &[])
}

/// A BoundSheet8 record: the sheet `name` starts at `offset` of the stream.
fn bound_sheet(offset: u32, name: &str) -> Vec<u8> {
    let mut data = offset.to_le_bytes().to_vec();
    data.extend_from_slice(&[0, 0, name.len() as u8, 0]);
    data.extend_from_slice(name.as_bytes());
    record(0x0085, &data)
}

/// A workbook stream: globals holding `globals` and one BoundSheet8 per name in `names`, all
/// pointing to one sheet made of `sheet_records`.
fn biff_stream(globals: &[u8], names: &[&str], sheet_records: &[u8]) -> Vec<u8> {
    let bounds_len: usize = names.iter().map(|n| bound_sheet(0, n).len()).sum();
    let offset = (bof().len() + globals.len() + bounds_len + eof().len()) as u32;
    let mut stream = bof();
    stream.extend_from_slice(globals);
    for name in names {
        stream.extend(bound_sheet(offset, name));
    }
    stream.extend(eof());
    stream.extend(bof());
    stream.extend_from_slice(sheet_records);
    stream.extend(eof());
    stream
}

/// A Number record: 1.0 at (row, col), 0-based.
fn number(row: u16, col: u16) -> Vec<u8> {
    let mut data = row.to_le_bytes().to_vec();
    data.extend_from_slice(&col.to_le_bytes());
    data.extend_from_slice(&[0, 0]);
    data.extend_from_slice(&1.0f64.to_le_bytes());
    record(0x0203, &data)
}

#[test]
fn xls_records_are_measured_before_calamine_reads_them() {
    let bof = bof();
    let eof = eof();
    let workbook = |sheet_records: Vec<u8>| biff_stream(&[], &["Sheet1"], &sheet_records);
    let limits = Limits::default();
    // DIMENSIONS claiming 65,536 rows x 256 columns.
    let mut dims = 0u32.to_le_bytes().to_vec();
    dims.extend_from_slice(&65_536u32.to_le_bytes());
    dims.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
    let error = guard::check_biff(&workbook(record(0x0200, &dims)), &limits).unwrap_err();
    assert!(
        matches!(
            error,
            FileError::TooManyCells {
                rows: 65_536,
                columns: 256,
                ..
            }
        ),
        "{error:?}"
    );
    // Inverted dimensions.
    let mut inverted = 100u32.to_le_bytes().to_vec();
    inverted.extend_from_slice(&50u32.to_le_bytes());
    inverted.extend_from_slice(&[0, 0, 1, 0, 0, 0]);
    let error = guard::check_biff(&workbook(record(0x0200, &inverted)), &limits).unwrap_err();
    assert!(matches!(error, FileError::Damaged { .. }), "{error:?}");
    // Two numbers at A1 and IV65536: a tiny file whose used area is 16 million cells.
    let cells = [number(0, 0), number(65_535, 255)].concat();
    let error = guard::check_biff(&workbook(cells), &limits).unwrap_err();
    assert!(
        matches!(
            error,
            FileError::TooManyCells {
                rows: 65_536,
                columns: 256,
                ..
            }
        ),
        "{error:?}"
    );
    // A small sheet passes, and an encrypted one is password protected.
    assert!(guard::check_biff(&workbook(number(10, 3)), &limits).is_ok());
    let filepass = [bof.clone(), record(0x002F, &[1, 0]), eof.clone()].concat();
    assert_eq!(
        guard::check_biff(&filepass, &limits),
        Err(FileError::PasswordProtected)
    );
}

#[test]
fn xlsx_declaring_a_billion_texts_is_refused() {
    let mut bytes_parts: Vec<(String, Vec<u8>)> = Vec::new();
    let template = raw_xlsx(&raw_student_rows(2, ""), "A1:E2", false);
    let mut archive = zip::ZipArchive::new(Cursor::new(template.as_slice())).unwrap();
    for i in 0..archive.len() {
        let mut part = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut part, &mut data).unwrap();
        bytes_parts.push((part.name().unwrap().into_owned(), data));
    }
    let sst = br#"<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1000000000000"><si><t>x</t></si></sst>"#;
    bytes_parts.push(("xl/sharedStrings.xml".into(), sst.to_vec()));
    let parts: Vec<(&str, &[u8])> = bytes_parts
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let error = read(&zip_of(&parts), Format::Xlsx, Kind::Students).unwrap_err();
    assert_eq!(
        error,
        FileError::TooManyTexts {
            declared: 1_000_000_000_000,
            max: 4_000_000
        }
    );
}

#[test]
fn error_messages_read_well() {
    assert_eq!(column_letters(1), "A");
    assert_eq!(column_letters(26), "Z");
    assert_eq!(column_letters(27), "AA");
    assert_eq!(column_letters(16384), "XFD");
    let too_large = FileError::TooLarge {
        size: 30 * 1024 * 1024,
        max: 25 * 1024 * 1024,
    };
    assert_eq!(
        too_large.to_string(),
        "the file is 30.0 MiB; at most 25.0 MiB can be imported: split it into smaller files"
    );
}

/// Files saved by LibreOffice (see `fixtures/README.md`): real `.xls`, `.ods` and `.xlsx`.
#[test]
fn files_saved_by_an_office_suite() {
    let from_csv = [
        (
            "students.ods",
            include_bytes!("fixtures/students.ods").as_slice(),
        ),
        (
            "students.xls",
            include_bytes!("fixtures/students.xls").as_slice(),
        ),
        (
            "students.xlsx",
            include_bytes!("fixtures/students.xlsx").as_slice(),
        ),
    ];
    for (name, bytes) in from_csv {
        let parsed = read(bytes, Format::from_file_name(name).unwrap(), Kind::Students).unwrap();
        assert_eq!(parsed.sheet.as_deref(), Some("students"), "{name}");
        assert_eq!(
            parsed.header_row, 2,
            "{name}: a title row above the headers"
        );
        assert_eq!(parsed.rows_seen, 3, "{name}");
        let rows = students(&parsed);
        assert_eq!(rows.len(), 2, "{name}");
        let asha = &rows[0].1;
        assert_eq!(asha.registration_no.as_str(), "007", "{name}");
        assert_eq!(
            asha.email.value().unwrap().as_str(),
            "asha.verma@example.com"
        );
        assert_eq!(asha.date_of_birth, date(2005, 5, 15), "{name}");
        assert_eq!(asha.pincode.as_str(), "110001", "{name}");
        assert_eq!(asha.phone.value().unwrap().as_str(), "9876543210", "{name}");
        assert_eq!(asha.address.as_deref(), Some("New Delhi, India"));
        let jane = &rows[1].1;
        assert_eq!(jane.registration_no.as_str(), "2025002", "{name}");
        assert_eq!(jane.school, SchoolRef::Name("School of Law".into()));
        assert_eq!(jane.date_of_birth, date(2006, 8, 22), "{name}");
        assert_eq!(jane.address, Optional::Blank, "{name}");
        let columns: Vec<(u32, String)> = errors(&parsed)
            .into_iter()
            .map(|(row, column, _)| (row, column))
            .collect();
        assert_eq!(
            columns,
            [
                (6, "email".into()),
                (6, "date_of_birth*".into()),
                (6, "pincode*".into()),
                (6, "phone".into()),
                (6, "batch".into()),
            ],
            "{name}"
        );
    }
    let template = [
        (
            "template.ods",
            include_bytes!("fixtures/template.ods").as_slice(),
        ),
        (
            "template.xls",
            include_bytes!("fixtures/template.xls").as_slice(),
        ),
    ];
    for (name, bytes) in template {
        let parsed = read(bytes, Format::from_file_name(name).unwrap(), Kind::Students).unwrap();
        assert_eq!(
            parsed.sheet.as_deref(),
            Some("Students"),
            "{name}: Instructions come first"
        );
        assert_eq!(parsed.header_row, 1);
        let rows = students(&parsed);
        assert_eq!(
            rows.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            [2, 3],
            "{name}"
        );
        assert_eq!(rows[1].1.registration_no.as_str(), "02025002", "{name}");
        assert_eq!(rows[1].1.date_of_birth, date(2006, 8, 22), "{name}");
        assert_eq!(
            rows[1].1.email.value().unwrap().as_str(),
            "jane.smith@example.com"
        );
        assert_eq!(
            errors(&parsed),
            [
                (
                    5,
                    "phone".into(),
                    "`12345` is not a 10-digit phone number".into()
                ),
                (5, "registration_no*".into(), "duplicate of row 2".into()),
            ],
            "{name}"
        );
    }
}

#[test]
fn a_broken_xlsb_is_damaged_not_a_crash() {
    let junk: Vec<u8> = (0u32..2048)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    let bytes = zip_of(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("xl/workbook.bin", &junk),
        ("xl/worksheets/sheet1.bin", &junk),
    ]);
    let error = read(&bytes, Format::Xlsb, Kind::Students).unwrap_err();
    assert!(
        matches!(error, FileError::Damaged { format: "xlsb", .. }),
        "{error:?}"
    );
}

#[test]
fn streamed_rows_arrive_in_chunks_that_add_up_to_the_whole_file() {
    let mut rows = vec![headers(&TEMPLATE_HEADERS)];
    for i in 0..23 {
        let email: &'static str = Box::leak(format!("s{i}@campus.in").into_boxed_str());
        rows.push(student(2021000.0 + f64::from(i), email, "Asha"));
    }
    rows.push(student(2021003.0, "dup@campus.in", "Duplicate"));
    let bytes = xlsx(&[("Students", rows)]);
    let whole = read(&bytes, Format::Xlsx, Kind::Students).unwrap();

    let mut chunks = Vec::new();
    let streamed = stream_records(
        &bytes,
        Format::Xlsx,
        Kind::Students,
        &Limits::default(),
        today(),
        Chunking {
            rows: 10,
            at_most: usize::MAX,
        },
        &mut |chunk| {
            chunks.push(chunk);
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(
        chunks.iter().map(Records::len).collect::<Vec<_>>(),
        [10, 10]
    );
    let mut all: Vec<(u32, StudentRecord)> = Vec::new();
    for chunk in chunks.into_iter().chain([streamed.records.clone()]) {
        match chunk {
            Records::Students(rows) => all.extend(rows),
            Records::Stalls(_) => panic!("expected students"),
        }
    }
    assert_eq!(all, students(&whole));
    assert_eq!(streamed.rejected, whole.rejected);
    assert_eq!(streamed.rows_seen, 24);

    // A sink that gives up stops the read.
    let mut taken = 0;
    let stopped = stream_records(
        &bytes,
        Format::Xlsx,
        Kind::Students,
        &Limits::default(),
        today(),
        Chunking {
            rows: 5,
            at_most: usize::MAX,
        },
        &mut |_| {
            taken += 1;
            ControlFlow::Break(())
        },
    );
    assert_eq!(stopped, Err(FileError::Stopped));
    assert_eq!(taken, 1);
}

/// The smallest `.xlsx` the guard measures: a workbook part and the shared texts.
fn xlsx_with_shared_strings(shared_strings: &[u8]) -> Vec<u8> {
    zip_of(&[
        (
            "_rels/.rels",
            br#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
        ),
        ("xl/workbook.xml", b"<workbook/>"),
        ("xl/sharedStrings.xml", shared_strings),
    ])
}

#[test]
fn xlsx_declared_texts_are_found_where_calamine_finds_them() {
    let too_many = Err(FileError::TooManyTexts {
        declared: 5_000_000,
        max: 4_000_000,
    });
    let comment = format!(
        r#"<?xml version="1.0"?><!--{}--><sst uniqueCount="5000000"/>"#,
        "a".repeat(70_000)
    );
    for (case, part) in [
        // calamine skips every element before the first `sst`.
        (
            "another element first",
            r#"<?xml version="1.0"?><x/><sst uniqueCount="5000000"/>"#.to_owned(),
        ),
        // calamine does not check end names.
        (
            "a mismatched end tag first",
            r#"<?xml version="1.0"?><a></b><sst uniqueCount="5000000"/>"#.to_owned(),
        ),
        // Past the first 64 KiB.
        ("70,000 bytes of comment first", comment),
        // calamine does not check duplicate attributes.
        (
            "a duplicate attribute",
            r#"<?xml version="1.0"?><x:sst a="1" a="2" uniqueCount="5000000"/>"#.to_owned(),
        ),
        (
            "leading zeros",
            r#"<sst uniqueCount="0005000000"></sst>"#.to_owned(),
        ),
    ] {
        let bytes = xlsx_with_shared_strings(part.as_bytes());
        assert_eq!(
            guard::inspect(&bytes, Format::Xlsx, &Limits::default()),
            too_many,
            "{case}"
        );
    }
    // calamine reserves nothing for a count it cannot parse, nor for a `count=`.
    for part in [
        r#"<sst uniqueCount="5e6" count="5000000"/>"#,
        r#"<sst uniqueCount="4000000"/>"#,
    ] {
        assert_eq!(
            guard::inspect(
                &xlsx_with_shared_strings(part.as_bytes()),
                Format::Xlsx,
                &Limits::default()
            ),
            Ok(guard::Container::Xlsx(Format::Xlsx)),
            "{part}"
        );
    }
    // XML calamine cannot read up to `sst` is refused, not passed.
    for part in [
        r#"<?xml version="1.0"?><!-- never closed <sst uniqueCount="5000000"/>"#,
        r#"<?xml version="1.0"?></x><sst uniqueCount="5000000"/>"#,
    ] {
        let error = guard::inspect(
            &xlsx_with_shared_strings(part.as_bytes()),
            Format::Xlsx,
            &Limits::default(),
        );
        assert!(
            matches!(&error, Err(FileError::Damaged { format: "xlsx", detail }) if detail.starts_with("the shared texts are not readable XML")),
            "{part}: {error:?}"
        );
    }
}

/// A compound file holding `streams` (after creating `storages`), in that order.
fn compound_file(storages: &[&str], streams: &[(&str, &[u8])]) -> Vec<u8> {
    let mut file = cfb::CompoundFile::create(Cursor::new(Vec::new())).unwrap();
    for storage in storages {
        file.create_storage(storage).unwrap();
    }
    for (path, data) in streams {
        file.create_stream(path).unwrap().write_all(data).unwrap();
    }
    file.flush().unwrap();
    file.into_inner().into_inner()
}

/// DIMENSIONS claiming 65,536 rows x 256 columns: calamine reserves 16.7 million cells.
fn dimensions_65536_by_256() -> Vec<u8> {
    let mut dims = 0u32.to_le_bytes().to_vec();
    dims.extend_from_slice(&65_536u32.to_le_bytes());
    dims.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
    record(0x0200, &dims)
}

#[test]
fn xls_the_stream_calamine_reads_is_the_one_measured() {
    let harmless = biff_stream(&[], &["Sheet1"], &number(10, 3));
    let hostile = biff_stream(&[], &["Sheet1"], &dimensions_65536_by_256());
    let too_big = Err(FileError::TooManyCells {
        format: ".xls",
        sheet: "Sheet1".into(),
        rows: 65_536,
        columns: 256,
        max: 4_000_000,
    });
    // calamine takes the first entry named Workbook in directory order, at any depth.
    let nested = compound_file(
        &["/S"],
        &[("/S/Workbook", &hostile), ("/Workbook", &harmless)],
    );
    assert_eq!(
        guard::inspect(&nested, Format::Xls, &Limits::default()),
        too_big
    );
    // It decodes names with a byte-order mark sniffed: "\u{FEFF}Workbook" is "Workbook" there.
    let marked = compound_file(
        &[],
        &[("/\u{FEFF}Workbook", &hostile), ("/Workbook", &harmless)],
    );
    assert_eq!(
        guard::inspect(&marked, Format::Xls, &Limits::default()),
        too_big
    );
    // "Workbook" before "Book", wherever they are.
    let book = compound_file(&[], &[("/Book", &harmless), ("/WORKBOOK", &hostile)]);
    assert_eq!(
        guard::inspect(&book, Format::Xls, &Limits::default()),
        too_big
    );
    // The same streams the other way round pass.
    let fine = compound_file(
        &["/S"],
        &[("/S/Workbook", &harmless), ("/Workbook", &hostile)],
    );
    assert_eq!(
        guard::inspect(&fine, Format::Xls, &Limits::default()),
        Ok(guard::Container::Xls)
    );
}

/// The sector size and the file offset of directory entry `index` of a compound file.
fn directory_entry_at(bytes: &[u8], index: usize) -> (usize, usize) {
    let size = 1usize << u16::from_le_bytes([bytes[0x1E], bytes[0x1F]]);
    let dir_start = u32::from_le_bytes(bytes[0x30..0x34].try_into().unwrap()) as usize;
    (size, (dir_start + 1) * size + index * 128)
}

#[test]
fn xls_sizes_larger_than_the_file_are_refused() {
    let stream = biff_stream(&[], &["Sheet1"], &number(10, 3));
    let bytes = compound_file(&[], &[("/Workbook", &stream)]);
    assert_eq!(
        guard::inspect(&bytes, Format::Xls, &Limits::default()),
        Ok(guard::Container::Xls)
    );
    let refused = |bytes: &[u8], expected: &str| {
        let error = guard::inspect(bytes, Format::Xls, &Limits::default());
        assert!(
            matches!(&error, Err(FileError::Damaged { format: "xls", detail }) if detail.contains(expected)),
            "{expected}: {error:?}"
        );
    };
    // The root entry's size is the mini stream's, which calamine reads up to that size.
    let (_, root) = directory_entry_at(&bytes, 0);
    let mut huge_root = bytes.clone();
    huge_root[root + 0x78..root + 0x7C].copy_from_slice(&0xFFFF_FFC0u32.to_le_bytes());
    refused(
        &huge_root,
        &format!(
            "says its part \"Root Entry\" holds 4294967232 bytes, more than the whole file ({} bytes)",
            bytes.len()
        ),
    );
    // The workbook's own entry.
    let (_, workbook) = directory_entry_at(&bytes, 1);
    let mut huge_workbook = bytes.clone();
    huge_workbook[workbook + 0x78..workbook + 0x7C].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
    refused(
        &huge_workbook,
        "says its part \"Workbook\" holds 2147418112 bytes",
    );
    // The mini FAT's sector count sizes a chain too.
    let mut huge_mini_fat = bytes.clone();
    huge_mini_fat[0x40..0x44].copy_from_slice(&0x00FF_FFFFu32.to_le_bytes());
    refused(&huge_mini_fat, "declares 16777215 mini allocation sectors");
}

#[test]
fn xls_text_lengths_past_their_record_are_refused() {
    let limits = Limits::default();
    let refused = |sheet: Vec<u8>, present: u64| {
        assert_eq!(
            guard::check_biff(&biff_stream(&[], &["Sheet1"], &sheet), &limits),
            Err(FileError::Damaged {
                format: "xls",
                detail: format!(
                    "a text in sheet \"Sheet1\" claims 65535 characters but only {present} bytes follow"
                ),
            })
        );
    };
    // Label and RString: row, column, format, cch = 65,535, flags, one character.
    refused(
        record(0x0204, &[0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00, b'A']),
        2,
    );
    refused(
        record(0x00D6, &[0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00, b'A']),
        2,
    );
    // String (a formula's text): cch = 65,535, flags, one character.
    refused(record(0x0207, &[0xFF, 0xFF, 0x00, b'A']), 2);
    // Lengths that fit pass, also when CONTINUE records carry the rest.
    let label = record(0x0204, &[0, 0, 0, 0, 0, 0, 3, 0, 0x00, b'a', b'b', b'c']);
    assert!(guard::check_biff(&biff_stream(&[], &["Sheet1"], &label), &limits).is_ok());
    let continued = [
        record(0x0204, &[0, 0, 0, 0, 0, 0, 6, 0, 0x00, b'a', b'b', b'c']),
        record(0x003C, b"def"),
    ]
    .concat();
    assert!(guard::check_biff(&biff_stream(&[], &["Sheet1"], &continued), &limits).is_ok());
}

#[test]
fn xls_a_formula_text_before_any_formula_is_a1() {
    // calamine puts a String record's value at the last Formula's cell, A1 before any: with a
    // number at IV65536 the sheet spans 16.7 million cells.
    let sheet = [number(65_535, 255), record(0x0207, &[0, 0, 0])].concat();
    assert_eq!(
        guard::check_biff(&biff_stream(&[], &["Sheet1"], &sheet), &Limits::default()),
        Err(FileError::TooManyCells {
            format: ".xls",
            sheet: "Sheet1".into(),
            rows: 65_536,
            columns: 256,
            max: 4_000_000,
        })
    );
}

#[test]
fn xls_sheets_are_capped_together() {
    // Two sheet entries pointing to one sheet of 2,000 x 2,000 cells: calamine reads and keeps
    // it twice.
    let sheet = [number(0, 0), number(1_999, 1_999)].concat();
    let limits = Limits::default();
    assert!(guard::check_biff(&biff_stream(&[], &["A"], &sheet), &limits).is_ok());
    assert_eq!(
        guard::check_biff(&biff_stream(&[], &["A", "B"], &sheet), &limits),
        Err(FileError::TooManyCellsInWorkbook {
            format: ".xls",
            sheets: 2,
            cells: 8_000_000,
            max: 4_000_000,
        })
    );
}

#[test]
fn xls_shared_texts_are_counted_in_every_cell_that_copies_them() {
    // An SST of two texts: "x", and 8,000 characters of which 3,000 are in the SST record and
    // 5,000 in a CONTINUE record (which starts with its own flags byte).
    let mut sst = 2u32.to_le_bytes().to_vec();
    sst.extend_from_slice(&2u32.to_le_bytes());
    sst.extend_from_slice(&[1, 0, 0, b'x']);
    sst.extend_from_slice(&8_000u16.to_le_bytes());
    sst.push(0);
    sst.extend(std::iter::repeat_n(b'A', 3_000));
    let mut rest = vec![0u8];
    rest.extend(std::iter::repeat_n(b'A', 5_000));
    let globals = [record(0x00FC, &sst), record(0x003C, &rest)].concat();
    let label_sst = |row: u16, isst: u32| {
        let mut data = row.to_le_bytes().to_vec();
        data.extend_from_slice(&[0, 0, 0, 0]);
        data.extend_from_slice(&isst.to_le_bytes());
        record(0x00FD, &data)
    };
    let limits = Limits {
        max_unpacked_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    };
    // 600 cells copying the short text pass; copying the long one, 4.8 MB, do not.
    let short: Vec<u8> = (0..600).flat_map(|row| label_sst(row, 0)).collect();
    assert!(guard::check_biff(&biff_stream(&globals, &["Sheet1"], &short), &limits).is_ok());
    let long: Vec<u8> = (0..600).flat_map(|row| label_sst(row, 1)).collect();
    assert_eq!(
        guard::check_biff(&biff_stream(&globals, &["Sheet1"], &long), &limits),
        Err(FileError::TooLargeUnpacked {
            size: 525 * 8_000,
            max: 4 * 1024 * 1024,
        })
    );
}

#[test]
fn ods_every_cell_calamine_stores_is_measured() {
    let too_big = |rows: u64, columns: u64| {
        Err(FileError::TooManyCells {
            format: ".ods",
            sheet: "Students".into(),
            rows,
            columns,
            max: 4_000_000,
        })
    };
    // A value without a value type, self-closed: calamine stores it in every column.
    for cell in [
        r#"office:value="1""#,
        r#"table:formula="of:=1""#,
        r#"office:string-value="""#,
        r#"office:date-value="2020-01-01""#,
        r#"office:boolean-value="true""#,
        r#"office:value-type="string""#,
    ] {
        let rows = format!(
            r#"<table:table-row table:number-rows-repeated="300"><table:table-cell table:number-columns-repeated="16384" {cell}/></table:table-row>"#
        );
        assert_eq!(
            guard::inspect(&raw_ods(&rows), Format::Ods, &Limits::default()),
            too_big(300, 16_384),
            "{cell}"
        );
    }
    // Empty cells cost nothing at the end of a row...
    let empty = r#"<table:table-row table:number-rows-repeated="300"><table:table-cell table:number-columns-repeated="16384"/></table:table-row>"#;
    assert_eq!(
        guard::inspect(&raw_ods(empty), Format::Ods, &Limits::default()),
        Ok(guard::Container::Ods)
    );
    // ...but calamine stores them when any cell follows, even an empty one, in every row
    // element.
    let stored = r#"<table:table-row><table:table-cell table:number-columns-repeated="16384"/><table:table-cell/></table:table-row>"#
        .repeat(300);
    assert_eq!(
        guard::inspect(&raw_ods(&stored), Format::Ods, &Limits::default()),
        too_big(245, 16_384)
    );
}

#[test]
fn ods_repeats_of_zero_are_refused() {
    for (rows, attribute) in [
        (
            r#"<table:table-row table:number-rows-repeated="0"><table:table-cell office:value="1"/></table:table-row>"#,
            "table:number-rows-repeated",
        ),
        (
            r#"<table:table-row><table:table-cell table:number-columns-repeated="0" office:value="1"/></table:table-row>"#,
            "table:number-columns-repeated",
        ),
    ] {
        assert_eq!(
            guard::inspect(&raw_ods(rows), Format::Ods, &Limits::default()),
            Err(FileError::Damaged {
                format: "ods",
                detail: format!("{attribute}=\"0\": a repeat count must be at least 1"),
            })
        );
    }
}

#[test]
fn ods_texts_are_held_to_a_budget() {
    let limits = Limits::default();
    let text_cell = |inner: &str| {
        format!(
            r#"<table:table-row><table:table-cell office:value-type="string"><text:p>{inner}</text:p></table:table-cell></table:table-row>"#
        )
    };
    // One run of 50 million spaces.
    assert_eq!(
        guard::inspect(
            &raw_ods(&text_cell(r#"<text:s text:c="50000000"/>"#)),
            Format::Ods,
            &limits
        ),
        Err(FileError::Damaged {
            format: "ods",
            detail: "a cell of table \"Students\" holds a run of 50000000 spaces, more than a cell holds (32767 characters)".into(),
        })
    );
    // Many runs in one cell: 10,000 x 30,000 spaces, counted as the text grows.
    assert_eq!(
        guard::inspect(
            &raw_ods(&text_cell(&r#"<text:s text:c="30000"/>"#.repeat(10_000))),
            Format::Ods,
            &limits
        ),
        Err(FileError::TooLargeUnpacked {
            size: 6_991 * 30_000,
            max: 200 * 1024 * 1024,
        })
    );
    // A 1,000-byte text over 16,384 columns and 20 rows: few cells, 327 MB of copies.
    let copies = format!(
        r#"<table:table-row table:number-rows-repeated="20"><table:table-cell table:number-columns-repeated="16384" office:value-type="string" office:string-value="{}"/></table:table-row>"#,
        "A".repeat(1_000)
    );
    assert_eq!(
        guard::inspect(&raw_ods(&copies), Format::Ods, &limits),
        Err(FileError::TooLargeUnpacked {
            size: 1_000 * 16_384 * 20,
            max: 200 * 1024 * 1024,
        })
    );
    // Ordinary runs pass.
    assert_eq!(
        guard::inspect(
            &raw_ods(&text_cell(r#"a<text:s text:c="3"/>b"#)),
            Format::Ods,
            &limits
        ),
        Ok(guard::Container::Ods)
    );
}

#[test]
fn ods_cut_short_where_calamine_would_never_return_is_refused() {
    // calamine waits for the end of a table, or of a cell's comment, past the end of the part.
    let table = r#"<table:table table:name="A"><table:table-row><table:table-cell office:value="1"/></table:table-row>"#;
    assert_eq!(
        guard::inspect(&ods_of_body(table), Format::Ods, &Limits::default()),
        Err(FileError::Damaged {
            format: "ods",
            detail: "table \"A\" does not end: the file was cut short".into(),
        })
    );
    let comment = r#"<table:table table:name="A"><table:table-row><table:table-cell office:value-type="string"><office:annotation><text:p>note</text:p>"#;
    assert_eq!(
        guard::inspect(&ods_of_body(comment), Format::Ods, &Limits::default()),
        Err(FileError::Damaged {
            format: "ods",
            detail: "a cell of table \"A\" does not end: the file was cut short".into(),
        })
    );
}

#[test]
fn ods_tables_are_capped_together() {
    // Two tables of 244 x 16,384 cells, each under the limit.
    let rows = r#"<table:table-row table:number-rows-repeated="244"><table:table-cell table:number-columns-repeated="16384" office:value-type="float" office:value="1"/></table:table-row>"#;
    let limits = Limits::default();
    assert_eq!(
        guard::inspect(&raw_ods(rows), Format::Ods, &limits),
        Ok(guard::Container::Ods)
    );
    let two = raw_ods(&format!(
        r#"{rows}</table:table><table:table table:name="B">{rows}"#
    ));
    assert_eq!(
        guard::inspect(&two, Format::Ods, &limits),
        Err(FileError::TooManyCellsInWorkbook {
            format: ".ods",
            sheets: 2,
            cells: 2 * 244 * 16_384,
            max: 4_000_000,
        })
    );
}

// ---------------------------------------------------------------------------------------------
// .xlsb, written record by record: no office suite here writes it.
// ---------------------------------------------------------------------------------------------

/// One BIFF12 record: its type (7 bits a byte, the high bit saying another byte follows), its
/// size the same way, then its data.
fn biff12(kind: u16, data: &[u8]) -> Vec<u8> {
    assert!(kind < 0x4000, "a record type takes at most two bytes");
    let mut out = Vec::with_capacity(data.len() + 6);
    if kind < 0x80 {
        out.push(kind as u8);
    } else {
        out.push((kind & 0x7F) as u8 | 0x80);
        out.push((kind >> 7) as u8);
    }
    let mut size = data.len();
    assert!(size < 1 << 28, "a record holds at most 2^28 - 1 bytes");
    loop {
        let byte = (size & 0x7F) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(data);
    out
}

/// An XLWideString: the count of UTF-16 units, then the units.
fn wide(text: &str) -> Vec<u8> {
    let units: Vec<u16> = text.encode_utf16().collect();
    let mut out = (units.len() as u32).to_le_bytes().to_vec();
    out.extend(units.iter().flat_map(|u| u.to_le_bytes()));
    out
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A cell's value in a hand-written `.xlsb`.
enum Bin {
    /// BrtCellIsst: the index of a shared text.
    Shared(u32),
    /// BrtCellSt: a text in the cell.
    Text(&'static str),
    /// BrtCellRk holding a whole number, with a style.
    Rk(i32, u32),
    /// BrtCellReal, with a style.
    Real(f64, u32),
}

/// The records of one cell: its column, its style (24 bits) and flags, then its value.
fn bin_cell(column: u32, value: &Bin) -> Vec<u8> {
    let head = |style: u32| u32s(&[column, style]);
    match value {
        Bin::Shared(index) => biff12(0x0007, &[head(0), index.to_le_bytes().to_vec()].concat()),
        Bin::Text(text) => biff12(0x0006, &[head(0), wide(text)].concat()),
        Bin::Rk(number, style) => {
            // An RK number: the integer shifted left by 2, bit 1 set ("an integer").
            let rk = ((*number as u32) << 2) | 0x2;
            biff12(0x0002, &[head(*style), rk.to_le_bytes().to_vec()].concat())
        }
        Bin::Real(number, style) => biff12(
            0x0005,
            &[head(*style), number.to_le_bytes().to_vec()].concat(),
        ),
    }
}

/// BrtRowHdr: the row (0-based), its style, height (15 points), flags, and one span of
/// columns.
fn bin_row(row: u32, last_column: u32) -> Vec<u8> {
    let mut data = u32s(&[row, 0]);
    data.extend_from_slice(&300u16.to_le_bytes());
    data.extend_from_slice(&[0, 0, 0]);
    data.extend(u32s(&[1, 0, last_column]));
    biff12(0x0000, &data)
}

/// `xl/worksheets/sheet1.bin` as Excel lays it out: the sheet's properties, its used area, a
/// view, the default column format, then `sheet_data` between BrtBeginSheetData and
/// BrtEndSheetData.
fn bin_sheet(rows: u32, columns: u32, sheet_data: &[u8]) -> Vec<u8> {
    [
        biff12(0x0081, &[]), // BrtBeginSheet
        // BrtWsProp: flags, tab color, outline, no code name.
        biff12(
            0x0093,
            &hex("c904020040000000000000ffffffffffffffff00000000"),
        ),
        // BrtWsDim: first row, last row, first column, last column.
        biff12(0x0094, &u32s(&[0, rows - 1, 0, columns - 1])),
        biff12(0x0085, &[]), // BrtBeginWsViews
        biff12(
            0x0089,
            &hex("dc0300000000000000000000000040000000640064000000640000000000"),
        ),
        biff12(0x008A, &[]),                              // BrtEndWsView
        biff12(0x0086, &[]),                              // BrtEndWsViews
        biff12(0x01E5, &hex("ffffffff08002c0100000000")), // BrtWsFmtInfo
        biff12(0x0091, &[]),                              // BrtBeginSheetData
        sheet_data.to_vec(),
        biff12(0x0092, &[]), // BrtEndSheetData
        biff12(0x0082, &[]), // BrtEndSheet
    ]
    .concat()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// `xl/workbook.bin`: the workbook's properties, one BrtBundleSh per (relationship id, name),
/// `names` (the records between the sheets and the calculation properties: BrtExternSheet,
/// BrtName), the calculation properties.
fn bin_workbook(sheets: &[(&str, &str)], names: &[u8]) -> Vec<u8> {
    let mut out = [
        biff12(0x0083, &[]), // BrtBeginBook
        // BrtWbProp: flags (not the 1904 epoch), theme version, no code name.
        biff12(0x0099, &hex("200001000000000000000000")),
        biff12(0x008F, &[]), // BrtBeginBundleShs
    ]
    .concat();
    for (tab, (id, name)) in sheets.iter().enumerate() {
        // BrtBundleSh: visible, tab id, relationship id, name.
        let data = [u32s(&[0, tab as u32 + 1]), wide(id), wide(name)].concat();
        out.extend(biff12(0x009C, &data));
    }
    out.extend(biff12(0x0090, &[])); // BrtEndBundleShs
    out.extend_from_slice(names);
    // BrtCalcProp, as Excel writes it.
    out.extend(biff12(
        0x009D,
        &hex("139c02000100000064000000fca9f1d24d62503f040000006a00"),
    ));
    out.extend(biff12(0x0084, &[])); // BrtEndBook
    out
}

/// BrtXF: parent style, number format, font, fill, border, rotation, indent, flags.
fn bin_xf(parent: u16, number_format: u16) -> Vec<u8> {
    let mut data = [parent, number_format, 0, 0, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>();
    data.extend_from_slice(&hex("000010100100"));
    biff12(0x002F, &data)
}

/// `xl/styles.bin`: one font, the two fills and the border Excel always writes, the Normal
/// style, and two cell formats: 0 general, 1 a date (built-in number format 14).
fn bin_styles() -> Vec<u8> {
    [
        biff12(0x0116, &[]),             // BrtBeginStyleSheet
        biff12(0x0263, &u32s(&[1])),     // BrtBeginFonts
        biff12(
            0x002B,
            &hex("dc000000900100000002000007010000000000ff0207000000430061006c006900620072006900"),
        ),
        biff12(0x0264, &[]),         // BrtEndFonts
        biff12(0x025B, &u32s(&[2])), // BrtBeginFills
        biff12(0x002D, &hex(&format!("0000000003400000000000ff03410000ffffffff{}", "0".repeat(96)))),
        biff12(0x002D, &hex(&format!("1100000003400000000000ff03410000ffffffff{}", "0".repeat(96)))),
        biff12(0x025C, &[]),         // BrtEndFills
        biff12(0x0265, &u32s(&[1])), // BrtBeginBorders
        biff12(
            0x002E,
            &hex("000000010000000000000000000100000000000000000001000000000000000000010000000000000000000100000000000000"),
        ),
        biff12(0x0266, &[]),         // BrtEndBorders
        biff12(0x0272, &u32s(&[1])), // BrtBeginCellStyleXFs
        bin_xf(0xFFFF, 0),
        biff12(0x0273, &[]),         // BrtEndCellStyleXFs
        biff12(0x0269, &u32s(&[2])), // BrtBeginCellXFs
        bin_xf(0, 0),
        bin_xf(0, 14),
        biff12(0x026A, &[]),         // BrtEndCellXFs
        biff12(0x026B, &u32s(&[1])), // BrtBeginStyles
        // BrtStyle: cell format 0, built-in style 0 ("Normal").
        biff12(0x0030, &[hex("00000000010000ff"), wide("Normal")].concat()),
        biff12(0x026C, &[]), // BrtEndStyles
        biff12(0x0117, &[]), // BrtEndStyleSheet
    ]
    .concat()
}

/// `xl/sharedStrings.bin`: BrtBeginSst (references, distinct texts), a BrtSSTItem per text.
fn bin_shared_strings(references: u32, texts: &[&str]) -> Vec<u8> {
    let mut out = biff12(0x009F, &u32s(&[references, texts.len() as u32]));
    for text in texts {
        out.extend(biff12(0x0013, &[vec![0], wide(text)].concat()));
    }
    out.extend(biff12(0x00A0, &[])); // BrtEndSst
    out
}

const XLSB_CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="bin" ContentType="application/vnd.ms-excel.sheet.binary.macroEnabled.main"/><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/worksheets/sheet1.bin" ContentType="application/vnd.ms-excel.worksheet"/><Override PartName="/xl/styles.bin" ContentType="application/vnd.ms-excel.styles"/><Override PartName="/xl/sharedStrings.bin" ContentType="application/vnd.ms-excel.sharedStrings"/></Types>"#;

const XLSB_PACKAGE_RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.bin"/></Relationships>"#;

const XLSB_WORKBOOK_RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.bin"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.bin"/><Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.bin"/></Relationships>"#;

/// The parts of a one-sheet `.xlsb`, to be zipped as they are or after a change.
struct XlsbParts {
    workbook: Vec<u8>,
    styles: Vec<u8>,
    shared_strings: Vec<u8>,
    sheet: Vec<u8>,
}

impl XlsbParts {
    /// A sheet "students": headers from the shared texts, then two students whose values
    /// take every kind of cell (a shared text, a text in the cell, whole numbers as RK and as
    /// a double, dates as both with the date format).
    fn students() -> XlsbParts {
        let texts = [
            "registration_no",
            "full_name",
            "school",
            "date_of_birth",
            "pincode",
            "School of Law",
            "Jane Smith",
        ];
        let serial = |d: NaiveDate| (d - date(1899, 12, 30)).num_days() as i32;
        let rows = [
            (0..5).map(Bin::Shared).collect::<Vec<_>>(),
            vec![
                Bin::Rk(2025001, 0),
                Bin::Text("Asha Verma"),
                Bin::Shared(5),
                Bin::Real(f64::from(serial(date(2005, 5, 15))), 1),
                Bin::Rk(110001, 0),
            ],
            vec![
                Bin::Text("007"),
                Bin::Shared(6),
                Bin::Shared(5),
                Bin::Rk(serial(date(2006, 8, 22)), 1),
                Bin::Real(110002.0, 0),
            ],
        ];
        let mut sheet_data = Vec::new();
        for (r, cells) in rows.iter().enumerate() {
            sheet_data.extend(bin_row(r as u32, 4));
            for (c, value) in cells.iter().enumerate() {
                sheet_data.extend(bin_cell(c as u32, value));
            }
        }
        XlsbParts {
            workbook: bin_workbook(&[("rId1", "students")], &[]),
            styles: bin_styles(),
            shared_strings: bin_shared_strings(8, &texts),
            sheet: bin_sheet(3, 5, &sheet_data),
        }
    }

    /// The package, zipped as Excel orders it, stored uncompressed and undated so that the
    /// same parts always give the same bytes (and a fuzzer's byte edits land in records).
    fn zip(&self) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(zip::DateTime::default());
        for (name, data) in [
            ("[Content_Types].xml", XLSB_CONTENT_TYPES.as_bytes()),
            ("_rels/.rels", XLSB_PACKAGE_RELS.as_bytes()),
            ("xl/workbook.bin", &self.workbook),
            ("xl/_rels/workbook.bin.rels", XLSB_WORKBOOK_RELS.as_bytes()),
            ("xl/worksheets/sheet1.bin", &self.sheet),
            ("xl/styles.bin", &self.styles),
            ("xl/sharedStrings.bin", &self.shared_strings),
        ] {
            writer.start_file(name, options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }
}

const STUDENTS_XLSB: &[u8] = include_bytes!("fixtures/students.xlsb");

/// `fixtures/students.xlsb` is what `XlsbParts::students` writes (`WRITE_XLSB_FIXTURE=1`
/// rewrites it), and reads as two students.
#[test]
fn xlsb_fixture_is_generated_and_reads_as_students() {
    let generated = XlsbParts::students().zip();
    if std::env::var_os("WRITE_XLSB_FIXTURE").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/spreadsheet/fixtures/students.xlsb"
        );
        std::fs::write(path, &generated).unwrap();
    }
    assert!(
        generated == STUDENTS_XLSB,
        "fixtures/students.xlsb is stale: rerun with WRITE_XLSB_FIXTURE=1"
    );
    assert_eq!(
        guard::inspect(STUDENTS_XLSB, Format::Xlsb, &Limits::default()),
        Ok(guard::Container::Xlsb)
    );
    let parsed = read(STUDENTS_XLSB, Format::Xlsb, Kind::Students).unwrap();
    assert_eq!(parsed.sheet.as_deref(), Some("students"));
    assert_eq!(parsed.header_row, 1);
    assert_eq!(parsed.rows_seen, 2);
    assert_eq!(errors(&parsed), []);
    let rows = students(&parsed);
    assert_eq!(rows.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [2, 3]);
    let asha = &rows[0].1;
    assert_eq!(asha.registration_no.as_str(), "2025001");
    assert_eq!(asha.full_name.as_str(), "Asha Verma");
    assert_eq!(asha.school, SchoolRef::Name("School of Law".into()));
    assert_eq!(asha.date_of_birth, date(2005, 5, 15));
    assert_eq!(asha.pincode.as_str(), "110001");
    let jane = &rows[1].1;
    assert_eq!(jane.registration_no.as_str(), "007");
    assert_eq!(jane.full_name.as_str(), "Jane Smith");
    assert_eq!(jane.school, SchoolRef::Name("School of Law".into()));
    assert_eq!(jane.date_of_birth, date(2006, 8, 22));
    assert_eq!(jane.pincode.as_str(), "110002");
}

/// `.xlsb` files saved by Excel (from calamine's tests, see `fixtures/README.md`): the guard
/// walks them through, as calamine does.
#[test]
fn xlsb_files_saved_by_excel_pass_the_guard() {
    for (name, bytes) in [
        (
            "excel-any-sheets.xlsb",
            include_bytes!("fixtures/excel-any-sheets.xlsb").as_slice(),
        ),
        (
            "excel-date.xlsb",
            include_bytes!("fixtures/excel-date.xlsb").as_slice(),
        ),
    ] {
        assert_eq!(
            guard::inspect(bytes, Format::Xlsb, &Limits::default()),
            Ok(guard::Container::Xlsb),
            "{name}"
        );
        let workbook: Result<calamine::Xlsb<_>, _> = calamine::Reader::new(Cursor::new(bytes));
        assert!(workbook.is_ok(), "{name}");
    }
}

fn xlsb_refusal(bytes: &[u8], limits: &Limits) -> FileError {
    guard::inspect(bytes, Format::Xlsb, limits).unwrap_err()
}

fn xlsb_damaged(detail: &str) -> FileError {
    FileError::Damaged {
        format: "xlsb",
        detail: detail.to_owned(),
    }
}

#[test]
fn xlsb_records_longer_than_their_part_are_refused() {
    let limits = Limits::default();
    // BrtBeginSst declaring 2^28 - 1 bytes: calamine would zero-fill 256 MiB for this 6-byte
    // part before finding it short.
    let bytes = zip_of(&[
        ("xl/workbook.bin", b""),
        (
            "xl/sharedStrings.bin",
            &[0x9F, 0x01, 0xFF, 0xFF, 0xFF, 0x7F],
        ),
    ]);
    assert_eq!(
        xlsb_refusal(&bytes, &limits),
        xlsb_damaged("a record declares 268435455 bytes but only 0 remain in xl/sharedStrings.bin")
    );
    // In a sheet: a BrtCellReal declaring 1,000 bytes (E8 07), followed by 20 bytes and the
    // sheet's last two records (3 bytes each).
    let mut parts = XlsbParts::students();
    parts.sheet = bin_sheet(
        1,
        1,
        &[bin_row(0, 0), vec![0x05, 0xE8, 0x07], vec![0; 20]].concat(),
    );
    assert_eq!(
        xlsb_refusal(&parts.zip(), &limits),
        xlsb_damaged("a record declares 1000 bytes but only 26 remain in xl/worksheets/sheet1.bin")
    );
    // calamine does not skip the styles records it has no use for: it reads their size and
    // data as record types. Here BrtBeginStyleSheet holds the type of BrtBeginCellXFs (E9 04)
    // and a size of 127: record by record the part is sound, read as calamine reads it, it is
    // not, and calamine fails on it.
    let mut parts = XlsbParts::students();
    parts.styles = [biff12(0x0116, &[0xE9, 0x04, 0x7F]), biff12(0x0117, &[])].concat();
    let bytes = parts.zip();
    assert_eq!(
        xlsb_refusal(&bytes, &limits),
        xlsb_damaged("a record declares 127 bytes but only 3 remain in xl/styles.bin")
    );
    let calamine: Result<calamine::Xlsb<_>, _> =
        calamine::Reader::new(Cursor::new(bytes.as_slice()));
    assert!(calamine.is_err());
}

#[test]
fn xlsb_declared_shared_texts_are_capped() {
    // calamine reads as many BrtSSTItem as BrtBeginSst declares, two bytes each at least.
    let mut parts = XlsbParts::students();
    parts.shared_strings = biff12(0x009F, &u32s(&[5_000_000, 5_000_000]));
    assert_eq!(
        xlsb_refusal(&parts.zip(), &Limits::default()),
        FileError::TooManyTexts {
            declared: 5_000_000,
            max: 4_000_000
        }
    );
    parts.shared_strings = biff12(0x009F, &u32s(&[4_000_000, 4_000_000]));
    assert_eq!(
        guard::inspect(&parts.zip(), Format::Xlsb, &Limits::default()),
        Ok(guard::Container::Xlsb)
    );
}

/// The texts calamine reads from the cells of the first sheet.
fn calamine_xlsb_texts(bytes: &[u8]) -> Vec<((u32, u32), String)> {
    let mut workbook: calamine::Xlsb<_> = calamine::Reader::new(Cursor::new(bytes)).unwrap();
    let name = calamine::Reader::sheet_names(&workbook)[0].clone();
    let mut cells = workbook.worksheet_cells_reader(&name).unwrap();
    let mut texts = Vec::new();
    while let Some(cell) = cells.next_cell().unwrap() {
        if let calamine::DataRef::String(text) = cell.get_value() {
            texts.push((cell.get_position(), text.clone()));
        }
    }
    texts
}

#[test]
fn xlsb_texts_calamine_reads_again_from_its_buffer_are_counted() {
    // A BrtCellSt holding no text after one holding some: calamine reads the text from its
    // buffer, which still holds the earlier record.
    let mut parts = XlsbParts::students();
    let bare_text_cell = |column: u32| biff12(0x0006, &u32s(&[column, 0]));
    parts.sheet = bin_sheet(
        1,
        2,
        &[
            bin_row(0, 1),
            bin_cell(0, &Bin::Text("a text")),
            bare_text_cell(1),
        ]
        .concat(),
    );
    assert_eq!(
        calamine_xlsb_texts(&parts.zip()),
        [((0, 0), "a text".to_owned()), ((0, 1), "a text".to_owned())]
    );
    // A 100,000-character text, then ten 10-byte records making a copy each: 1.1 MB.
    let limits = Limits {
        max_unpacked_bytes: MIB,
        ..Limits::default()
    };
    let long: &'static str = Box::leak("x".repeat(100_000).into_boxed_str());
    let sheet = |copies: u32| {
        let mut data = [bin_row(0, 0), bin_cell(0, &Bin::Text(long))].concat();
        for _ in 0..copies {
            data.extend(bare_text_cell(0));
        }
        bin_sheet(1, 1, &data)
    };
    parts.sheet = sheet(9);
    assert_eq!(
        guard::inspect(&parts.zip(), Format::Xlsb, &limits),
        Ok(guard::Container::Xlsb)
    );
    parts.sheet = sheet(10);
    let error = xlsb_refusal(&parts.zip(), &limits);
    assert!(
        matches!(error, FileError::TooLargeUnpacked { max, .. } if max == MIB),
        "{error:?}"
    );
    // The same with shared texts: BrtSSTItem of a flags byte only.
    let mut parts = XlsbParts::students();
    let mut shared = biff12(0x009F, &u32s(&[11, 11]));
    shared.extend(biff12(0x0013, &[vec![0], wide(long)].concat()));
    for _ in 0..10 {
        shared.extend(biff12(0x0013, &[0]));
    }
    parts.shared_strings = shared;
    let error = xlsb_refusal(&parts.zip(), &limits);
    assert!(
        matches!(error, FileError::TooLargeUnpacked { max, .. } if max == MIB),
        "{error:?}"
    );
}

/// BrtName: flags, shortcut key, sheet (none), the name, then its formula (and no extra
/// formula data).
fn bin_name(name: &str, rgce: &[u8]) -> Vec<u8> {
    let data = [
        vec![0; 5],
        u32s(&[0xFFFF_FFFF]),
        wide(name),
        u32s(&[rgce.len() as u32]),
        rgce.to_vec(),
        u32s(&[0]),
    ]
    .concat();
    biff12(0x0027, &data)
}

#[test]
fn xlsb_defined_names_are_measured_as_calamine_builds_them() {
    let workbook_with = |names: &[u8]| {
        let mut parts = XlsbParts::students();
        parts.workbook = bin_workbook(&[("rId1", "students")], names);
        parts.zip()
    };
    // PtgMemFunc around PtgMemFunc ...: calamine parses each level with a call of its own.
    let nested = |levels: usize| {
        let mut rgce = Vec::new();
        for _ in 0..levels {
            let len = (rgce.len() as u16).to_le_bytes();
            rgce = [vec![0x29, len[0], len[1]], rgce].concat();
        }
        bin_name("Deep", &rgce)
    };
    let bytes = workbook_with(&nested(32));
    assert_eq!(
        guard::inspect(&bytes, Format::Xlsb, &Limits::default()),
        Ok(guard::Container::Xlsb)
    );
    let calamine: Result<calamine::Xlsb<_>, _> =
        calamine::Reader::new(Cursor::new(bytes.as_slice()));
    assert!(calamine.is_ok());
    assert_eq!(
        xlsb_refusal(&workbook_with(&nested(33)), &Limits::default()),
        xlsb_damaged("a defined name's formula nests more than 32 levels deep")
    );

    let limits = Limits {
        max_unpacked_bytes: MIB,
        ..Limits::default()
    };
    // A 10,000-character name, and a formula joining it to itself 150 times (PtgName, then
    // PtgName and PtgConcat): 1.5 MB of text from 900 bytes.
    let long = "N".repeat(10_000);
    let mut rgce = vec![0x23, 1, 0, 0, 0];
    for _ in 1..150 {
        rgce.extend_from_slice(&[0x23, 1, 0, 0, 0, 0x08]);
    }
    let names = [bin_name(&long, &[0x1D, 1]), bin_name("Joined", &rgce)].concat();
    let error = xlsb_refusal(&workbook_with(&names), &limits);
    assert!(
        matches!(error, FileError::TooLargeUnpacked { max, .. } if max == MIB),
        "{error:?}"
    );
    // BrtExternSheet: 2,000 references to a sheet with a 1,000-character name, each kept as
    // a copy of the name.
    let mut parts = XlsbParts::students();
    let sheet_name = "S".repeat(1_000);
    let mut externs = u32s(&[2_000]);
    for _ in 0..2_000 {
        externs.extend(u32s(&[0, 0, 0]));
    }
    parts.workbook = bin_workbook(&[("rId1", &sheet_name)], &biff12(0x016A, &externs));
    let error = xlsb_refusal(&parts.zip(), &limits);
    assert!(
        matches!(error, FileError::TooLargeUnpacked { max, .. } if max == MIB),
        "{error:?}"
    );
}

#[test]
fn xlsb_rows_hold_no_more_cells_than_a_sheet_has_columns() {
    // A BrtCellBool, then 2-byte records reading it again from calamine's buffer: each a
    // cell of row 1, which our reader keeps until the row ends.
    let sheet = |cells: usize| {
        let mut data = [
            bin_row(0, 0),
            biff12(0x0004, &[u32s(&[0, 0]), vec![1]].concat()),
        ]
        .concat();
        for _ in 1..cells {
            data.extend(biff12(0x0004, &[]));
        }
        bin_sheet(1, 1, &data)
    };
    let mut parts = XlsbParts::students();
    parts.sheet = sheet(16_384);
    assert_eq!(
        guard::inspect(&parts.zip(), Format::Xlsb, &Limits::default()),
        Ok(guard::Container::Xlsb)
    );
    parts.sheet = sheet(16_385);
    assert_eq!(
        xlsb_refusal(&parts.zip(), &Limits::default()),
        xlsb_damaged("row 1 of xl/worksheets/sheet1.bin holds more than 16384 cells")
    );
}

#[test]
fn xlsb_sheets_sharing_a_part_count_it_each_time() {
    // Eleven sheets, all the same 100 KB part: our reader may read it eleven times.
    let limits = Limits {
        max_unpacked_bytes: MIB,
        ..Limits::default()
    };
    let mut parts = XlsbParts::students();
    let long: &'static str = Box::leak("x".repeat(50_000).into_boxed_str());
    parts.sheet = bin_sheet(
        1,
        1,
        &[bin_row(0, 0), bin_cell(0, &Bin::Text(long))].concat(),
    );
    let names: Vec<String> = (0..11).map(|i| format!("Sheet{i}")).collect();
    let sheets: Vec<(&str, &str)> = names.iter().map(|n| ("rId1", n.as_str())).collect();
    parts.workbook = bin_workbook(&sheets, &[]);
    assert_eq!(
        xlsb_refusal(&parts.zip(), &limits),
        FileError::TooLargeUnpacked {
            size: 11 * parts.sheet.len() as u64,
            max: MIB
        }
    );
    parts.workbook = bin_workbook(&sheets[..10], &[]);
    assert_eq!(
        guard::inspect(&parts.zip(), Format::Xlsb, &limits),
        Ok(guard::Container::Xlsb)
    );
}

#[test]
fn xlsb_texts_are_decoded_as_calamine_decodes_them() {
    let utf16le = |text: &str| text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("UTF-16LE", utf16le("Asha Verma, नई दिल्ली 😀")),
        (
            "a UTF-16LE byte order mark",
            [vec![0xFF, 0xFE], utf16le("abc")].concat(),
        ),
        (
            "a UTF-16BE byte order mark",
            [0xFE, 0xFF, 0x00, 0x61, 0x09, 0x28].to_vec(),
        ),
        (
            "a UTF-8 byte order mark, then bytes that are not UTF-8",
            [
                0xEF, 0xBB, 0xBF, b'a', 0xE0, 0x80, 0xFF, b'b', 0xF0, 0x9F, 0x98,
            ]
            .to_vec(),
        ),
        (
            "lone surrogates",
            [0x00, 0xD8, 0x61, 0x00, 0x00, 0xDC].to_vec(),
        ),
    ];
    for (case, raw) in cases {
        let mut parts = XlsbParts::students();
        let mut data = u32s(&[0, 0, (raw.len() / 2) as u32]);
        data.extend_from_slice(&raw);
        parts.sheet = bin_sheet(1, 1, &[bin_row(0, 0), biff12(0x0006, &data)].concat());
        let texts = calamine_xlsb_texts(&parts.zip());
        assert_eq!(
            texts[0].1.len() as u64,
            guard::xlsb_decoded_len(&raw),
            "{case}: {:?}",
            texts[0].1
        );
    }
}

#[test]
fn chunks_stay_small_until_the_largest_allowed_file_would_need_too_many() {
    let chunking = Chunking {
        rows: 2_000,
        at_most: 60,
    };
    // Chunk sizes of a file with `rows` valid rows, at most `max_rows`.
    let sizes = |rows: usize, max_rows: usize| {
        let (mut sent, mut sizes) = (0, Vec::new());
        while sent < rows {
            let size = chunking.size(sizes.len(), sent, max_rows);
            sizes.push(size.min(rows - sent));
            sent += size;
        }
        sizes
    };
    // 100,000 rows: fifty chunks of 2,000, as before.
    assert_eq!(sizes(100_000, 200_000), vec![2_000; 50]);
    // The most rows allowed: 2,000 while the rest fit, then 10,000, and 60 chunks in all.
    let most = sizes(200_000, 200_000);
    assert_eq!(most.len(), 60);
    assert_eq!(&most[..50], &[2_000; 50][..]);
    assert_eq!(&most[50..], &[10_000; 10][..]);
    // A limit raised far: larger chunks from the start, never more than 60.
    let raised = sizes(1_000_000, 1_000_000);
    assert!(raised.len() <= 60, "{} chunks", raised.len());
    assert_eq!(raised.iter().sum::<usize>(), 1_000_000);
    // A whole-file read is one chunk.
    assert_eq!(Chunking::WHOLE.size(0, 0, 200_000), usize::MAX);
}
