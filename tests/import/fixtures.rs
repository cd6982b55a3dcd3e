//! Spreadsheets as admins make them, built by the tests; and the world around one import.

use end_to_end::{config_for, s3_client, test_bucket, test_cache, TestDb};
use import_spreadsheet::{handle, Clients, RecordOutcome};
use lambda_runtime::{Context, LambdaEvent};
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use shared::import::ImportReport;
use shared::storage::Storage;

/// A cell of a fixture sheet.
pub enum Cell {
    Text(&'static str),
    Number(f64),
    Date(u16, u8, u8),
    Empty,
}

pub use Cell::{Date, Empty, Number, Text};

/// An .xlsx with the app's template shape: an "Instructions" sheet first, then the data sheet
/// (a title row, then the header row, then `rows`).
pub fn template_xlsx(headers: &[&str], rows: &[Vec<Cell>]) -> Vec<u8> {
    let mut workbook = Workbook::new();
    let instructions = workbook.add_worksheet();
    instructions.set_name("Instructions").unwrap();
    instructions
        .write_string(
            0,
            0,
            "Fill in the Students sheet. Required columns end with *.",
        )
        .unwrap();
    let sheet = workbook.add_worksheet();
    sheet.set_name("Students").unwrap();
    sheet.write_string(0, 0, "Bulk upload").unwrap();
    for (c, header) in headers.iter().enumerate() {
        sheet.write_string(1, c as u16, *header).unwrap();
    }
    let date_format = Format::new().set_num_format("dd/mm/yyyy");
    for (r, row) in rows.iter().enumerate() {
        let r = r as u32 + 2;
        for (c, cell) in row.iter().enumerate() {
            let c = c as u16;
            match cell {
                Text(text) => {
                    sheet.write_string(r, c, *text).unwrap();
                }
                Number(value) => {
                    sheet.write_number(r, c, *value).unwrap();
                }
                Date(y, m, d) => {
                    sheet
                        .write_datetime_with_format(
                            r,
                            c,
                            ExcelDateTime::from_ymd(*y, *m, *d).unwrap(),
                            &date_format,
                        )
                        .unwrap();
                }
                Empty => {}
            }
        }
    }
    workbook.save_to_buffer().unwrap()
}

pub const STUDENT_HEADERS: [&str; 10] = [
    "registration_no*",
    "email",
    "full_name*",
    "school*",
    "date_of_birth*",
    "pincode*",
    "phone",
    "address",
    "program_name",
    "batch",
];

/// A database, cache and bucket of the test's own, and the handler's clients over them.
pub struct World {
    pub db: TestDb,
    pub clients: Clients,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
}

impl World {
    pub async fn new() -> Self {
        let db = TestDb::create().await;
        db.client()
            .await
            .batch_execute("INSERT INTO schools (school_name) VALUES ('School of Computer Science and Engineering'), ('School of Civil Engineering')")
            .await
            .unwrap();
        let cache = test_cache(3600);
        let config = config_for(&db, &cache);
        let s3 = s3_client();
        let bucket = test_bucket(&s3).await;
        let clients = Clients {
            db: db.database(),
            cache,
            storage: Storage::with_client(s3.clone()),
            jwt_secret: config.jwt_secret().unwrap().clone(),
            config,
        };
        World {
            db,
            clients,
            s3,
            bucket,
        }
    }

    /// Uploads `body` under `key` and runs the handler on the S3 event, as Lambda would.
    pub async fn upload_and_import(&self, key: &str, body: Vec<u8>) -> Vec<RecordOutcome> {
        let event = end_to_end::upload(&self.s3, &self.bucket, key, body).await;
        self.deliver(event).await.unwrap()
    }

    pub async fn deliver(&self, event: serde_json::Value) -> Result<Vec<RecordOutcome>, String> {
        // lambda_runtime refuses a payload that is not an S3 event before the handler runs.
        let event = serde_json::from_value(event).map_err(|e| format!("not an S3 event: {e}"))?;
        handle(LambdaEvent::new(event, Context::default()), &self.clients)
            .await
            .map_err(|e| format!("{}: {}", e.error_type, e.error_message))
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// The one import report of an outcome list.
pub fn imported(outcomes: Vec<RecordOutcome>) -> ImportReport {
    match outcomes.into_iter().next() {
        Some(RecordOutcome::Imported(report)) => *report,
        other => panic!("expected an import, got {other:?}"),
    }
}
