//! A deterministic data set in the app's format: the app's four schools, students and stalls
//! with app-format QR tokens. The same size always gives the same rows and tokens.

use secrecy::SecretString;
use shared::error::Error;
use shared::token;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// The schools the app's first migration seeds.
pub const SCHOOLS: [&str; 4] = [
    "School of Computer Science and Engineering",
    "School of Mechanical Engineering",
    "School of Civil Engineering",
    "School of Electrical Engineering",
];

/// Issued-at of every demo token (2025-12-01), so tokens are the same run after run.
const ISSUED_AT: i64 = 1_764_547_200;
const ROWS_PER_STATEMENT: usize = 5_000;

#[derive(Debug, Clone, Copy)]
pub struct DemoSize {
    pub students: usize,
    pub stalls: usize,
}

fn nonce_for(index: usize) -> String {
    token::nonce(((index as u32).wrapping_mul(2_654_435_761) >> 16) as u16)
}

pub fn registration_no(index: usize) -> String {
    format!("{}{:06}", 2021 + index % 4, index)
}

pub fn stall_number(index: usize) -> String {
    format!("S-{:03}", index + 1)
}

/// Every tenth stall keeps the app's old unsigned `STALL_{number}` token, which its scanner
/// still accepts and the warmer must still render.
pub fn stall_token(secret: &SecretString, index: usize) -> Result<String, Error> {
    let number = stall_number(index);
    if index % 10 == 9 {
        return Ok(format!("STALL_{number}"));
    }
    Ok(token::stall_token(secret, &number)?)
}

pub fn student_token(secret: &SecretString, index: usize) -> Result<String, Error> {
    token::student_token(
        secret,
        &registration_no(index),
        &nonce_for(index),
        ISSUED_AT,
    )
    .map_err(Error::from)
}

async fn school_ids(client: &Client) -> Result<Vec<uuid::Uuid>, Error> {
    let names: Vec<&str> = SCHOOLS.to_vec();
    client
        .query_typed(
            "INSERT INTO schools (school_name) SELECT unnest($1::text[]) ON CONFLICT (school_name) DO NOTHING",
            &[(&names, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| Error::postgres("seeding schools", e))?;
    let rows = client
        .query_typed(
            "SELECT id FROM schools WHERE school_name = ANY($1::text[]) ORDER BY school_name",
            &[(&names, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| Error::postgres("reading schools", e))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Inserts (or refreshes) the data set.
pub async fn seed(client: &Client, secret: &SecretString, size: DemoSize) -> Result<(), Error> {
    let schools = school_ids(client).await?;
    for start in (0..size.students).step_by(ROWS_PER_STATEMENT) {
        let range = start..(start + ROWS_PER_STATEMENT).min(size.students);
        let registration: Vec<String> = range.clone().map(registration_no).collect();
        let names: Vec<String> = range.clone().map(|i| format!("Student {i}")).collect();
        let school: Vec<uuid::Uuid> = range.clone().map(|i| schools[i % schools.len()]).collect();
        let birth: Vec<String> = range
            .clone()
            .map(|i| format!("{}-{:02}-{:02}", 2000 + i % 6, 1 + i % 12, 1 + i % 28))
            .collect();
        let pincode: Vec<String> = range
            .clone()
            .map(|i| format!("{}", 110_001 + i % 800_000))
            .collect();
        let tokens: Vec<String> = range
            .clone()
            .map(|i| student_token(secret, i))
            .collect::<Result<_, _>>()?;
        client
            .query_typed(
                "INSERT INTO students (registration_no, full_name, school_id, date_of_birth, pincode,
                                       password_hash, password_reset_required, qr_code_token)
                 SELECT r, n, s, d::date, p, '!', true, t
                 FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[])
                      AS x(r, n, s, d, p, t)
                 ON CONFLICT (registration_no) DO UPDATE SET qr_code_token = EXCLUDED.qr_code_token",
                &[
                    (&registration, Type::TEXT_ARRAY),
                    (&names, Type::TEXT_ARRAY),
                    (&school, Type::UUID_ARRAY),
                    (&birth, Type::TEXT_ARRAY),
                    (&pincode, Type::TEXT_ARRAY),
                    (&tokens, Type::TEXT_ARRAY),
                ],
            )
            .await
            .map_err(|e| Error::postgres("seeding students", e))?;
    }
    let numbers: Vec<String> = (0..size.stalls).map(stall_number).collect();
    let names: Vec<String> = (0..size.stalls)
        .map(|i| format!("Stall {}", i + 1))
        .collect();
    let school: Vec<uuid::Uuid> = (0..size.stalls)
        .map(|i| schools[i % schools.len()])
        .collect();
    let tokens: Vec<String> = (0..size.stalls)
        .map(|i| stall_token(secret, i))
        .collect::<Result<_, _>>()?;
    // The app scans only stalls that belong to an event.
    let event: uuid::Uuid = client
        .query_typed(
            "INSERT INTO events (event_name, event_code, start_date, end_date,
                                 registration_start_date, registration_end_date, status)
             VALUES ('Demo Fest', 'DEMO-FEST', now(), now() + interval '1 day',
                     now() - interval '7 days', now(), 'ACTIVE')
             ON CONFLICT (event_code) DO UPDATE SET event_name = EXCLUDED.event_name
             RETURNING id",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("seeding the event", e))?
        .first()
        .map(|row| row.get(0))
        .ok_or(Error::Stopped("the demo event's insert"))?;
    client
        .query_typed(
            "INSERT INTO stalls (stall_number, stall_name, school_id, qr_code_token, event_id)
             SELECT n, m, s, t, $5 FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[])
                  AS x(n, m, s, t)
             ON CONFLICT (stall_number) DO UPDATE SET qr_code_token = EXCLUDED.qr_code_token",
            &[
                (&numbers, Type::TEXT_ARRAY),
                (&names, Type::TEXT_ARRAY),
                (&school, Type::UUID_ARRAY),
                (&tokens, Type::TEXT_ARRAY),
                (&event, Type::UUID),
            ],
        )
        .await
        .map_err(|e| Error::postgres("seeding stalls", e))?;
    // Every demo student attends the demo event, so the rotating pre-warm has an audience.
    client
        .query_typed(
            "INSERT INTO event_registrations (event_id, student_id, registration_type, payment_status)
             SELECT $1, id, 'FREE', 'NOT_REQUIRED' FROM students
             ON CONFLICT (event_id, student_id) DO NOTHING",
            &[(&event, Type::UUID)],
        )
        .await
        .map_err(|e| Error::postgres("registering the demo students", e))?;
    Ok(())
}
