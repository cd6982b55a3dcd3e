//! Loading valid rows: schools resolved by name or id, conflicts with other records rejected,
//! then every row upserted by its natural key in one set-based statement fed by binary COPY.
//! Runs inside the caller's transaction, which also records the outcome.
//!
//! A file may hold 200,000 rows, so nothing here copies the records: checks borrow their
//! strings, rejected rows are dropped in place, and the upsert answers with counts and one
//! array of ids rather than a row per record.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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

/// Resolves schools and refuses emails that belong to another student; writes nothing.
pub async fn check_students(
    client: &Client,
    records: Vec<(u32, StudentRecord)>,
) -> Result<Checked<StudentRecord>, Error> {
    let (by_name, ids) = resolve_schools(client, records.iter().map(|(_, r)| &r.school)).await?;
    // An email may be re-imported by its own student, never taken from another. The parser
    // has lower-cased them already.
    let emails: Vec<&str> = records
        .iter()
        .filter_map(|(_, r)| r.email.as_ref().map(|e| e.as_str()))
        .collect();
    let owners: HashMap<String, String> = client
        .query_typed(
            "SELECT lower(email), registration_no FROM students WHERE lower(email) = ANY($1)",
            &[(&emails, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| Error::postgres("checking emails against other students", e))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    drop(emails);
    Ok(sift(records, |record| {
        let school =
            school_id(&record.school, &by_name, &ids).map_err(|reason| (Field::School, reason))?;
        if let Some(owner) = record
            .email
            .as_ref()
            .and_then(|email| owners.get(&email.as_str().to_lowercase()))
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

/// Runs the upsert whose `RETURNING id, inserted` is `upsert`, and counts: the rows it left
/// out were unchanged.
async fn upsert(
    client: &Client,
    upsert: &str,
    accepted: usize,
    rejected: Vec<RowError>,
) -> Result<Loaded, Error> {
    let sql = format!(
        "WITH upserted AS ({upsert})
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
                coalesce(array_agg(id), '{{}}')
           FROM upserted"
    );
    let row = client
        .query_typed(&sql, &[])
        .await
        .map_err(|e| Error::postgres("upserting the rows", e))?;
    let row = row
        .first()
        .ok_or_else(|| Error::Failed("the upsert returned no counts".into()))?;
    let (inserted, updated): (i64, i64) = (row.get(0), row.get(1));
    let touched: Vec<Uuid> = row.get(2);
    Ok(Loaded {
        inserted: inserted as usize,
        updated: updated as usize,
        unchanged: accepted.saturating_sub(touched.len()),
        rejected,
        touched,
    })
}

pub async fn load_students(
    client: &Client,
    records: Vec<(u32, StudentRecord)>,
    jwt_secret: &SecretString,
    password: PasswordPolicy,
) -> Result<Loaded, Error> {
    let Checked {
        accepted,
        schools,
        rejected,
    } = check_students(client, records).await?;
    if accepted.is_empty() {
        return Ok(Loaded {
            rejected,
            ..Loaded::default()
        });
    }
    // Passwords only matter for new rows: an update never touches them. Existing rows still
    // carry the unusable hash, because the insert half of the upsert must be a valid row.
    let unusable = unusable_hash()?;
    let mut legacy: HashMap<usize, String> = HashMap::new();
    if password == PasswordPolicy::LegacyDateOfBirthPincode {
        let registration: Vec<&str> = accepted
            .iter()
            .map(|(_, r)| r.registration_no.as_str())
            .collect();
        let existing: HashSet<String> = client
            .query_typed(
                "SELECT registration_no FROM students WHERE registration_no = ANY($1)",
                &[(&registration, Type::TEXT_ARRAY)],
            )
            .await
            .map_err(|e| Error::postgres("finding existing students", e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let new_rows: Vec<usize> = (0..accepted.len())
            .filter(|i| !existing.contains(registration[*i]))
            .collect();
        let inputs: Vec<(String, String)> = new_rows
            .iter()
            .map(|&i| {
                (
                    accepted[i].1.date_of_birth.format("%Y%m%d").to_string(),
                    accepted[i].1.pincode.as_str().to_owned(),
                )
            })
            .collect();
        let computed = tokio::task::spawn_blocking(move || legacy_hashes(&inputs))
            .await
            .map_err(|e| Error::Failed(format!("password hashing stopped: {e}")))??;
        legacy = new_rows.into_iter().zip(computed).collect();
    }
    let issued_at = now_secs();

    client
        .batch_execute(
            "CREATE TEMP TABLE incoming_students (
               registration_no text, email text, full_name text, school_id uuid, phone text,
               date_of_birth date, pincode text, address text, program_name text, batch int,
               qr_code_token text, password_hash text
             ) ON COMMIT DROP",
        )
        .await
        .map_err(|e| Error::postgres("preparing the students load", e))?;
    // COPY needs a prepared statement; inside this transaction that is safe behind PgBouncer too.
    let sink = client
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
    for (i, ((_, record), school)) in accepted.iter().zip(&schools).enumerate() {
        // Minted for every row; the upsert keeps an existing student's token.
        let token = token::student_token(
            jwt_secret,
            record.registration_no.as_str(),
            &random_nonce(),
            issued_at,
        )
        .map_err(|e| Error::Failed(format!("signing a QR token: {e}")))?;
        let hash: &str = legacy.get(&i).map_or(unusable.as_str(), String::as_str);
        let email = record.email.as_ref().map(|e| e.as_str());
        let phone = record.phone.as_ref().map(|p| p.as_str());
        let values: [&(dyn ToSql + Sync); 12] = [
            &record.registration_no.as_str(),
            &email,
            &record.full_name,
            school,
            &phone,
            &record.date_of_birth,
            &record.pincode.as_str(),
            &record.address,
            &record.program_name,
            &record.batch,
            &token,
            &hash,
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
    let accepted_count = accepted.len();
    drop(accepted);
    upsert(
        client,
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
         RETURNING s.id, (xmax = 0) AS inserted",
        accepted_count,
        rejected,
    )
    .await
}

pub async fn load_stalls(
    client: &Client,
    records: Vec<(u32, StallRecord)>,
    jwt_secret: &SecretString,
) -> Result<Loaded, Error> {
    let Checked {
        accepted,
        schools,
        rejected,
    } = check_stalls(client, records).await?;
    if accepted.is_empty() {
        return Ok(Loaded {
            rejected,
            ..Loaded::default()
        });
    }
    let issued_at = now_secs();
    client
        .batch_execute(
            "CREATE TEMP TABLE incoming_stalls (
               stall_number text, stall_name text, school_id uuid, description text, location text, qr_code_token text
             ) ON COMMIT DROP",
        )
        .await
        .map_err(|e| Error::postgres("preparing the stalls load", e))?;
    let sink = client
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
    for ((_, record), school) in accepted.iter().zip(&schools) {
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
    upsert(
        client,
        "INSERT INTO stalls AS s (stall_number, stall_name, school_id, description, location, qr_code_token)
         SELECT stall_number, stall_name, school_id, description, location, qr_code_token FROM incoming_stalls
         ON CONFLICT (stall_number) DO UPDATE
            SET stall_name = EXCLUDED.stall_name, school_id = EXCLUDED.school_id,
                description = EXCLUDED.description, location = EXCLUDED.location, updated_at = now()
          WHERE (s.stall_name, s.school_id, s.description, s.location)
                IS DISTINCT FROM (EXCLUDED.stall_name, EXCLUDED.school_id, EXCLUDED.description, EXCLUDED.location)
         RETURNING s.id, (xmax = 0) AS inserted",
        accepted.len(),
        rejected,
    )
    .await
}
