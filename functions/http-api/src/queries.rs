//! The SQL only the API runs: the schools its template lists, the event an upload names, and
//! the `imports` row that awaits a presigned upload. Routes parse, authorise, call these and
//! respond.

use tokio_postgres::types::Type;
use tokio_postgres::Client;
use uuid::Uuid;

use shared::error::Error;
use shared::import::BlankCells;
use shared::kind::Kind;

/// Every school, by name: the template's schools sheet.
pub async fn schools(client: &Client) -> Result<Vec<(Uuid, String)>, Error> {
    let rows = client
        .query_typed(
            "SELECT id, school_name FROM schools ORDER BY school_name",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("listing the schools", e))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The event with this id or this code (case-insensitively), if any.
pub async fn event(client: &Client, code_or_id: &str) -> Result<Option<Uuid>, Error> {
    let id = Uuid::parse_str(code_or_id).ok();
    let rows = client
        .query_typed(
            "SELECT id FROM events WHERE id = $1 OR lower(event_code) = lower($2)",
            &[(&id, Type::UUID), (&code_or_id, Type::TEXT)],
        )
        .await
        .map_err(|e| Error::postgres("looking up an event", e))?;
    Ok(rows.first().map(|row| row.get(0)))
}

/// What a presigned upload will be imported with, recorded before the file arrives.
pub struct PendingImport<'a> {
    pub id: Uuid,
    pub kind: Kind,
    pub bucket: &'a str,
    pub key: &'a str,
    pub blank_cells: BlankCells,
    pub event: Option<Uuid>,
}

/// The `imports` row awaiting the upload; the importer adopts it when the file arrives.
pub async fn insert_pending_import(
    client: &Client,
    pending: &PendingImport<'_>,
) -> Result<(), Error> {
    client
        .query_typed(
            "INSERT INTO imports (id, kind, bucket, object_key, status, blank_cells, event_id)
             VALUES ($1, $2, $3, $4, 'awaiting_upload', $5, $6)",
            &[
                (&pending.id, Type::UUID),
                (&pending.kind.table(), Type::TEXT),
                (&pending.bucket, Type::TEXT),
                (&pending.key, Type::TEXT),
                (&pending.blank_cells.as_str(), Type::TEXT),
                (&pending.event, Type::UUID),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::postgres("recording the awaited upload", e))
}
