//! The HTTP API (API Gateway HTTP API, lambda_http): QR images read through the cache, the
//! admin's side of imports, cache statistics and health. Every route but `/health` needs the
//! app's own session token.

pub mod auth;
pub mod qr_reads;
mod queries;
mod respond;
mod routes;

use crate::auth::Principal;
use crate::qr_reads::QrReader;
use lambda_http::http::{header, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use secrecy::SecretString;
use shared::config::Config;
use shared::error::ConfigError;
use shared::storage::Storage;
use shared::token::RotatingSigner;

pub use respond::ApiError;

/// Largest request body accepted; the API's bodies are small JSON documents.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest total of request header names and values accepted (API Gateway allows 10 KiB; a
/// function URL or a local emulator more): a session cookie and the usual headers fit easily.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long a request waits for Postgres, connecting included, before it answers 503: long
/// enough for Neon to wake a suspended compute (usually well under a second or two), short
/// enough that a silent database never holds a request for API Gateway's 30 s. A statement
/// still running then is cancelled on the server.
pub const DATABASE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long `/health` answers from its last check, so a flood of health checks reaches
/// Postgres and Redis at most once per interval per instance.
pub const HEALTH_CACHED_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Clients made once at cold start and reused by every request, with the settings the
/// routes cannot do without, checked then.
pub struct Api {
    pub config: Config,
    pub reader: QrReader,
    pub storage: Storage,
    /// Verifies session tokens and signs new rows' QR tokens (dry runs, rows with none).
    pub jwt_secret: SecretString,
    /// Signs students' rotating QR tokens.
    pub rotating: RotatingSigner,
    /// Where uploads arrive and reports are written.
    pub bucket: String,
    /// The last health check: whether both answered, and when.
    pub(crate) health: std::sync::Mutex<Option<(bool, std::time::Instant)>>,
}

impl Api {
    /// The API over these clients; a missing `JWT_SECRET` or `IMPORT_BUCKET` is refused here,
    /// at cold start, never by a request.
    pub fn new(config: Config, reader: QrReader, storage: Storage) -> Result<Api, ConfigError> {
        let jwt_secret = config.jwt_secret()?.clone();
        let bucket = config.import_bucket()?.to_owned();
        let rotating = RotatingSigner::new(&jwt_secret).map_err(|_| ConfigError::Invalid {
            name: "JWT_SECRET",
            reason: "not usable as an HMAC key".into(),
        })?;
        Ok(Api {
            health: std::sync::Mutex::new(None),
            rotating,
            config,
            reader,
            storage,
            jwt_secret,
            bucket,
        })
    }
}

/// Serves one request. Never fails: every error is a JSON response with its status.
pub async fn handle(api: &Api, request: Request) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = route(api, &request, &method, &segments).await;
    let response = result.unwrap_or_else(ApiError::into_response);
    tracing::info!(method = %method, path = %path, status = response.status().as_u16(), "request");
    response
}

/// The methods a path answers, or `None` for an unknown path.
fn allowed(segments: &[&str]) -> Option<&'static [Method]> {
    match segments {
        ["health"]
        | ["cache", "stats"]
        | ["qr", _, _]
        | ["qr", "students", _, "rotating"]
        | ["students", "me", "qr"]
        | ["imports", "template", _] => Some(&[Method::GET]),
        ["imports"] | ["imports", "validate"] => Some(&[Method::POST]),
        ["imports", _] => Some(&[Method::GET]),
        _ => None,
    }
}

async fn route(
    api: &Api,
    request: &Request,
    method: &Method,
    segments: &[&str],
) -> Result<Response<Body>, ApiError> {
    let Some(methods) = allowed(segments) else {
        return Err(ApiError::not_found("no such route"));
    };
    if !methods.contains(method) {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {}", methods[0]),
        )
        .into_response();
        response.headers_mut().insert(
            header::ALLOW,
            header::HeaderValue::from_static(methods[0].as_str()),
        );
        return Ok(response);
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers are limited to {MAX_HEADER_BYTES} bytes"),
        ));
    }
    if body_len(request) > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
        ));
    }
    if segments == ["health"] {
        return Ok(routes::health(api).await);
    }
    // A browser sends a cross-site form (urlencoded, multipart, text/plain) with the app's
    // cookie and without a preflight; a JSON body it cannot send that way.
    if *method == Method::POST && !is_json(request) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    let principal = authenticate(api, request)?;
    match segments {
        ["cache", "stats"] => routes::cache_stats(api, &principal).await,
        ["qr", kind, id] => routes::qr(api, request, &principal, kind, id).await,
        ["qr", "students", id, "rotating"] => {
            routes::rotating_qr(api, request, &principal, Some(id)).await
        }
        ["students", "me", "qr"] => routes::rotating_qr(api, request, &principal, None).await,
        ["imports", "template", kind] => routes::template(api, &principal, kind).await,
        ["imports", "validate"] => routes::validate(api, request, &principal).await,
        ["imports"] => routes::create_import(api, request, &principal).await,
        ["imports", id] => routes::import_status(api, &principal, id).await,
        _ => Err(ApiError::not_found("no such route")),
    }
}

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn body_len(request: &Request) -> usize {
    match request.body() {
        Body::Empty => 0,
        Body::Text(text) => text.len(),
        Body::Binary(bytes) => bytes.len(),
        _ => 0,
    }
}

/// The caller, from the Bearer header or the app's `token` cookie. The reason a token is
/// refused is logged, never echoed.
fn authenticate(api: &Api, request: &Request) -> Result<Principal, ApiError> {
    let header_value =
        |name: header::HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok());
    let token = auth::token_from_headers(
        header_value(header::AUTHORIZATION),
        header_value(header::COOKIE),
    )
    .ok_or_else(|| {
        tracing::info!(reason = "no token", "unauthenticated request");
        ApiError::unauthorized()
    })?;
    let secret = &api.jwt_secret;
    auth::verify(token, secret).map_err(|error| {
        tracing::info!(reason = %error, "token refused");
        ApiError::unauthorized()
    })
}
