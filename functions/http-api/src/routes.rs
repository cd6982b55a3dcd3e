//! One function per route. Each checks who may call it, then asks the shared crate.

use std::time::Duration;

use crate::auth::{Principal, Role};
use crate::qr_reads::{self, ReadError};
use crate::queries;
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::import::{claim, event, BlankCells, Importer};
use shared::kind::Kind;
use shared::spreadsheet::Format;
use uuid::Uuid;

use crate::respond::{self, ApiError};
use crate::Api;

/// How long a presigned upload or report URL works.
const PRESIGNED_FOR: Duration = Duration::from_secs(15 * 60);

fn require_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.is_admin() {
        Ok(())
    } else {
        tracing::info!(role = ?principal.role, "admin route refused");
        Err(ApiError::forbidden())
    }
}

/// Who may read a QR, as the app decides for the same data: any signed-in user reads a stall's
/// (`GET /api/stall/:id/qr-code` only authenticates); a student's is the student's own, or an
/// admin's to read.
fn may_read_qr(principal: &Principal, kind: Kind, id: Uuid) -> Result<(), ApiError> {
    let allowed = match kind {
        Kind::Stalls => true,
        Kind::Students => {
            principal.is_admin()
                || (principal.role == Role::Student && principal.id == id.to_string())
        }
    };
    if allowed {
        Ok(())
    } else {
        tracing::info!(role = ?principal.role, %kind, "QR of another record refused");
        Err(ApiError::forbidden())
    }
}

fn read_error(error: ReadError) -> ApiError {
    match error {
        ReadError::NotFound(kind) => ApiError::not_found(format!(
            "no {} with this id",
            kind.title().to_lowercase().trim_end_matches('s')
        )),
        ReadError::DatabaseUnavailable(error) => {
            tracing::warn!(error = %error, "Postgres unavailable for a QR read");
            ApiError::unavailable()
        }
        ReadError::Other(error) => ApiError::internal(error),
    }
}

/// A database failure as the user meets it: out of reach or too slow is 503 (try again
/// shortly); a statement the database refused is a fault of ours, 500.
fn database_error(error: shared::error::Error) -> ApiError {
    use shared::error::Error;
    match &error {
        Error::DatabaseTimeout { .. } => {}
        Error::Postgres { source, .. } if source.as_db_error().is_none() => {}
        _ => return ApiError::internal(error),
    }
    tracing::warn!(error = %error, "Postgres unavailable");
    ApiError::unavailable()
}

fn parse_kind(text: &str) -> Result<Kind, ApiError> {
    match text {
        "students" => Ok(Kind::Students),
        "stalls" => Ok(Kind::Stalls),
        _ => Err(ApiError::bad_request(format!(
            "`{text}` is not a kind: use students or stalls"
        ))),
    }
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::bad_request("the id is not a valid UUID"))
}

fn json_body<T: for<'de> Deserialize<'de>>(request: &Request) -> Result<T, ApiError> {
    let text = match request.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes.as_slice(),
        _ => b"",
    };
    if text.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("the JSON body is not valid: {e}")))
}

/// Answers from the last check while it is fresh ([`crate::HEALTH_CACHED_FOR`]).
pub async fn health(api: &Api) -> Response<Body> {
    let recent = api.health.lock().ok().and_then(|last| {
        last.filter(|(_, at)| at.elapsed() < crate::HEALTH_CACHED_FOR)
            .map(|(healthy, _)| healthy)
    });
    let healthy = match recent {
        Some(healthy) => healthy,
        None => {
            let healthy = qr_reads::healthy(&api.reader).await;
            if let Ok(mut last) = api.health.lock() {
                *last = Some((healthy, std::time::Instant::now()));
            }
            healthy
        }
    };
    if healthy {
        respond::json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
    } else {
        respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "unavailable" }),
        )
    }
}

pub async fn cache_stats(api: &Api, principal: &Principal) -> Result<Response<Body>, ApiError> {
    require_admin(principal)?;
    let stats = qr_reads::cache_stats(&api.reader).await.map_err(|error| {
        tracing::warn!(error = %error, "cache statistics unavailable");
        ApiError::unavailable()
    })?;
    Ok(respond::json(StatusCode::OK, &stats))
}

pub async fn qr(
    api: &Api,
    request: &Request,
    principal: &Principal,
    kind: &str,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let kind = parse_kind(kind)?;
    let id = parse_id(id)?;
    may_read_qr(principal, kind, id)?;
    let image = api
        .reader
        .image(kind, id, &api.jwt_secret)
        .await
        .map_err(read_error)?;
    image.source.static_read_metrics().emit();

    let digest = Sha256::digest(image.data_url.as_bytes());
    let etag = format!("\"{}\"", hex::encode(&digest[..8]));
    let matches = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let wants_json = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let mut response = if matches {
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else if wants_json {
        respond::json(
            StatusCode::OK,
            &serde_json::json!({ "qr_image": image.data_url }),
        )
    } else {
        respond::bytes(
            StatusCode::OK,
            "image/png",
            image.png().map_err(ApiError::internal)?,
        )
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Authorization, Cookie"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert("x-cache", HeaderValue::from_static(image.source.as_str()));
    Ok(response)
}

/// `GET /students/me/qr` (`id` None: the caller, who must be a student) and
/// `GET /qr/students/{id}/rotating`: the rotating QR in the app's `getQRCode` envelope, or the
/// PNG when the client accepts `image/png` and not JSON.
pub async fn rotating_qr(
    api: &Api,
    request: &Request,
    principal: &Principal,
    id: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let id = match id {
        Some(id) => parse_id(id)?,
        None if principal.role == Role::Student => parse_id(&principal.id)?,
        None => {
            tracing::info!(role = ?principal.role, "own rotating QR asked for by a non-student");
            return Err(ApiError::forbidden());
        }
    };
    may_read_qr(principal, Kind::Students, id)?;
    let now = chrono::Utc::now();
    let rotating = api
        .reader
        .rotating(&api.rotating, id, now.timestamp())
        .await
        .map_err(read_error)?;
    rotating.image.source.rotating_read_metrics().emit();
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut response = if accept.contains("image/png") && !accept.contains("application/json") {
        respond::bytes(
            StatusCode::OK,
            "image/png",
            rotating.image.png().map_err(ApiError::internal)?,
        )
    } else {
        respond::json(
            StatusCode::OK,
            &respond::app_success(
                serde_json::json!({
                    "qr_code": rotating.image.data_url,
                    "qr_code_token": rotating.token,
                    "registration_no": rotating.registration_no,
                    "rotation_info": {
                        "expires_in_seconds": shared::rotating::seconds_left(rotating.window, now.timestamp()),
                        "rotation_interval": shared::token::ROTATION_SECS,
                        "grace_period_seconds": shared::token::GRACE_WINDOWS * shared::token::ROTATION_SECS,
                    },
                }),
                now,
            ),
        )
    };
    let headers = response.headers_mut();
    // A new image every 30 s: nothing may keep one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-cache",
        HeaderValue::from_static(rotating.image.source.as_str()),
    );
    Ok(response)
}

pub async fn template(
    api: &Api,
    principal: &Principal,
    kind: &str,
) -> Result<Response<Body>, ApiError> {
    require_admin(principal)?;
    let kind = parse_kind(kind)?;
    let schools = api
        .reader
        .database("reading schools", async |client| {
            queries::schools(client).await
        })
        .await
        .map_err(database_error)?;
    let bytes =
        shared::spreadsheet::template::template_xlsx(kind, &schools).map_err(ApiError::internal)?;
    let mut response = respond::bytes(
        StatusCode::OK,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        bytes,
    );
    let disposition = format!("attachment; filename=\"{}-template.xlsx\"", kind.table());
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewImport {
    kind: String,
    filename: String,
    /// Bytes the admin will upload; bound into the signature.
    size: u64,
    /// The event of the uploaded stalls that name none: its code or id.
    event: Option<String>,
    /// `keep` (the default) or `clear`: what a blank cell does to a stored value.
    blank_cells: Option<BlankCells>,
}

/// The upload's event, by code (case-insensitively) or id; unknown is a 422 naming it.
async fn resolve_event(
    api: &Api,
    kind: Kind,
    event: Option<&str>,
) -> Result<Option<Uuid>, ApiError> {
    let Some(event) = event.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    if kind != Kind::Stalls {
        return Err(ApiError::bad_request(
            "`event` applies to stalls imports only",
        ));
    }
    let found = api
        .reader
        .database("finding an event", async |client| {
            queries::event(client, event).await
        })
        .await
        .map_err(database_error)?;
    match found {
        Some(id) => Ok(Some(id)),
        None => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_event",
            format!("no event has the code or id `{event}`"),
        )),
    }
}

/// A file name safe in a key: its last path part, ASCII letters, digits, `.`, `-`, `_` only.
/// The extension (what decides the format) is kept apart, so a name in any script, say
/// `छात्र सूची.xlsx`, keeps it: `upload.xlsx`.
pub fn sanitize_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let (stem, extension) = match last.rsplit_once('.') {
        Some((stem, extension)) if !extension.is_empty() => (stem, Some(extension)),
        _ => (last, None),
    };
    let clean = |part: &str, keep: usize| -> String {
        let mut clean: String = part
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        while clean.contains("--") {
            clean = clean.replace("--", "-");
        }
        let clean = clean.replace("-.", ".").replace(".-", ".");
        let clean = clean.trim_matches(|c| c == '.' || c == '-');
        let start = clean.len().saturating_sub(keep);
        clean[start..].to_owned()
    };
    let stem = Some(clean(stem, 90)).filter(|s| !s.is_empty());
    let extension = extension
        .map(|e| clean(e, 10).to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric()));
    match (stem, extension) {
        (Some(stem), Some(extension)) => format!("{stem}.{extension}"),
        (None, Some(extension)) => format!("upload.{extension}"),
        (Some(stem), None) => stem,
        (None, None) => "upload".into(),
    }
}

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Format::Xlsm => "application/vnd.ms-excel.sheet.macroEnabled.12",
        Format::Xlsb => "application/vnd.ms-excel.sheet.binary.macroEnabled.12",
        Format::Xls => "application/vnd.ms-excel",
        Format::Ods => "application/vnd.oasis.opendocument.spreadsheet",
        Format::Csv => "text/csv",
    }
}

pub async fn create_import(
    api: &Api,
    request: &Request,
    principal: &Principal,
) -> Result<Response<Body>, ApiError> {
    require_admin(principal)?;
    let body: NewImport = json_body(request)?;
    let kind = parse_kind(&body.kind)?;
    let name = sanitize_file_name(&body.filename);
    let format = Format::from_file_name(&name).ok_or_else(|| {
        ApiError::bad_request("the file must be .xlsx, .xlsm, .xlsb, .xls, .ods or .csv")
    })?;
    let max = api.config.import.limits.max_bytes;
    if body.size == 0 || body.size > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
            format!("files are limited to {max} bytes"),
        ));
    }
    let bucket = api.bucket.as_str();
    let id = Uuid::new_v4();
    let key = format!("{}{id}/{name}", event::upload_prefix(kind));
    let event = resolve_event(api, kind, body.event.as_deref()).await?;
    let pending = queries::PendingImport {
        id,
        kind,
        bucket,
        key: &key,
        blank_cells: body.blank_cells.unwrap_or_default(),
        event,
    };
    api.reader
        .database("registering an import", async |client| {
            queries::insert_pending_import(client, &pending).await
        })
        .await
        .map_err(database_error)?;
    let content_type = content_type(format);
    let url = api
        .storage
        .presign_put(bucket, &key, content_type, body.size as i64, PRESIGNED_FOR)
        .await
        .map_err(ApiError::internal)?;
    Ok(respond::json(
        StatusCode::CREATED,
        &serde_json::json!({
            "import_id": id,
            "key": key,
            "upload": {
                "method": "PUT",
                "url": url,
                "headers": { "Content-Type": content_type, "Content-Length": body.size.to_string() },
                "expires_in_seconds": PRESIGNED_FOR.as_secs(),
            },
        }),
    ))
}

pub async fn import_status(
    api: &Api,
    principal: &Principal,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    require_admin(principal)?;
    let id = parse_id(id)?;
    let record = api
        .reader
        .database("reading an import", async |client| {
            claim::find(client, id).await
        })
        .await
        .map_err(database_error)?
        .ok_or_else(|| ApiError::not_found("no import with this id"))?;
    let mut urls = Vec::new();
    for key in [&record.report_key, &record.rejected_key] {
        urls.push(match key {
            Some(key) => Some(
                api.storage
                    .presign_get(&record.bucket, key, PRESIGNED_FOR)
                    .await
                    .map_err(ApiError::internal)?,
            ),
            None => None,
        });
    }
    let mut body = serde_json::to_value(&record).map_err(ApiError::internal)?;
    body["report_url"] = serde_json::json!(urls[0]);
    body["rejected_url"] = serde_json::json!(urls[1]);
    Ok(respond::json(StatusCode::OK, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Validate {
    key: Option<String>,
    import_id: Option<Uuid>,
    /// As in `POST /imports`; an `import_id` brings the options it was created with.
    event: Option<String>,
    blank_cells: Option<BlankCells>,
}

pub async fn validate(
    api: &Api,
    request: &Request,
    principal: &Principal,
) -> Result<Response<Body>, ApiError> {
    require_admin(principal)?;
    let body: Validate = json_body(request)?;
    let bucket = api.bucket.as_str();
    let unavailable = |error: shared::error::Error| {
        tracing::warn!(error = %error, "a service is unavailable for a dry run");
        ApiError::unavailable()
    };
    let (key, stored) = match (body.key, body.import_id) {
        (Some(key), None) => (key, None),
        (None, Some(id)) => {
            let record = api
                .reader
                .database("reading an import", async |client| {
                    claim::find(client, id).await
                })
                .await
                .map_err(database_error)?
                .ok_or_else(|| ApiError::not_found("no import with this id"))?;
            (record.object_key.clone(), Some(record.options()))
        }
        _ => return Err(ApiError::bad_request("give either `key` or `import_id`")),
    };
    let Ok((kind, _)) = event::classify(&key) else {
        return Err(ApiError::bad_request(
            "the key must be a spreadsheet under imports/students/ or imports/stalls/",
        ));
    };
    let mut options = stored.unwrap_or_default();
    if let Some(event) = resolve_event(api, kind, body.event.as_deref()).await? {
        options.event = Some(event);
    }
    if let Some(blank_cells) = body.blank_cells {
        options.blank_cells = blank_cells;
    }
    let importer = Importer {
        db: api.reader.db(),
        cache: api.reader.cache(),
        storage: &api.storage,
        settings: &api.config.import,
        qr: &api.config.qr,
        jwt_secret: &api.jwt_secret,
    };
    let dry = importer
        .dry_run(bucket, &key, options)
        .await
        .map_err(unavailable)?;
    Ok(respond::json(StatusCode::OK, &dry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_made_safe_for_keys() {
        assert_eq!(
            sanitize_file_name("Batch 2024 (CSE).xlsx"),
            "Batch-2024-CSE.xlsx"
        );
        assert_eq!(sanitize_file_name("../../etc/passwd.csv"), "passwd.csv");
        assert_eq!(sanitize_file_name("C:\\Users\\me\\list.ods"), "list.ods");
        assert_eq!(sanitize_file_name("...."), "upload");
        assert!(sanitize_file_name(&format!("{}.xlsx", "a".repeat(300))).ends_with(".xlsx"));
        assert!(sanitize_file_name(&format!("{}.xlsx", "a".repeat(300))).len() <= 100);
    }

    #[test]
    fn names_in_any_script_keep_their_extension() {
        assert_eq!(sanitize_file_name("छात्र सूची.xlsx"), "upload.xlsx");
        assert_eq!(sanitize_file_name("छात्र सूची 2024.XLSX"), "2024.xlsx");
        assert_eq!(sanitize_file_name("学生名单.csv"), "upload.csv");
        assert_eq!(sanitize_file_name("طلاب-CSE.ods"), "CSE.ods");
        assert_eq!(sanitize_file_name("résumé.xls"), "r-sum.xls");
        // A Devanagari "extension" is not one: no format, refused by the route.
        assert_eq!(sanitize_file_name("सूची.एक्सेल"), "upload");
        assert_eq!(sanitize_file_name("noextension"), "noextension");
    }
}
