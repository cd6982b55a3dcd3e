//! Loading valid rows: schools resolved by name or id, conflicts with other records rejected,
//! then every row upserted by its natural key in one set-based statement fed by binary COPY.
//! Runs inside the caller's transaction, which also records the outcome.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;
use futures_util::pin_mut;
use secrecy::SecretString;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;
use uuid::Uuid;

use super::PasswordPolicy;
use crate::error::Error;
use crate::spreadsheet::{Field, RowError, SchoolRef, StallRecord, StudentRecord};
use crate::token;

/// What the upsert did.
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

fn reject(row: u32, field: Field, reason: String) -> RowError {
    RowError {
        row,
        column: Arc::from(field.name()),
        field,
        reason: reason.into(),
    }
}

/// School ids for the names and ids the rows give; names match case-insensitively.
async fn resolve_schools(
    tx: &Client,
    refs: &[&SchoolRef],
) -> Result<(HashMap<String, Uuid>, HashSet<Uuid>), Error> {
    let names: Vec<String> = refs
        .iter()
        .filter_map(|r| match r {
            SchoolRef::Name(n) => Some(n.trim().to_lowercase()),
            _ => None,
        })
        .collect();
    let ids: Vec<Uuid> = refs
        .iter()
        .filter_map(|r| match r {
            SchoolRef::Id(id) => Some(*id),
            _ => None,
        })
        .collect();
    let rows = tx
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

/// Rows checked against the database: those that may be written, with their school ids.
pub struct Checked<R> {
    pub accepted: Vec<(R, Uuid)>,
    pub rejected: Vec<RowError>,
}

/// Resolves schools and refuses emails that belong to another student; writes nothing.
pub async fn check_students(
    tx: &Client,
    records: Vec<(u32, StudentRecord)>,
) -> Result<Checked<StudentRecord>, Error> {
    let mut rejected = Vec::new();
    let refs: Vec<&SchoolRef> = records.iter().map(|(_, r)| &r.school).collect();
    let (by_name, ids) = resolve_schools(tx, &refs).await?;

    // An email may be re-imported by its own student, never taken from another.
    let emails: Vec<String> = records
        .iter()
        .filter_map(|(_, r)| r.email.as_ref().map(|e| e.as_str().to_lowercase()))
        .collect();
    let owners: HashMap<String, String> = tx
        .query_typed(
            "SELECT lower(email), registration_no FROM students WHERE lower(email) = ANY($1)",
            &[(&emails, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| Error::postgres("checking emails against other students", e))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();

    let mut accepted = Vec::with_capacity(records.len());
    for (row, record) in records {
        let school = match school_id(&record.school, &by_name, &ids) {
            Ok(id) => id,
            Err(reason) => {
                rejected.push(reject(row, Field::School, reason));
                continue;
            }
        };
        if let Some(email) = &record.email {
            if let Some(owner) = owners.get(&email.as_str().to_lowercase()) {
                if owner != record.registration_no.as_str() {
                    rejected.push(reject(
                        row,
                        Field::Email,
                        format!("already belongs to student {owner}"),
                    ));
                    continue;
                }
            }
        }
        accepted.push((record, school));
    }
    Ok(Checked { accepted, rejected })
}

pub async fn load_students(
    tx: &Client,
    records: Vec<(u32, StudentRecord)>,
    jwt_secret: &SecretString,
    password: PasswordPolicy,
) -> Result<Loaded, Error> {
    let Checked { accepted, rejected } = check_students(tx, records).await?;
    let mut loaded = Loaded {
        rejected,
        ..Loaded::default()
    };
    if accepted.is_empty() {
        return Ok(loaded);
    }

    let registration: Vec<String> = accepted
        .iter()
        .map(|(r, _)| r.registration_no.as_str().to_owned())
        .collect();
    let existing: HashSet<String> = tx
        .query_typed(
            "SELECT registration_no FROM students WHERE registration_no = ANY($1)",
            &[(&registration, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| Error::postgres("finding existing students", e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Passwords only matter for new rows: an update never touches them. Existing rows still
    // carry the unusable hash, because the insert half of the upsert must be a valid row.
    let new_rows: Vec<usize> = (0..accepted.len())
        .filter(|i| !existing.contains(&registration[*i]))
        .collect();
    let mut hashes: Vec<String> = vec![unusable_hash()?; accepted.len()];
    if password == PasswordPolicy::LegacyDateOfBirthPincode {
        let inputs: Vec<(String, String)> = new_rows
            .iter()
            .map(|&i| {
                (
                    accepted[i].0.date_of_birth.format("%Y%m%d").to_string(),
                    accepted[i].0.pincode.as_str().to_owned(),
                )
            })
            .collect();
        let computed = tokio::task::spawn_blocking(move || legacy_hashes(&inputs))
            .await
            .map_err(|e| Error::Failed(format!("password hashing stopped: {e}")))??;
        for (&i, hash) in new_rows.iter().zip(computed) {
            hashes[i] = hash;
        }
    }
    let issued_at = now_secs();

    tx.batch_execute(
        "CREATE TEMP TABLE incoming_students (
           registration_no text, email text, full_name text, school_id uuid, phone text,
           date_of_birth date, pincode text, address text, program_name text, batch int,
           qr_code_token text, password_hash text
         ) ON COMMIT DROP",
    )
    .await
    .map_err(|e| Error::postgres("preparing the students load", e))?;
    // COPY needs a prepared statement; inside this transaction that is safe behind PgBouncer too.
    let sink = tx
        .copy_in::<_, bytes::Bytes>("COPY incoming_students FROM STDIN (FORMAT binary)")
        .await
        .map_err(|e| Error::postgres("starting the students COPY", e))?;
    let types = [
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
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for (i, (record, school)) in accepted.iter().enumerate() {
        // Minted for every row; the upsert keeps an existing student's token.
        let token = token::student_token(
            jwt_secret,
            record.registration_no.as_str(),
            &random_nonce(),
            issued_at,
        )
        .map_err(|e| Error::Failed(format!("signing a QR token: {e}")))?;
        let email = record.email.as_ref().map(|e| e.as_str());
        let phone = record.phone.as_ref().map(|p| p.as_str());
        let date: NaiveDate = record.date_of_birth;
        let values: [&(dyn ToSql + Sync); 12] = [
            &record.registration_no.as_str(),
            &email,
            &record.full_name,
            school,
            &phone,
            &date,
            &record.pincode.as_str(),
            &record.address,
            &record.program_name,
            &record.batch,
            &token,
            &hashes[i],
        ];
        writer
            .as_mut()
            .write(&values)
            .await
            .map_err(|e| Error::postgres("copying students", e))?;
    }
    writer
        .finish()
        .await
        .map_err(|e| Error::postgres("finishing the students COPY", e))?;

    let rows = tx
        .query_typed(
            "INSERT INTO students AS s (registration_no, email, full_name, school_id, phone, date_of_birth,
                                        pincode, address, program_name, batch, qr_code_token,
                                        password_hash, password_reset_required)
             SELECT registration_no, email, full_name, school_id, phone, date_of_birth, pincode, address,
                    program_name, batch, qr_code_token, password_hash, true
               FROM incoming_students
             ON CONFLICT (registration_no) DO UPDATE
                SET email = EXCLUDED.email, full_name = EXCLUDED.full_name, school_id = EXCLUDED.school_id,
                    phone = EXCLUDED.phone, date_of_birth = EXCLUDED.date_of_birth, pincode = EXCLUDED.pincode,
                    address = EXCLUDED.address, program_name = EXCLUDED.program_name, batch = EXCLUDED.batch,
                    updated_at = now()
              WHERE (s.email, s.full_name, s.school_id, s.phone, s.date_of_birth, s.pincode, s.address,
                     s.program_name, s.batch)
                    IS DISTINCT FROM
                    (EXCLUDED.email, EXCLUDED.full_name, EXCLUDED.school_id, EXCLUDED.phone,
                     EXCLUDED.date_of_birth, EXCLUDED.pincode, EXCLUDED.address, EXCLUDED.program_name,
                     EXCLUDED.batch)
             RETURNING s.id, (xmax = 0)",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("upserting students", e))?;
    count(&mut loaded, &rows, accepted.len());
    Ok(loaded)
}

/// Resolves schools; writes nothing.
pub async fn check_stalls(
    tx: &Client,
    records: Vec<(u32, StallRecord)>,
) -> Result<Checked<StallRecord>, Error> {
    let refs: Vec<&SchoolRef> = records.iter().map(|(_, r)| &r.school).collect();
    let (by_name, ids) = resolve_schools(tx, &refs).await?;
    let mut checked = Checked {
        accepted: Vec::with_capacity(records.len()),
        rejected: Vec::new(),
    };
    for (row, record) in records {
        match school_id(&record.school, &by_name, &ids) {
            Ok(school) => checked.accepted.push((record, school)),
            Err(reason) => checked.rejected.push(reject(row, Field::School, reason)),
        }
    }
    Ok(checked)
}

pub async fn load_stalls(
    tx: &Client,
    records: Vec<(u32, StallRecord)>,
    jwt_secret: &SecretString,
) -> Result<Loaded, Error> {
    let Checked { accepted, rejected } = check_stalls(tx, records).await?;
    let mut loaded = Loaded {
        rejected,
        ..Loaded::default()
    };
    if accepted.is_empty() {
        return Ok(loaded);
    }
    let issued_at = now_secs();
    tx.batch_execute(
        "CREATE TEMP TABLE incoming_stalls (
           stall_number text, stall_name text, school_id uuid, description text, location text, qr_code_token text
         ) ON COMMIT DROP",
    )
    .await
    .map_err(|e| Error::postgres("preparing the stalls load", e))?;
    let sink = tx
        .copy_in::<_, bytes::Bytes>("COPY incoming_stalls FROM STDIN (FORMAT binary)")
        .await
        .map_err(|e| Error::postgres("starting the stalls COPY", e))?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::TEXT,
            Type::TEXT,
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ],
    );
    pin_mut!(writer);
    for (record, school) in &accepted {
        // Minted for every row; the upsert keeps an existing stall's token.
        let token = token::stall_token(
            jwt_secret,
            record.stall_number.as_str(),
            &random_nonce(),
            issued_at,
        )
        .map_err(|e| Error::Failed(format!("signing a QR token: {e}")))?;
        let values: [&(dyn ToSql + Sync); 6] = [
            &record.stall_number.as_str(),
            &record.stall_name,
            school,
            &record.description,
            &record.location,
            &token,
        ];
        writer
            .as_mut()
            .write(&values)
            .await
            .map_err(|e| Error::postgres("copying stalls", e))?;
    }
    writer
        .finish()
        .await
        .map_err(|e| Error::postgres("finishing the stalls COPY", e))?;
    let rows = tx
        .query_typed(
            "INSERT INTO stalls AS s (stall_number, stall_name, school_id, description, location, qr_code_token)
             SELECT stall_number, stall_name, school_id, description, location, qr_code_token FROM incoming_stalls
             ON CONFLICT (stall_number) DO UPDATE
                SET stall_name = EXCLUDED.stall_name, school_id = EXCLUDED.school_id,
                    description = EXCLUDED.description, location = EXCLUDED.location, updated_at = now()
              WHERE (s.stall_name, s.school_id, s.description, s.location)
                    IS DISTINCT FROM (EXCLUDED.stall_name, EXCLUDED.school_id, EXCLUDED.description, EXCLUDED.location)
             RETURNING s.id, (xmax = 0)",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("upserting stalls", e))?;
    count(&mut loaded, &rows, accepted.len());
    Ok(loaded)
}

/// `xmax = 0` marks a freshly inserted row; rows left out of RETURNING were unchanged.
fn count(loaded: &mut Loaded, rows: &[tokio_postgres::Row], accepted: usize) {
    for row in rows {
        if row.get::<_, bool>(1) {
            loaded.inserted += 1;
        } else {
            loaded.updated += 1;
        }
        loaded.touched.push(row.get(0));
    }
    loaded.unchanged = accepted - rows.len();
}
