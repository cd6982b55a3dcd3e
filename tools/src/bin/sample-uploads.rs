//! Writes the files the sample S3 events in `events/` name, for `scripts/local.sh` to upload:
//! `sample-uploads DIR` makes `DIR/students.xlsx` (new students of the demo data's schools) and
//! `DIR/stalls.csv` (new stalls of its event, DEMO-FEST), both valid by the importer's rules.

use std::path::PathBuf;
use std::process::ExitCode;

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook, XlsxError};
use tools::seed::SCHOOLS;

const STUDENTS: usize = 25;
const STALLS: usize = 5;

fn students_workbook() -> Result<Vec<u8>, XlsxError> {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    let headers = [
        "Registration No",
        "Email",
        "Full Name",
        "School Name",
        "Date of Birth",
        "Pincode",
        "Phone",
        "Program Name",
        "Batch",
    ];
    for (column, header) in headers.iter().enumerate() {
        sheet.write_string(0, column as u16, *header)?;
    }
    let date = Format::new().set_num_format("dd/mm/yyyy");
    for i in 0..STUDENTS {
        let row = i as u32 + 1;
        // Numbers the demo data (2021000000 onwards, counting up) does not reach.
        sheet.write_string(row, 0, format!("2024{:06}", 900_000 + i))?;
        sheet.write_string(row, 1, format!("batch2024.{i}@campus.example.in"))?;
        sheet.write_string(row, 2, format!("Batch 2024 Student {i}"))?;
        sheet.write_string(row, 3, SCHOOLS[i % SCHOOLS.len()])?;
        let born = ExcelDateTime::from_ymd(2004 + (i % 3) as u16, 1 + (i % 12) as u8, 1 + i as u8)?;
        sheet.write_datetime_with_format(row, 4, born, &date)?;
        sheet.write_string(row, 5, format!("{}", 560_001 + i))?;
        sheet.write_string(row, 6, format!("98765{:05}", i))?;
        sheet.write_string(row, 7, "B.Tech CSE")?;
        sheet.write_number(row, 8, 2024.0)?;
    }
    workbook.save_to_buffer()
}

fn stalls_csv() -> String {
    let mut csv = String::from("Stall No,Stall Name,School Name,Location,Event Code\n");
    for i in 0..STALLS {
        csv.push_str(&format!(
            "L-{:02},Local Stall {},{},Block {},DEMO-FEST\n",
            i + 1,
            i + 1,
            SCHOOLS[i % SCHOOLS.len()],
            (b'A' + i as u8) as char
        ));
    }
    csv
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: sample-uploads DIR");
        return ExitCode::from(2);
    };
    let students = match students_workbook() {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("sample-uploads: writing the students workbook: {error}");
            return ExitCode::FAILURE;
        }
    };
    let written = std::fs::write(dir.join("students.xlsx"), students)
        .and_then(|()| std::fs::write(dir.join("stalls.csv"), stalls_csv()));
    if let Err(error) = written {
        eprintln!("sample-uploads: writing to {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
