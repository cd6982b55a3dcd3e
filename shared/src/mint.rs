//! Tokens for rows that have none. The app's own bulk upload leaves `qr_code_token` NULL and
//! mints one lazily on the row's first view; the warmer mints them all ahead of the event and
//! the API on a miss, in the app's format (see [`crate::token`]), never overwriting a token the
//! app minted meanwhile.

use secrecy::SecretString;
use tokio_postgres::types::Type;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::db::{self, RowFilter};
use crate::error::Error;
use crate::kind::Kind;
use crate::token;

/// Rows per UPDATE: one round trip each, short enough not to hold row locks the app waits on.
const MINT_BATCH: usize = 1_000;

/// The token the app would give a row: a student's `{n, t: "S", r}` JWT issued now, a stall's
/// keyed `STALL_` form.
pub fn token_for(secret: &SecretString, kind: Kind, natural_key: &str) -> Result<String, Error> {
    Ok(match kind {
        Kind::Students => token::student_token(
            secret,
            natural_key,
            &token::random_nonce(),
            chrono::Utc::now().timestamp(),
        )?,
        Kind::Stalls => token::stall_token(secret, natural_key)?,
    })
}

/// Mints a token for every matching row of `kind` that lacks one; returns how many rows took
/// ours (a row the app minted meanwhile keeps the app's and is not counted).
pub async fn mint_missing(
    client: &Client,
    secret: &SecretString,
    kind: Kind,
    filter: &RowFilter,
) -> Result<u64, Error> {
    let lacking = db::rows_lacking_tokens(client, kind, filter).await?;
    let mut minted = 0;
    for chunk in lacking.chunks(MINT_BATCH) {
        let tokens = chunk
            .iter()
            .map(|(id, key)| Ok((*id, token_for(secret, kind, key)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        minted += db::store_minted(client, kind, &tokens).await?.len() as u64;
    }
    Ok(minted)
}

/// The token of one row, minted first if it has none: `None` when no such row exists. Whoever
/// stored a token first (this call, another request, the app) is the one returned.
pub async fn token_of(
    client: &Client,
    secret: &SecretString,
    kind: Kind,
    id: Uuid,
) -> Result<Option<String>, Error> {
    let sql = format!(
        "SELECT qr_code_token, {} FROM {} WHERE id = $1",
        kind.natural_key(),
        kind.table()
    );
    let rows = client
        .query_typed(&sql, &[(&id, Type::UUID)])
        .await
        .map_err(|source| Error::postgres("reading a QR token", source))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let stored: Option<String> = row.get(0);
    if let Some(token) = stored.filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    let natural_key: String = row.get(1);
    let ours = token_for(secret, kind, &natural_key)?;
    if db::store_minted(client, kind, &[(id, ours.clone())])
        .await?
        .is_empty()
    {
        // Someone minted between the read and the update: theirs stands.
        let rows = client
            .query_typed(&sql, &[(&id, Type::UUID)])
            .await
            .map_err(|source| Error::postgres("reading a QR token", source))?;
        return Ok(rows
            .first()
            .and_then(|row| row.get::<_, Option<String>>(0))
            .filter(|t| !t.is_empty()));
    }
    Ok(Some(ours))
}
