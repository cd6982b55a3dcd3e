//! Loading valid rows, a chunk at a time while the rest of the file is still being read:
//! schools resolved by name or id, conflicts with other records rejected, then new rows
//! binary-COPied straight into the app's table and changed rows updated in one set-based
//! statement. Runs inside the caller's transaction, which also records the outcome, so a
//! file refused part-way leaves nothing behind.
//!
//! New and existing rows are told apart by the keys read when the import starts, not by
//! `INSERT ... ON CONFLICT`: COPY inserts rows in batches and skips the speculative insertion
//! an upsert pays per row (1.3 s against 2.3 s for 100,000 students here). If the app inserts
//! one of the file's keys meanwhile, the COPY fails on the unique key; if it deletes one, the
//! update finds it missing. Either way the transaction rolls back and the import fails and
//! is retried, and the retry sees the row as it now is.
//!
//! A file may hold 200,000 rows, so nothing here copies the records: checks borrow their
//! strings, rejected rows are dropped in place, and updates answer with one array of ids
//! rather than a row per record.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{pin_mut, TryStreamExt};
use secrecy::SecretString;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;
use uuid::Uuid;

use super::PasswordPolicy;
use crate::db::Kind;
use crate::error::Error;
use crate::spreadsheet::{Field, Records, RowError, SchoolRef, StallRecord, StudentRecord};
use crate::token;

/// What the load did.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Rows refused against the database (unknown school, a record that is someone else's).
    pub rejected: Vec<RowError>,
    /// Ids of the inserted and updated rows, whose QR images are cached next.
    pub touched: Vec<Uuid>,
}

/// Rows checked against the database: those that may be written, each with its school id.
pub struct Checked<R> {
    pub accepted: Vec<(u32, R)>,
    pub schools: Vec<Uuid>,
    pub rejected: Vec<RowError>,
}

fn reject(row: u32, field: Field, reason: String) -> RowError {
    RowError {
        row,
        column: Arc::from(field.name()),
        field,
        reason: reason.into(),
    }
}

/// School ids by lower-cased name, and the known ids, for the schools the rows name.
async fn resolve_schools<'a>(
    client: &Client,
    refs: impl Iterator<Item = &'a SchoolRef>,
) -> Result<(HashMap<String, Uuid>, HashSet<Uuid>), Error> {
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for school in refs {
        match school {
            SchoolRef::Name(name) => {
                names.insert(name.trim().to_lowercase());
            }
            SchoolRef::Id(id) => {
                ids.insert(*id);
            }
        }
    }
    let names: Vec<String> = names.into_iter().collect();
    let ids: Vec<Uuid> = ids.into_iter().collect();
    let rows = client
        .query_typed(
            "SELECT id, lower(school_name) FROM schools WHERE lower(school_name) = ANY($1) OR id = ANY($2)",
            &[(&names, Type::TEXT_ARRAY), (&ids, Type::UUID_ARRAY)],
        )
        .await
        .map_err(|e| Error::postgres("looking up schools", e))?;
    let mut by_name = HashMap::new();
    let mut known_ids = HashSet::new();
    for row in rows {
        let id: Uuid = row.get(0);
        by_name.insert(row.get::<_, String>(1), id);
        known_ids.insert(id);
    }
    Ok((by_name, known_ids))
}

fn school_id(
    school: &SchoolRef,
    by_name: &HashMap<String, Uuid>,
    ids: &HashSet<Uuid>,
) -> Result<Uuid, String> {
    match school {
        SchoolRef::Id(id) if ids.contains(id) => Ok(*id),
        SchoolRef::Id(id) => Err(format!("unknown school id {id}")),
        SchoolRef::Name(name) => by_name
            .get(&name.trim().to_lowercase())
            .copied()
            .ok_or_else(|| format!("unknown school \"{name}\"")),
    }
}

/// Keeps the records `verdict` accepts, in place, with their school ids; the others become
/// row errors.
fn sift<R>(
    mut records: Vec<(u32, R)>,
    mut verdict: impl FnMut(&R) -> Result<Uuid, (Field, String)>,
) -> Checked<R> {
    let mut schools = Vec::with_capacity(records.len());
    let mut rejected = Vec::new();
    records.retain(|(row, record)| match verdict(record) {
        Ok(school) => {
            schools.push(school);
            true
        }
        Err((field, reason)) => {
            rejected.push(reject(*row, field, reason));
            false
        }
    });
    Checked {
        accepted: records,
        schools,
        rejected,
    }
}

/// A nonce as the app makes one: two random bytes as 4 hex characters.
fn random_nonce() -> String {
    let bytes = Uuid::new_v4().into_bytes();
    token::nonce(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A hash no one can log in with: bcrypt of a random secret that is thrown away. One per
/// import is enough; the app's date-of-birth + pincode reset sets the real one.
fn unusable_hash() -> Result<String, Error> {
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    bcrypt::hash(secret, 4).map_err(|e| Error::Failed(format!("hashing a password: {e}")))
}

/// The app's old initial password: bcrypt(`YYYYMMDD` + pincode, cost 12), hashed on every core.
fn legacy_hashes(rows: &[(String, String)]) -> Result<Vec<String>, Error> {
    use rayon::prelude::*;
    rows.par_iter()
        .map(|(date, pincode)| bcrypt::hash(format!("{date}{pincode}"), 12))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Failed(format!("hashing a password: {e}")))
}

/// The table's rows as the import found them, as far as the checks need them: every natural
/// key, and each student email's owner (lower-cased). Read in one scan when the import starts:
/// probing the indexes per chunk instead cost about 40 ms per 10,000 rows here. Rows the file
/// itself adds need no look-up, since the parser refuses a key or an email that repeats within
/// the file.
#[derive(Debug, Default)]
pub struct Existing {
    keys: HashSet<String>,
    email_owners: HashMap<String, String>,
}

impl Existing {
    pub async fn read(client: &Client, kind: Kind) -> Result<Existing, Error> {
        let sql = match kind {
            Kind::Students => "SELECT registration_no::text, lower(email) FROM students",
            Kind::Stalls => "SELECT stall_number::text, NULL::text FROM stalls",
        };
        let rows = client
            .query_typed_raw(sql, std::iter::empty::<(&(dyn ToSql + Sync), Type)>())
            .await
            .map_err(|e| Error::postgres("reading the existing rows", e))?;
        pin_mut!(rows);
        let mut existing = Existing::default();
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| Error::postgres("reading the existing rows", e))?
        {
            let key: String = row.get(0);
            if let Some(email) = row.get::<_, Option<String>>(1) {
                existing.email_owners.insert(email, key.clone());
            }
            existing.keys.insert(key);
        }
        Ok(existing)
    }

    fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }
}

/// Resolves schools and refuses emails that belong to another student; writes nothing.
pub async fn check_students(
    client: &Client,
    records: Vec<(u32, StudentRecord)>,
    existing: &Existing,
) -> Result<Checked<StudentRecord>, Error> {
    let (by_name, ids) = resolve_schools(client, records.iter().map(|(_, r)| &r.school)).await?;
    Ok(sift(records, |record| {
        let school =
            school_id(&record.school, &by_name, &ids).map_err(|reason| (Field::School, reason))?;
        // An email may be re-imported by its own student, never taken from another. The
        // parser has lower-cased it already.
        if let Some(owner) = record
            .email
            .as_ref()
            .and_then(|email| existing.email_owners.get(email.as_str()))
        {
            if owner != record.registration_no.as_str() {
                return Err((Field::Email, format!("already belongs to student {owner}")));
            }
        }
        Ok(school)
    }))
}

/// Resolves schools; writes nothing.
pub async fn check_stalls(
    client: &Client,
    records: Vec<(u32, StallRecord)>,
) -> Result<Checked<StallRecord>, Error> {
    let (by_name, ids) = resolve_schools(client, records.iter().map(|(_, r)| &r.school)).await?;
    Ok(sift(records, |record| {
        school_id(&record.school, &by_name, &ids).map_err(|reason| (Field::School, reason))
    }))
}

/// Runs `update` (`UPDATE {kind} ... RETURNING s.id`, its first parameter the `expected` keys
/// of existing rows) and answers with the ids it changed. A row that was there when the import
/// began but is gone now (the app deleted it) fails the import, to be retried, which inserts
/// it: it is neither updated nor unchanged, and must not be counted as either.
async fn update(
    client: &Client,
    kind: Kind,
    update: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
    expected: usize,
) -> Result<Vec<Uuid>, Error> {
    let (table, key) = match kind {
        Kind::Students => ("students", "registration_no"),
        Kind::Stalls => ("stalls", "stall_number"),
    };
    let sql =
        format!("WITH updated AS ({update}) SELECT coalesce(array_agg(id), '{{}}') FROM updated");
    let rows = client
        .query_typed(&sql, params)
        .await
        .map_err(|e| Error::postgres("updating the changed rows", e))?;
    let row = rows
        .first()
        .ok_or_else(|| Error::Failed("the update returned no ids".into()))?;
    // A statement of its own: it must see a delete that committed while the update waited.
    let keys = params[0].0;
    let present: i64 = client
        .query_typed(
            &format!("SELECT count(*) FROM {table} WHERE {key} = ANY($1)"),
            &[(keys, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| Error::postgres("counting the updated rows", e))?
        .first()
        .map_or(0, |row| row.get(0));
    if present < expected as i64 {
        return Err(Error::Failed(format!(
            "{} of the file's existing {table} were deleted while it was imported; the import will be retried",
            expected as i64 - present
        )));
    }
    Ok(row.get(0))
}

/// A binary COPY into the table and columns `copy` names: write each row, then `finish`.
async fn copy_in(
    client: &Client,
    copy: &str,
    types: &[Type],
) -> Result<Pin<Box<BinaryCopyInWriter>>, Error> {
    let sink = client
        .copy_in::<_, bytes::Bytes>(copy)
        .await
        .map_err(|e| Error::postgres("starting the COPY of new rows", e))?;
    Ok(Box::pin(BinaryCopyInWriter::new(sink, types)))
}

async fn copy_row(
    writer: &mut Pin<Box<BinaryCopyInWriter>>,
    values: &[&(dyn ToSql + Sync)],
) -> Result<(), Error> {
    writer
        .as_mut()
        .write(values)
        .await
        .map_err(|e| Error::postgres("copying new rows", e))
}

async fn finish_copy(mut writer: Pin<Box<BinaryCopyInWriter>>) -> Result<(), Error> {
    writer
        .as_mut()
        .finish()
        .await
        .map_err(|e| Error::postgres("finishing the COPY of new rows", e))?;
    Ok(())
}

/// Loads one import's valid rows, chunk by chunk, in the caller's transaction.
pub struct Loader<'a> {
    client: &'a Client,
    jwt_secret: &'a SecretString,
    password: PasswordPolicy,
    existing: Existing,
    /// New students' hash under the default policy.
    unusable_hash: String,
    issued_at: i64,
    loaded: Loaded,
}

impl<'a> Loader<'a> {
    pub async fn start(
        client: &'a Client,
        kind: Kind,
        jwt_secret: &'a SecretString,
        password: PasswordPolicy,
    ) -> Result<Loader<'a>, Error> {
        let existing = Existing::read(client, kind).await?;
        // The updates join a chunk's few thousand keys to the table. Right after a large import
        // the table's statistics still describe it as it was, and the planner then hashes the
        // whole table for every chunk (100 ms per 5,000 rows of a 100,000-row table against
        // 15 ms by the unique index). For this transaction only, the join goes by the index.
        client
            .batch_execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
            .await
            .map_err(|e| Error::postgres("setting up the load", e))?;
        let unusable_hash = match kind {
            Kind::Students => unusable_hash()?,
            Kind::Stalls => String::new(),
        };
        Ok(Loader {
            client,
            jwt_secret,
            password,
            existing,
            unusable_hash,
            issued_at: now_secs(),
            loaded: Loaded::default(),
        })
    }

    pub async fn load(&mut self, records: Records) -> Result<(), Error> {
        match records {
            Records::Students(rows) if !rows.is_empty() => self.load_students(rows).await,
            Records::Stalls(rows) if !rows.is_empty() => self.load_stalls(rows).await,
            _ => Ok(()),
        }
    }

    pub fn finish(self) -> Loaded {
        self.loaded
    }

    fn count(
        &mut self,
        rejected: Vec<RowError>,
        existing: usize,
        inserted: Vec<Uuid>,
        updated: Vec<Uuid>,
    ) {
        let loaded = &mut self.loaded;
        loaded.rejected.extend(rejected);
        loaded.inserted += inserted.len();
        loaded.updated += updated.len();
        loaded.unchanged += existing.saturating_sub(updated.len());
        loaded.touched.extend(inserted);
        loaded.touched.extend(updated);
    }

    /// An id and a freshly signed QR token for each new row, by its natural key.
    fn identities<'k>(
        &self,
        keys: impl Iterator<Item = &'k str>,
        sign: fn(&SecretString, &str, &str, i64) -> Result<String, jsonwebtoken::errors::Error>,
    ) -> Result<(Vec<Uuid>, Vec<String>), Error> {
        // Time-ordered ids (UUIDv7) land at the right edge of the primary key's index instead
        // of on random pages: about 6 % off the COPY here. The app's own are random (v4); both
        // are plain UUIDs to it.
        keys.map(|key| {
            let token = sign(self.jwt_secret, key, &random_nonce(), self.issued_at)
                .map_err(|e| Error::Failed(format!("signing a QR token: {e}")))?;
            Ok((Uuid::now_v7(), token))
        })
        .collect()
    }

    async fn load_students(&mut self, records: Vec<(u32, StudentRecord)>) -> Result<(), Error> {
        let client = self.client;
        let Checked {
            accepted,
            schools,
            rejected,
        } = check_students(client, records, &self.existing).await?;
        let (old, new): (Vec<usize>, Vec<usize>) = (0..accepted.len()).partition(|&i| {
            self.existing
                .contains(accepted[i].1.registration_no.as_str())
        });

        let hashes = match self.password {
            PasswordPolicy::ResetRequired => Vec::new(),
            PasswordPolicy::LegacyDateOfBirthPincode => {
                let inputs: Vec<(String, String)> = new
                    .iter()
                    .map(|&i| {
                        let record = &accepted[i].1;
                        (
                            record.date_of_birth.format("%Y%m%d").to_string(),
                            record.pincode.as_str().to_owned(),
                        )
                    })
                    .collect();
                tokio::task::spawn_blocking(move || legacy_hashes(&inputs))
                    .await
                    .map_err(|e| Error::Failed(format!("password hashing stopped: {e}")))??
            }
        };
        let (ids, tokens) = self.identities(
            new.iter().map(|&i| accepted[i].1.registration_no.as_str()),
            token::student_token,
        )?;
        if !new.is_empty() {
            let mut writer = copy_in(
                client,
                "COPY students (id, registration_no, email, full_name, school_id, phone,
                                date_of_birth, pincode, address, program_name, batch,
                                qr_code_token, password_hash, password_reset_required)
                 FROM STDIN (FORMAT binary)",
                &[
                    Type::UUID,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::UUID,
                    Type::TEXT,
                    Type::DATE,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT4,
                    Type::TEXT,
                    Type::TEXT,
                    Type::BOOL,
                ],
            )
            .await?;
            for (n, &i) in new.iter().enumerate() {
                let record = &accepted[i].1;
                let hash = hashes.get(n).unwrap_or(&self.unusable_hash);
                copy_row(
                    &mut writer,
                    &[
                        &ids[n],
                        &record.registration_no.as_str(),
                        &record.email.as_ref().map(|e| e.as_str()),
                        &record.full_name,
                        &schools[i],
                        &record.phone.as_ref().map(|p| p.as_str()),
                        &record.date_of_birth,
                        &record.pincode.as_str(),
                        &record.address,
                        &record.program_name,
                        &record.batch,
                        &tokens[n],
                        hash,
                        &true,
                    ],
                )
                .await?;
            }
            finish_copy(writer).await?;
        }
        let updated = if old.is_empty() {
            Vec::new()
        } else {
            self.update_students(&accepted, &schools, &old).await?
        };
        self.count(rejected, old.len(), ids, updated);
        Ok(())
    }

    /// Updates the existing students among `rows` whose values differ; `id`, `qr_code_token`,
    /// `password_hash` and `password_reset_required` are never touched.
    async fn update_students(
        &self,
        accepted: &[(u32, StudentRecord)],
        schools: &[Uuid],
        rows: &[usize],
    ) -> Result<Vec<Uuid>, Error> {
        let column = |f: &dyn Fn(&StudentRecord) -> Option<&str>| -> Vec<Option<&str>> {
            rows.iter().map(|&i| f(&accepted[i].1)).collect()
        };
        let registration = column(&|r| Some(r.registration_no.as_str()));
        let email = column(&|r| r.email.as_ref().map(|e| e.as_str()));
        let full_name = column(&|r| Some(r.full_name.as_str()));
        let phone = column(&|r| r.phone.as_ref().map(|p| p.as_str()));
        let pincode = column(&|r| Some(r.pincode.as_str()));
        let address = column(&|r| r.address.as_deref());
        let program = column(&|r| r.program_name.as_deref());
        let school: Vec<Uuid> = rows.iter().map(|&i| schools[i]).collect();
        let birth: Vec<chrono::NaiveDate> =
            rows.iter().map(|&i| accepted[i].1.date_of_birth).collect();
        let batch: Vec<Option<i32>> = rows.iter().map(|&i| accepted[i].1.batch).collect();
        update(
            self.client,
            Kind::Students,
            "UPDATE students AS s
                SET email = i.email, full_name = i.full_name, school_id = i.school_id,
                    phone = i.phone, date_of_birth = i.date_of_birth, pincode = i.pincode,
                    address = i.address, program_name = i.program_name, batch = i.batch,
                    updated_at = now()
               FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::date[],
                           $7::text[], $8::text[], $9::text[], $10::int[])
                    AS i (registration_no, email, full_name, school_id, phone, date_of_birth,
                          pincode, address, program_name, batch)
              WHERE s.registration_no = i.registration_no
                AND (s.email, s.full_name, s.school_id, s.phone, s.date_of_birth, s.pincode,
                     s.address, s.program_name, s.batch)
                    IS DISTINCT FROM
                    (i.email, i.full_name, i.school_id, i.phone, i.date_of_birth, i.pincode,
                     i.address, i.program_name, i.batch)
             RETURNING s.id",
            &[
                (&registration, Type::TEXT_ARRAY),
                (&email, Type::TEXT_ARRAY),
                (&full_name, Type::TEXT_ARRAY),
                (&school, Type::UUID_ARRAY),
                (&phone, Type::TEXT_ARRAY),
                (&birth, Type::DATE_ARRAY),
                (&pincode, Type::TEXT_ARRAY),
                (&address, Type::TEXT_ARRAY),
                (&program, Type::TEXT_ARRAY),
                (&batch, Type::INT4_ARRAY),
            ],
            rows.len(),
        )
        .await
    }

    async fn load_stalls(&mut self, records: Vec<(u32, StallRecord)>) -> Result<(), Error> {
        let client = self.client;
        let Checked {
            accepted,
            schools,
            rejected,
        } = check_stalls(client, records).await?;
        let (old, new): (Vec<usize>, Vec<usize>) = (0..accepted.len())
            .partition(|&i| self.existing.contains(accepted[i].1.stall_number.as_str()));
        let (ids, tokens) = self.identities(
            new.iter().map(|&i| accepted[i].1.stall_number.as_str()),
            token::stall_token,
        )?;
        if !new.is_empty() {
            let mut writer = copy_in(
                client,
                "COPY stalls (id, stall_number, stall_name, school_id, description, location, qr_code_token)
                 FROM STDIN (FORMAT binary)",
                &[Type::UUID, Type::TEXT, Type::TEXT, Type::UUID, Type::TEXT, Type::TEXT, Type::TEXT],
            )
            .await?;
            for (n, &i) in new.iter().enumerate() {
                let record = &accepted[i].1;
                copy_row(
                    &mut writer,
                    &[
                        &ids[n],
                        &record.stall_number.as_str(),
                        &record.stall_name,
                        &schools[i],
                        &record.description,
                        &record.location,
                        &tokens[n],
                    ],
                )
                .await?;
            }
            finish_copy(writer).await?;
        }
        let updated = if old.is_empty() {
            Vec::new()
        } else {
            let column = |f: &dyn Fn(&StallRecord) -> Option<&str>| -> Vec<Option<&str>> {
                old.iter().map(|&i| f(&accepted[i].1)).collect()
            };
            let number = column(&|r| Some(r.stall_number.as_str()));
            let name = column(&|r| Some(r.stall_name.as_str()));
            let description = column(&|r| r.description.as_deref());
            let location = column(&|r| r.location.as_deref());
            let school: Vec<Uuid> = old.iter().map(|&i| schools[i]).collect();
            update(
                client,
                Kind::Stalls,
                "UPDATE stalls AS s
                    SET stall_name = i.stall_name, school_id = i.school_id,
                        description = i.description, location = i.location, updated_at = now()
                   FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[])
                        AS i (stall_number, stall_name, school_id, description, location)
                  WHERE s.stall_number = i.stall_number
                    AND (s.stall_name, s.school_id, s.description, s.location)
                        IS DISTINCT FROM (i.stall_name, i.school_id, i.description, i.location)
                 RETURNING s.id",
                &[
                    (&number, Type::TEXT_ARRAY),
                    (&name, Type::TEXT_ARRAY),
                    (&school, Type::UUID_ARRAY),
                    (&description, Type::TEXT_ARRAY),
                    (&location, Type::TEXT_ARRAY),
                ],
                old.len(),
            )
            .await?
        };
        self.count(rejected, old.len(), ids, updated);
        Ok(())
    }
}
