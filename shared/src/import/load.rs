//! Loading valid rows, a chunk at a time while the rest of the file is still being read. Each
//! chunk is first planned, then (unless this is a preview) written; the preview and the import
//! run the same plan, so they cannot disagree:
//!
//! - checks against the database: the school and the event exist, an email is not another
//!   student's, a key is not an existing one in other letter case;
//! - existing rows are read (and locked, when writing) and merged with the file's values: a
//!   column the file lacks keeps its stored value, a blank cell keeps it too unless the upload
//!   asked to clear blanks; every value that changes is listed, old -> new;
//! - new rows are binary-COPied straight into the app's table and changed rows updated in one
//!   set-based statement. A value the database still refuses is isolated to its row: the
//!   chunk's write is retried row by row under savepoints, and the refused row is rejected with
//!   the database's reason while the others load.
//!
//! New and existing rows are told apart by the keys read when the import starts, not by
//! `INSERT ... ON CONFLICT`: COPY inserts rows in batches and skips the speculative insertion
//! an upsert pays per row (1.3 s against 2.3 s for 100,000 students here). If the app inserts
//! one of the file's keys meanwhile, the COPY fails on the unique key and the import fails, to
//! be retried; the retry sees the row as it now is.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{pin_mut, SinkExt, TryStreamExt};
use secrecy::SecretString;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::copy::{CopyBuffer, IdSequence, RandomPool};
use super::options::{BlankCells, ImportOptions};
use super::PasswordPolicy;
use crate::error::Error;
use crate::kind::Kind;
use crate::spreadsheet::{
    EventRef, Field, Optional, Records, RowError, SchoolRef, StallRecord, StudentRecord,
};
use crate::token;

/// What happens to one valid row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Insert,
    Update,
    Unchanged,
}

/// One changed value of an updated row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Change {
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// An updated row and what changed in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UpdatedRow {
    pub row: u32,
    pub key: String,
    pub changes: Vec<Change>,
}

/// What the load did (or, in a preview, would do).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Every valid row's action, by sheet row number.
    pub actions: Vec<(u32, Action)>,
    /// The updated rows with their changes.
    pub changes: Vec<UpdatedRow>,
    /// Rows refused against the database (unknown school or event, a record that is someone
    /// else's, a value the database refuses).
    pub rejected: Vec<RowError>,
    /// Ids of the inserted and updated rows, whose QR images are cached next.
    pub touched: Vec<Uuid>,
}

/// Whether the plan is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Write,
    Preview,
}

/// The database as the import found it, as far as the checks need it. Read once when the import
/// starts: probing the indexes per chunk instead cost about 40 ms per 10,000 rows here. Rows the
/// file itself adds need no look-up, since the parser refuses a key or an email that repeats
/// within the file.
#[derive(Debug, Default)]
pub struct Existing {
    /// Every natural key, lower-cased, to the key as stored.
    keys: HashMap<String, String>,
    /// Each student email's owner (emails are stored lower-cased by the app).
    email_owners: HashMap<String, String>,
    schools_by_name: HashMap<String, Uuid>,
    school_names: HashMap<Uuid, String>,
    events_by_code: HashMap<String, Uuid>,
    event_codes: HashMap<Uuid, String>,
}

async fn stream_rows(
    client: &Client,
    sql: &str,
    context: &'static str,
    mut each: impl FnMut(tokio_postgres::Row),
) -> Result<(), Error> {
    let rows = client
        .query_typed_raw(sql, std::iter::empty::<(&(dyn ToSql + Sync), Type)>())
        .await
        .map_err(|e| Error::postgres(context, e))?;
    pin_mut!(rows);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| Error::postgres(context, e))?
    {
        each(row);
    }
    Ok(())
}

impl Existing {
    pub async fn read(client: &Client, kind: Kind) -> Result<Existing, Error> {
        let mut existing = Existing::default();
        let sql = match kind {
            Kind::Students => "SELECT registration_no::text, lower(email) FROM students",
            Kind::Stalls => "SELECT stall_number::text, NULL::text FROM stalls",
        };
        stream_rows(client, sql, "reading the existing rows", |row| {
            let key: String = row.get(0);
            if let Some(email) = row.get::<_, Option<String>>(1) {
                existing.email_owners.insert(email, key.clone());
            }
            existing.keys.insert(key.to_lowercase(), key);
        })
        .await?;
        stream_rows(
            client,
            "SELECT id, school_name::text FROM schools",
            "reading the schools",
            |row| {
                let (id, name): (Uuid, String) = (row.get(0), row.get(1));
                existing
                    .schools_by_name
                    .insert(name.trim().to_lowercase(), id);
                existing.school_names.insert(id, name);
            },
        )
        .await?;
        if kind == Kind::Stalls {
            stream_rows(
                client,
                "SELECT id, event_code::text FROM events",
                "reading the events",
                |row| {
                    let (id, code): (Uuid, String) = (row.get(0), row.get(1));
                    existing.events_by_code.insert(code.to_lowercase(), id);
                    existing.event_codes.insert(id, code);
                },
            )
            .await?;
        }
        Ok(existing)
    }

    /// True when `key` is stored exactly so.
    fn contains(&self, key: &str) -> bool {
        self.stored_key(key).is_some_and(|stored| stored == key)
    }

    /// A stored key that differs from `key` only in letter case: the app tells them apart, a
    /// person cannot.
    fn case_twin(&self, key: &str) -> Option<&str> {
        self.stored_key(key).filter(|stored| *stored != key)
    }

    /// The stored key equal to `key` ignoring letter case. Most keys are digits and dashes,
    /// already lower case: they are looked up as they are, with no copy per row.
    fn stored_key(&self, key: &str) -> Option<&str> {
        if self.keys.is_empty() {
            return None;
        }
        let stored = if key.chars().any(char::is_uppercase) {
            self.keys.get(&key.to_lowercase())
        } else {
            self.keys.get(key)
        };
        stored.map(String::as_str)
    }

    fn school(&self, school: &SchoolRef) -> Result<Uuid, String> {
        match school {
            SchoolRef::Id(id) if self.school_names.contains_key(id) => Ok(*id),
            SchoolRef::Id(id) => Err(format!("unknown school id {id}")),
            SchoolRef::Name(name) => self
                .schools_by_name
                .get(&name.trim().to_lowercase())
                .copied()
                .ok_or_else(|| format!("unknown school \"{name}\"")),
        }
    }

    fn event(&self, event: &EventRef) -> Result<Uuid, String> {
        match event {
            EventRef::Id(id) if self.event_codes.contains_key(id) => Ok(*id),
            EventRef::Id(id) => Err(format!("unknown event id {id}")),
            EventRef::Code(code) => self
                .events_by_code
                .get(&code.to_lowercase())
                .copied()
                .ok_or_else(|| format!("unknown event \"{code}\"")),
        }
    }

    /// The upload's own event, checked like a row's.
    pub fn check_event(&self, id: Uuid) -> Result<Uuid, String> {
        self.event(&EventRef::Id(id))
    }

    fn school_name(&self, id: Uuid) -> String {
        self.school_names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn event_code(&self, id: Uuid) -> String {
        self.event_codes
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

/// A chunk of valid rows as the reader hands it over, with the QR token of each students row
/// that is new to the table (`None` for the others, and for every row of a preview). Tokens are
/// signed on the reading thread, so the loader's turn per chunk is only the write.
pub struct Chunk {
    pub records: Records,
    pub tokens: Vec<Option<String>>,
}

impl Chunk {
    /// Rows with no tokens signed ahead.
    pub fn unsigned(records: Records) -> Chunk {
        Chunk {
            records,
            tokens: Vec::new(),
        }
    }
}

/// Signs new students' tokens for chunks on the reading thread.
pub struct Signer {
    existing: Arc<Existing>,
    signer: token::StudentSigner,
    /// The nonces' random bytes, drawn a block at a time.
    random: RandomPool,
    issued_at: i64,
}

impl Signer {
    /// The chunk with its new students' tokens; a token that fails to sign is left for the
    /// loader, which reports the failure.
    pub fn sign(&mut self, records: Records) -> Chunk {
        let tokens = match &records {
            Records::Students(rows) => rows
                .iter()
                .map(|(_, record)| {
                    let key = record.registration_no.as_str();
                    if self.existing.contains(key) {
                        return None;
                    }
                    // Two random bytes as 4 hex characters, as `token::random_nonce`.
                    let nonce = token::nonce(u16::from_be_bytes(self.random.take().ok()?));
                    self.signer.sign(key, &nonce, self.issued_at).ok()
                })
                .collect(),
            Records::Stalls(_) => Vec::new(),
        };
        Chunk { records, tokens }
    }
}

/// The last school a chunk's rows named, resolved: rows of one sheet mostly repeat a school, and
/// resolving a name lower-cases it.
#[derive(Default)]
struct SchoolLookup {
    last: Option<(SchoolRef, Result<Uuid, String>)>,
}

impl SchoolLookup {
    fn resolve(&mut self, existing: &Existing, school: &SchoolRef) -> Result<Uuid, String> {
        match &self.last {
            Some((named, resolved)) if named == school => resolved.clone(),
            _ => {
                let resolved = existing.school(school);
                self.last = Some((school.clone(), resolved.clone()));
                resolved
            }
        }
    }
}

/// A hash no one can log in with: bcrypt of a random secret that is thrown away. One per
/// import is enough; the app's date-of-birth + pincode reset sets the real one. A well-formed
/// bcrypt hash, so the app's login answers 401, never 500.
fn unusable_hash() -> Result<String, Error> {
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    Ok(bcrypt::hash(secret, 4)?)
}

/// The app's old initial password: bcrypt(`YYYYMMDD` + pincode, cost 12), hashed on every core.
fn legacy_hashes(rows: &[(String, String)]) -> Result<Vec<String>, Error> {
    use rayon::prelude::*;
    rows.par_iter()
        .map(|(date, pincode)| bcrypt::hash(format!("{date}{pincode}"), 12))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::from)
}

/// A value the database refused because of the row's data, with the database's reason; `None`
/// for any other failure. A unique violation on the natural key is a race with the app (it
/// inserted the key meanwhile), not the row's fault: the import fails and its retry updates it.
fn row_fault(error: &tokio_postgres::Error) -> Option<String> {
    let db = error.as_db_error()?;
    let code = db.code().code();
    let natural_key = db
        .constraint()
        .is_some_and(|c| c.contains("registration_no") || c.contains("stall_number"));
    let data = code.starts_with("22") || code.starts_with("23");
    if !data || (db.code() == &SqlState::UNIQUE_VIOLATION && natural_key) {
        return None;
    }
    Some(format!("the database refused the row: {}", db.message()))
}

/// A write of some rows, answering the ids it wrote.
type Writing<'b> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<Uuid>, tokio_postgres::Error>> + Send + 'b>,
>;

/// A savepoint's three statements.
struct Savepoint {
    set: &'static str,
    release: &'static str,
    rollback: &'static str,
}

/// Around one chunk's write.
const CHUNK: Savepoint = Savepoint {
    set: "SAVEPOINT chunk",
    release: "RELEASE SAVEPOINT chunk",
    rollback: "ROLLBACK TO SAVEPOINT chunk",
};

/// Around one row's write, when a chunk is written again row by row.
const ONE_ROW: Savepoint = Savepoint {
    set: "SAVEPOINT one_row",
    release: "RELEASE SAVEPOINT one_row",
    rollback: "ROLLBACK TO SAVEPOINT one_row",
};

/// Runs `write` under `savepoint`, answering the write's own result. The SAVEPOINT, the write
/// and the RELEASE are queued together (a connection sends its requests in order), so the
/// server goes from one to the next without waiting on the client. Waiting on it is costly
/// here: each round trip is a wake-up of a loader that shares two cores with the reader and the
/// backend, and a 100,000-row import made 200 of them. When the write fails, the transaction is
/// aborted, the RELEASE fails with it, and the savepoint is there to roll back to.
async fn under_savepoint<'b>(
    client: &'b Client,
    savepoint: &Savepoint,
    context: &'static str,
    write: Writing<'b>,
) -> Result<Result<Vec<Uuid>, tokio_postgres::Error>, Error> {
    let (set, written, released) = futures_util::future::join3(
        client.batch_execute(savepoint.set),
        write,
        client.batch_execute(savepoint.release),
    )
    .await;
    set.map_err(|e| Error::postgres(context, e))?;
    match (written, released) {
        (Ok(ids), released) => {
            released.map_err(|e| Error::postgres(context, e))?;
            Ok(Ok(ids))
        }
        // The write failed, yet the RELEASE was answered as done: the server never saw the
        // write, or tokio-postgres took a stray answer for the RELEASE's (it answers a COPY
        // refused before copy mode with one ReadyForQuery too many). Either way no savepoint
        // can be trusted, and the write's own error is what to report.
        (Err(error), Ok(())) => Err(Error::postgres(context, error)),
        (Err(error), Err(_)) => Ok(Err(error)),
    }
}

/// Writes `rows` with `write`; when the database refuses a value, undoes the attempt and writes
/// them one at a time, each under its own savepoint. Answers the refused rows with reasons.
async fn isolating<'b, T: Sync>(
    client: &'b Client,
    rows: &'b [T],
    context: &'static str,
    write: impl Fn(&'b [T]) -> Writing<'b>,
) -> Result<(Vec<Uuid>, Vec<(usize, String)>), Error> {
    let run = |sql: &'static str| async move {
        client
            .batch_execute(sql)
            .await
            .map_err(|e| Error::postgres(context, e))
    };
    if rows.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let error = match under_savepoint(client, &CHUNK, context, write(rows)).await? {
        Ok(ids) => return Ok((ids, Vec::new())),
        Err(error) => error,
    };
    run(CHUNK.rollback).await?;
    if row_fault(&error).is_none() {
        return Err(Error::postgres(context, error));
    }
    let mut ids = Vec::new();
    let mut refused = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let one = std::slice::from_ref(row);
        match under_savepoint(client, &ONE_ROW, context, write(one)).await? {
            Ok(written) => ids.extend(written),
            Err(error) => {
                run(ONE_ROW.rollback).await?;
                match row_fault(&error) {
                    Some(reason) => refused.push((index, reason)),
                    None => return Err(Error::postgres(context, error)),
                }
            }
        }
    }
    run(CHUNK.release).await?;
    Ok((ids, refused))
}

/// A row a binary COPY writes.
trait CopyRow {
    /// Appends the row: its values in the COPY's column order, each in its column's type.
    fn encode(&self, out: &mut CopyBuffer);
}

/// A binary COPY of `rows` by the prepared COPY statement `copy`, sent in pieces of
/// `copy::SEND_BYTES`.
async fn copy_rows<R: CopyRow>(
    client: &Client,
    copy: &Statement,
    rows: &[R],
) -> Result<(), tokio_postgres::Error> {
    let sink = client.copy_in::<_, bytes::Bytes>(copy).await?;
    pin_mut!(sink);
    let mut buffer = CopyBuffer::new();
    for row in rows {
        row.encode(&mut buffer);
        if buffer.is_full() {
            sink.as_mut().send(buffer.take()).await?;
        }
    }
    sink.as_mut().send(buffer.finish()).await?;
    sink.finish().await?;
    Ok(())
}

/// A new student as it is copied in.
struct NewStudent<'p> {
    id: Uuid,
    planned: &'p Planned<StudentColumns>,
    token: std::borrow::Cow<'p, str>,
    hash: &'p str,
}

impl CopyRow for NewStudent<'_> {
    fn encode(&self, out: &mut CopyBuffer) {
        let c = &self.planned.columns;
        out.row(14);
        out.uuid(self.id);
        out.text(&self.planned.key);
        out.opt_text(c.email.as_deref());
        out.opt_text(c.full_name.as_deref());
        out.opt_uuid(c.school_id);
        out.opt_text(c.phone.as_deref());
        out.opt_date(c.date_of_birth);
        out.opt_text(c.pincode.as_deref());
        out.opt_text(c.address.as_deref());
        out.opt_text(c.program_name.as_deref());
        out.opt_int4(c.batch);
        out.text(&self.token);
        out.text(self.hash);
        out.bool(true);
    }
}

const COPY_STUDENTS: &str = "COPY students (id, registration_no, email, full_name, school_id,
    phone, date_of_birth, pincode, address, program_name, batch, qr_code_token, password_hash,
    password_reset_required) FROM STDIN (FORMAT binary)";

fn copy_students<'b>(
    client: &'b Client,
    copy: &'b Statement,
    rows: &'b [NewStudent<'_>],
) -> Writing<'b> {
    Box::pin(async move {
        copy_rows(client, copy, rows).await?;
        Ok(rows.iter().map(|row| row.id).collect())
    })
}

/// A new stall as it is copied in.
struct NewStall<'p> {
    id: Uuid,
    planned: &'p Planned<StallColumns>,
    token: String,
}

const COPY_STALLS: &str = "COPY stalls (id, stall_number, stall_name, school_id, description,
    location, event_id, qr_code_token) FROM STDIN (FORMAT binary)";

fn copy_stalls<'b>(
    client: &'b Client,
    copy: &'b Statement,
    rows: &'b [NewStall<'_>],
) -> Writing<'b> {
    Box::pin(async move {
        copy_rows(client, copy, rows).await?;
        Ok(rows.iter().map(|row| row.id).collect())
    })
}

impl CopyRow for NewStall<'_> {
    fn encode(&self, out: &mut CopyBuffer) {
        let c = &self.planned.columns;
        out.row(8);
        out.uuid(self.id);
        out.text(&self.planned.key);
        out.opt_text(c.stall_name.as_deref());
        out.opt_uuid(c.school_id);
        out.opt_text(c.description.as_deref());
        out.opt_text(c.location.as_deref());
        out.opt_uuid(c.event_id);
        out.text(&self.token);
    }
}

/// The value an optional column ends with: the file's, or for a blank cell the stored one
/// (cleared when the upload asked), or the stored one when the file lacks the column.
fn merged<T: Clone>(given: Optional<T>, stored: Option<&T>, blanks: BlankCells) -> Option<T> {
    match given {
        Optional::Value(value) => Some(value),
        Optional::Blank if blanks == BlankCells::Clear => None,
        Optional::Blank | Optional::NotInFile => stored.cloned(),
    }
}

/// Lists `field` as changed when `old` and `new` differ.
fn compare<T: PartialEq + ToString>(
    changes: &mut Vec<Change>,
    field: Field,
    old: &Option<T>,
    new: &Option<T>,
) {
    if old != new {
        changes.push(Change {
            field: field.name().to_owned(),
            old: old.as_ref().map(ToString::to_string),
            new: new.as_ref().map(ToString::to_string),
        });
    }
}

/// A student's columns that an import writes.
#[derive(Debug, Clone, PartialEq)]
struct StudentColumns {
    email: Option<String>,
    full_name: Option<String>,
    school_id: Option<Uuid>,
    phone: Option<String>,
    date_of_birth: Option<chrono::NaiveDate>,
    pincode: Option<String>,
    address: Option<String>,
    program_name: Option<String>,
    batch: Option<i32>,
}

/// A stall's columns that an import writes.
#[derive(Debug, Clone, PartialEq)]
struct StallColumns {
    stall_name: Option<String>,
    school_id: Option<Uuid>,
    description: Option<String>,
    location: Option<String>,
    event_id: Option<Uuid>,
}

/// One accepted row, planned: its key, the values it is written with, and for an existing row
/// its id.
struct Planned<C> {
    row: u32,
    key: String,
    columns: C,
    existing: Option<Uuid>,
    /// A new student's QR token, when the reader signed it.
    token: Option<String>,
}

/// Adds one accepted row to the plan: an insert, or for an existing row an update listing its
/// changes, or unchanged.
fn plan_row<C>(
    planned: &mut Vec<Planned<C>>,
    changed: &mut Vec<(usize, Vec<Change>)>,
    mut row: Planned<C>,
    old: Option<&(Uuid, C)>,
    changes: impl FnOnce(&C, &C) -> Vec<Change>,
) {
    if let Some((id, old)) = old {
        row.existing = Some(*id);
        let changes = changes(old, &row.columns);
        if !changes.is_empty() {
            changed.push((planned.len(), changes));
        }
    }
    planned.push(row);
}

/// Loads (or previews) one import's valid rows, chunk by chunk, in the caller's transaction.
pub struct Loader<'a> {
    client: &'a Client,
    mode: Mode,
    jwt_secret: &'a SecretString,
    password: PasswordPolicy,
    options: ImportOptions,
    existing: Arc<Existing>,
    /// New students' hash under the default policy.
    unusable_hash: String,
    issued_at: i64,
    /// The ids of new rows.
    ids: IdSequence,
    /// The COPY of new rows (its text and the prepared statement), prepared at the first chunk
    /// that has some: preparing it for each chunk cost a round trip each.
    copy: Option<(&'static str, Statement)>,
    loaded: Loaded,
}

impl<'a> Loader<'a> {
    pub async fn start(
        client: &'a Client,
        kind: Kind,
        mode: Mode,
        jwt_secret: &'a SecretString,
        password: PasswordPolicy,
        options: ImportOptions,
    ) -> Result<Loader<'a>, Error> {
        let existing = Arc::new(Existing::read(client, kind).await?);
        if mode == Mode::Write {
            // The updates join a chunk's few thousand keys to the table. Right after a large
            // import the table's statistics still describe it as it was, and the planner then
            // hashes the whole table for every chunk (100 ms per 5,000 rows of a 100,000-row
            // table against 15 ms by the unique index). For this transaction only, joins go by
            // the index.
            client
                .batch_execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
                .await
                .map_err(|e| Error::postgres("setting up the load", e))?;
        }
        let unusable_hash = match (kind, mode) {
            (Kind::Students, Mode::Write) => unusable_hash()?,
            _ => String::new(),
        };
        Ok(Loader {
            client,
            mode,
            jwt_secret,
            password,
            options,
            existing,
            unusable_hash,
            issued_at: chrono::Utc::now().timestamp(),
            ids: IdSequence::new(),
            copy: None,
            loaded: Loaded::default(),
        })
    }

    /// The upload's event is unknown: every row would be refused for it, so the file is.
    pub fn upload_event_error(&self) -> Option<String> {
        let id = self.options.event?;
        self.existing
            .check_event(id)
            .err()
            .map(|reason| format!("the upload's event: {reason}"))
    }

    /// What signs tokens for this load on the reading thread; `None` for a preview.
    pub fn signer(&self) -> Result<Option<Signer>, Error> {
        if self.mode != Mode::Write {
            return Ok(None);
        }
        Ok(Some(Signer {
            existing: Arc::clone(&self.existing),
            signer: token::StudentSigner::new(self.jwt_secret)?,
            random: RandomPool::new(),
            issued_at: self.issued_at,
        }))
    }

    pub async fn load(&mut self, chunk: Chunk) -> Result<(), Error> {
        match chunk.records {
            Records::Students(rows) if !rows.is_empty() => {
                self.load_students(rows, chunk.tokens).await
            }
            Records::Stalls(rows) if !rows.is_empty() => self.load_stalls(rows).await,
            _ => Ok(()),
        }
    }

    pub fn finish(self) -> Loaded {
        self.loaded
    }

    /// The prepared COPY statement `sql`.
    async fn copy_statement(&mut self, sql: &'static str) -> Result<Statement, Error> {
        if let Some((prepared, copy)) = &self.copy {
            if *prepared == sql {
                return Ok(copy.clone());
            }
        }
        let copy = self
            .client
            .prepare(sql)
            .await
            .map_err(|e| Error::postgres("preparing the load", e))?;
        self.copy = Some((sql, copy.clone()));
        Ok(copy)
    }

    fn reject(&mut self, row: u32, field: Field, reason: String) {
        self.loaded.rejected.push(RowError {
            row,
            column: Arc::from(field.name()),
            field,
            reason: reason.into(),
        });
    }

    /// Reads the stored columns of the existing rows among `keys` (locking them when writing).
    async fn stored<C>(
        &self,
        sql: &str,
        keys: &[&str],
        columns: impl Fn(&tokio_postgres::Row) -> C,
    ) -> Result<HashMap<String, (Uuid, C)>, Error> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let lock = match self.mode {
            Mode::Write => " FOR UPDATE",
            Mode::Preview => "",
        };
        let rows = self
            .client
            .query_typed(&format!("{sql}{lock}"), &[(&keys, Type::TEXT_ARRAY)])
            .await
            .map_err(|e| Error::postgres("reading the existing rows", e))?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, String>(1), (row.get(0), columns(row))))
            .collect())
    }

    /// Counts the plan, lists its changes, and answers which rows must be written.
    fn record_plan<C>(
        &mut self,
        planned: &[Planned<C>],
        changed: Vec<(usize, Vec<Change>)>,
    ) -> Vec<usize> {
        // `changed` is in plan order: one pass marks the updates.
        let mut updates = changed.iter().map(|(i, _)| *i).peekable();
        for (index, row) in planned.iter().enumerate() {
            let action = match row.existing {
                None => Action::Insert,
                Some(_) if updates.next_if_eq(&index).is_some() => Action::Update,
                Some(_) => Action::Unchanged,
            };
            self.loaded.actions.push((row.row, action));
            match action {
                Action::Insert => self.loaded.inserted += 1,
                Action::Update => self.loaded.updated += 1,
                Action::Unchanged => self.loaded.unchanged += 1,
            }
        }
        let mut indices = Vec::with_capacity(changed.len());
        for (index, changes) in changed {
            indices.push(index);
            self.loaded.changes.push(UpdatedRow {
                row: planned[index].row,
                key: planned[index].key.clone(),
                changes,
            });
        }
        indices
    }

    /// Undoes the plan's counting for rows the database refused while writing.
    fn refused<C>(&mut self, planned: &[&Planned<C>], refused: Vec<(usize, String)>, field: Field) {
        if refused.is_empty() {
            return;
        }
        // One pass over what was counted, however many rows the database refused.
        let rows: std::collections::HashSet<u32> = refused
            .iter()
            .map(|(index, _)| planned[*index].row)
            .collect();
        for (index, reason) in refused {
            let row = planned[index];
            if row.existing.is_some() {
                self.loaded.updated -= 1;
            } else {
                self.loaded.inserted -= 1;
            }
            self.reject(row.row, field, reason);
        }
        self.loaded.changes.retain(|c| !rows.contains(&c.row));
        self.loaded.actions.retain(|(row, _)| !rows.contains(row));
    }

    async fn load_students(
        &mut self,
        records: Vec<(u32, StudentRecord)>,
        tokens: Vec<Option<String>>,
    ) -> Result<(), Error> {
        let mut accepted = Vec::with_capacity(records.len());
        let tokens = tokens.into_iter().chain(std::iter::repeat_with(|| None));
        let mut schools = SchoolLookup::default();
        for ((row, record), token) in records.into_iter().zip(tokens) {
            let key = record.registration_no.as_str();
            if let Some(twin) = self.existing.case_twin(key) {
                let reason = format!("differs only in letter case from the existing student {twin}: the app would keep both, and students type their number at login");
                self.reject(row, Field::RegistrationNo, reason);
                continue;
            }
            let school = match schools.resolve(&self.existing, &record.school) {
                Ok(school) => school,
                Err(reason) => {
                    self.reject(row, Field::School, reason);
                    continue;
                }
            };
            // An email may be re-imported by its own student, never taken from another. The
            // parser has lower-cased it already.
            if let Some(owner) = record
                .email
                .value()
                .and_then(|email| self.existing.email_owners.get(email.as_str()))
            {
                if owner != key {
                    let reason = format!("already belongs to student {owner}");
                    self.reject(row, Field::Email, reason);
                    continue;
                }
            }
            accepted.push((row, record, school, token));
        }
        let old_keys: Vec<&str> = accepted
            .iter()
            .map(|(_, r, ..)| r.registration_no.as_str())
            .filter(|key| self.existing.contains(key))
            .collect();
        let stored = self
            .stored(
                "SELECT id, registration_no::text, email, full_name, school_id, phone, date_of_birth,
                        pincode, address, program_name, batch
                   FROM students WHERE registration_no = ANY($1)",
                &old_keys,
                |row| StudentColumns {
                    email: row.get(2),
                    full_name: row.get(3),
                    school_id: row.get(4),
                    phone: row.get(5),
                    date_of_birth: row.get(6),
                    pincode: row.get(7),
                    address: row.get(8),
                    program_name: row.get(9),
                    batch: row.get(10),
                },
            )
            .await?;
        let blanks = self.options.blank_cells;
        let mut planned = Vec::with_capacity(accepted.len());
        let mut changed = Vec::new();
        for (row, record, school, token) in accepted {
            let key = record.registration_no.into_inner();
            // The record's values move into the columns: 100,000 new rows copy no strings here.
            let old = stored.get(&key);
            let base = old.map(|(_, columns)| columns);
            let columns = StudentColumns {
                email: merged(
                    record.email.into_values(|e| e.into_inner()),
                    base.and_then(|c| c.email.as_ref()),
                    blanks,
                ),
                full_name: Some(record.full_name),
                school_id: Some(school),
                phone: merged(
                    record.phone.into_values(|p| p.into_inner()),
                    base.and_then(|c| c.phone.as_ref()),
                    blanks,
                ),
                date_of_birth: Some(record.date_of_birth),
                pincode: Some(record.pincode.into_inner()),
                address: merged(
                    record.address,
                    base.and_then(|c| c.address.as_ref()),
                    blanks,
                ),
                program_name: merged(
                    record.program_name,
                    base.and_then(|c| c.program_name.as_ref()),
                    blanks,
                ),
                batch: merged(record.batch, base.and_then(|c| c.batch.as_ref()), blanks),
            };
            let planned_row = Planned {
                row,
                key,
                columns,
                existing: None,
                token,
            };
            plan_row(&mut planned, &mut changed, planned_row, old, |old, new| {
                student_changes(old, new, &self.existing)
            });
        }
        let changed = self.record_plan(&planned, changed);
        if self.mode == Mode::Preview {
            return Ok(());
        }
        let new: Vec<&Planned<StudentColumns>> =
            planned.iter().filter(|p| p.existing.is_none()).collect();
        let updates: Vec<&Planned<StudentColumns>> = changed.iter().map(|&i| &planned[i]).collect();
        let inserted = self.insert_students(&new).await?;
        let client = self.client;
        let (updated, refused) =
            isolating(client, &updates, "updating the changed students", |rows| {
                update_students(client, rows)
            })
            .await?;
        self.refused(&updates, refused, Field::RegistrationNo);
        self.loaded.touched.extend(inserted);
        self.loaded.touched.extend(updated);
        Ok(())
    }

    async fn insert_students(
        &mut self,
        new: &[&Planned<StudentColumns>],
    ) -> Result<Vec<Uuid>, Error> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let hashes = match self.password {
            PasswordPolicy::ResetRequired => Vec::new(),
            PasswordPolicy::LegacyDateOfBirthPincode => {
                let inputs: Vec<(String, String)> = new
                    .iter()
                    .map(|p| {
                        (
                            p.columns
                                .date_of_birth
                                .map(|d| d.format("%Y%m%d").to_string())
                                .unwrap_or_default(),
                            p.columns.pincode.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                tokio::task::spawn_blocking(move || legacy_hashes(&inputs))
                    .await
                    .map_err(|_| Error::Stopped("password hashing"))??
            }
        };
        let copy = self.copy_statement(COPY_STUDENTS).await?;
        let mut rows = Vec::with_capacity(new.len());
        for (n, planned) in new.iter().enumerate() {
            let token = match &planned.token {
                Some(token) => std::borrow::Cow::Borrowed(token.as_str()),
                // Not signed ahead: a preview's plan, or a row the app deleted meanwhile.
                None => std::borrow::Cow::Owned(token::student_token(
                    self.jwt_secret,
                    &planned.key,
                    &token::random_nonce(),
                    self.issued_at,
                )?),
            };
            let hash = hashes.get(n).unwrap_or(&self.unusable_hash).as_str();
            // Time-ordered ids (UUIDv7) land at the right edge of the primary key's index
            // instead of on random pages: about 6 % off the COPY here. The app's own are random
            // (v4); both are plain UUIDs to it.
            rows.push(NewStudent {
                id: self.ids.next_id()?,
                planned,
                token,
                hash,
            });
        }
        let client = self.client;
        let (ids, refused) = isolating(client, &rows, "inserting new students", |rows| {
            copy_students(client, &copy, rows)
        })
        .await?;
        self.refused(new, refused, Field::RegistrationNo);
        Ok(ids)
    }

    async fn load_stalls(&mut self, records: Vec<(u32, StallRecord)>) -> Result<(), Error> {
        let upload_event = self.options.event;
        let mut accepted = Vec::with_capacity(records.len());
        let mut schools = SchoolLookup::default();
        for (row, record) in records {
            let key = record.stall_number.as_str();
            if let Some(twin) = self.existing.case_twin(key) {
                let reason = format!("differs only in letter case from the existing stall {twin}: the app would keep both");
                self.reject(row, Field::StallNumber, reason);
                continue;
            }
            let school = match schools.resolve(&self.existing, &record.school) {
                Ok(school) => school,
                Err(reason) => {
                    self.reject(row, Field::School, reason);
                    continue;
                }
            };
            let event = match record.event.value().map(|e| self.existing.event(e)) {
                Some(Ok(event)) => Some(event),
                Some(Err(reason)) => {
                    self.reject(row, Field::Event, reason);
                    continue;
                }
                None => None,
            };
            accepted.push((row, record, school, event));
        }
        let old_keys: Vec<&str> = accepted
            .iter()
            .map(|(_, r, ..)| r.stall_number.as_str())
            .filter(|key| self.existing.contains(key))
            .collect();
        let stored = self
            .stored(
                "SELECT id, stall_number::text, stall_name, school_id, description, location, event_id
                   FROM stalls WHERE stall_number = ANY($1)",
                &old_keys,
                |row| StallColumns {
                    stall_name: row.get(2),
                    school_id: row.get(3),
                    description: row.get(4),
                    location: row.get(5),
                    event_id: row.get(6),
                },
            )
            .await?;
        let blanks = self.options.blank_cells;
        let mut planned = Vec::with_capacity(accepted.len());
        let mut changed = Vec::new();
        for (row, record, school, event) in accepted {
            let key = record.stall_number.into_inner();
            let old = stored.get(&key);
            let none = StallColumns::empty();
            let base = old.map_or(&none, |(_, c)| c);
            // A stall keeps its event unless the file names one; the upload's event serves
            // stalls that have none.
            let event_id = event.or(base.event_id).or(upload_event);
            let Some(event_id) = event_id else {
                let reason = "no event: add an event column or choose the upload's event; the app cannot scan a stall that belongs to no event".to_owned();
                self.reject(row, Field::Event, reason);
                continue;
            };
            let columns = StallColumns {
                stall_name: Some(record.stall_name),
                school_id: Some(school),
                description: merged(record.description, base.description.as_ref(), blanks),
                location: merged(record.location, base.location.as_ref(), blanks),
                event_id: Some(event_id),
            };
            let planned_row = Planned {
                row,
                key,
                columns,
                existing: None,
                token: None,
            };
            plan_row(&mut planned, &mut changed, planned_row, old, |old, new| {
                stall_changes(old, new, &self.existing)
            });
        }
        let changed = self.record_plan(&planned, changed);
        if self.mode == Mode::Preview {
            return Ok(());
        }
        let client = self.client;
        let mut new: Vec<NewStall<'_>> = Vec::new();
        for planned in planned.iter().filter(|p| p.existing.is_none()) {
            new.push(NewStall {
                id: self.ids.next_id()?,
                planned,
                token: token::stall_token(self.jwt_secret, &planned.key)?,
            });
        }
        let (inserted, refused) = if new.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let copy = self.copy_statement(COPY_STALLS).await?;
            isolating(client, &new, "inserting new stalls", |rows| {
                copy_stalls(client, &copy, rows)
            })
            .await?
        };
        let new_planned: Vec<&Planned<StallColumns>> = new.iter().map(|row| row.planned).collect();
        self.refused(&new_planned, refused, Field::StallNumber);
        let updates: Vec<&Planned<StallColumns>> = changed.iter().map(|&i| &planned[i]).collect();
        let (updated, refused) =
            isolating(client, &updates, "updating the changed stalls", |rows| {
                update_stalls(client, rows)
            })
            .await?;
        self.refused(&updates, refused, Field::StallNumber);
        self.loaded.touched.extend(inserted);
        self.loaded.touched.extend(updated);
        Ok(())
    }
}

impl StallColumns {
    fn empty() -> StallColumns {
        StallColumns {
            stall_name: None,
            school_id: None,
            description: None,
            location: None,
            event_id: None,
        }
    }
}

fn student_changes(old: &StudentColumns, new: &StudentColumns, names: &Existing) -> Vec<Change> {
    let mut changes = Vec::new();
    compare(&mut changes, Field::Email, &old.email, &new.email);
    compare(
        &mut changes,
        Field::FullName,
        &old.full_name,
        &new.full_name,
    );
    let school = |id: &Option<Uuid>| id.map(|id| names.school_name(id));
    compare(
        &mut changes,
        Field::School,
        &school(&old.school_id),
        &school(&new.school_id),
    );
    compare(&mut changes, Field::Phone, &old.phone, &new.phone);
    compare(
        &mut changes,
        Field::DateOfBirth,
        &old.date_of_birth,
        &new.date_of_birth,
    );
    compare(&mut changes, Field::Pincode, &old.pincode, &new.pincode);
    compare(&mut changes, Field::Address, &old.address, &new.address);
    compare(
        &mut changes,
        Field::ProgramName,
        &old.program_name,
        &new.program_name,
    );
    compare(&mut changes, Field::Batch, &old.batch, &new.batch);
    changes
}

fn stall_changes(old: &StallColumns, new: &StallColumns, names: &Existing) -> Vec<Change> {
    let mut changes = Vec::new();
    compare(
        &mut changes,
        Field::StallName,
        &old.stall_name,
        &new.stall_name,
    );
    let school = |id: &Option<Uuid>| id.map(|id| names.school_name(id));
    compare(
        &mut changes,
        Field::School,
        &school(&old.school_id),
        &school(&new.school_id),
    );
    compare(
        &mut changes,
        Field::Description,
        &old.description,
        &new.description,
    );
    compare(&mut changes, Field::Location, &old.location, &new.location);
    let event = |id: &Option<Uuid>| id.map(|id| names.event_code(id));
    compare(
        &mut changes,
        Field::Event,
        &event(&old.event_id),
        &event(&new.event_id),
    );
    changes
}

/// Updates the given existing students to their planned values; `id`, `qr_code_token`,
/// `password_hash` and `password_reset_required` are never touched.
fn update_students<'b>(client: &'b Client, rows: &'b [&Planned<StudentColumns>]) -> Writing<'b> {
    Box::pin(update_students_now(client, rows))
}

async fn update_students_now(
    client: &Client,
    rows: &[&Planned<StudentColumns>],
) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    let ids: Vec<Uuid> = rows.iter().filter_map(|p| p.existing).collect();
    let text = |f: fn(&StudentColumns) -> &Option<String>| -> Vec<Option<&str>> {
        rows.iter().map(|p| f(&p.columns).as_deref()).collect()
    };
    let school: Vec<Option<Uuid>> = rows.iter().map(|p| p.columns.school_id).collect();
    let birth: Vec<Option<chrono::NaiveDate>> =
        rows.iter().map(|p| p.columns.date_of_birth).collect();
    let batch: Vec<Option<i32>> = rows.iter().map(|p| p.columns.batch).collect();
    let rows = client
        .query_typed(
            "UPDATE students AS s
                SET email = i.email, full_name = i.full_name, school_id = i.school_id,
                    phone = i.phone, date_of_birth = i.date_of_birth, pincode = i.pincode,
                    address = i.address, program_name = i.program_name, batch = i.batch,
                    updated_at = now()
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::date[],
                           $7::text[], $8::text[], $9::text[], $10::int[])
                    AS i (id, email, full_name, school_id, phone, date_of_birth,
                          pincode, address, program_name, batch)
              WHERE s.id = i.id
             RETURNING s.id",
            &[
                (&ids, Type::UUID_ARRAY),
                (&text(|c| &c.email), Type::TEXT_ARRAY),
                (&text(|c| &c.full_name), Type::TEXT_ARRAY),
                (&school, Type::UUID_ARRAY),
                (&text(|c| &c.phone), Type::TEXT_ARRAY),
                (&birth, Type::DATE_ARRAY),
                (&text(|c| &c.pincode), Type::TEXT_ARRAY),
                (&text(|c| &c.address), Type::TEXT_ARRAY),
                (&text(|c| &c.program_name), Type::TEXT_ARRAY),
                (&batch, Type::INT4_ARRAY),
            ],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Updates the given existing stalls to their planned values; `id` and `qr_code_token` are
/// never touched.
fn update_stalls<'b>(client: &'b Client, rows: &'b [&Planned<StallColumns>]) -> Writing<'b> {
    Box::pin(update_stalls_now(client, rows))
}

async fn update_stalls_now(
    client: &Client,
    rows: &[&Planned<StallColumns>],
) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    let ids: Vec<Uuid> = rows.iter().filter_map(|p| p.existing).collect();
    let text = |f: fn(&StallColumns) -> &Option<String>| -> Vec<Option<&str>> {
        rows.iter().map(|p| f(&p.columns).as_deref()).collect()
    };
    let uuid = |f: fn(&StallColumns) -> Option<Uuid>| -> Vec<Option<Uuid>> {
        rows.iter().map(|p| f(&p.columns)).collect()
    };
    let rows = client
        .query_typed(
            "UPDATE stalls AS s
                SET stall_name = i.stall_name, school_id = i.school_id,
                    description = i.description, location = i.location, event_id = i.event_id,
                    updated_at = now()
               FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::uuid[])
                    AS i (id, stall_name, school_id, description, location, event_id)
              WHERE s.id = i.id
             RETURNING s.id",
            &[
                (&ids, Type::UUID_ARRAY),
                (&text(|c| &c.stall_name), Type::TEXT_ARRAY),
                (&uuid(|c| c.school_id), Type::UUID_ARRAY),
                (&text(|c| &c.description), Type::TEXT_ARRAY),
                (&text(|c| &c.location), Type::TEXT_ARRAY),
                (&uuid(|c| c.event_id), Type::UUID_ARRAY),
            ],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
