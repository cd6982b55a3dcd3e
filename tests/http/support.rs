//! An API over a database, cache and bucket of the test's own, and requests as API Gateway
//! sends them.

use end_to_end::{config_with, s3_client, test_bucket, test_cache, TestDb, JWT_SECRET};
use http_api::qr_reads::QrReader;
use http_api::{handle, Api};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use lambda_http::{Body, Response};
use shared::cache::Cache;
use shared::config::Config;
use shared::db::Database;
use shared::storage::Storage;

pub struct World {
    pub db: TestDb,
    pub api: Api,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
}

pub fn config_with_bucket(db: &TestDb, cache: &Cache, bucket: &str) -> Config {
    config_with(db, cache, &[("IMPORT_BUCKET", bucket.to_string())])
}

impl World {
    pub async fn new() -> Self {
        let db = TestDb::create().await;
        db.seed(5, 2).await;
        let cache = test_cache(3600);
        let s3 = s3_client();
        let bucket = test_bucket(&s3).await;
        let config = config_with_bucket(&db, &cache, &bucket);
        let reader = QrReader::new(db.database(), cache, config.qr);
        let api = Api::new(config, reader, Storage::with_client(s3.clone())).unwrap();
        World {
            db,
            api,
            s3,
            bucket,
        }
    }

    /// The same world with another database or cache behind the API.
    pub fn with(&mut self, db: Option<Database>, cache: Option<Cache>) {
        let db = db.unwrap_or_else(|| self.db.database());
        let cache = cache.unwrap_or_else(|| self.api.reader.cache().clone());
        self.api.reader = QrReader::new(db, cache, self.api.config.qr);
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response<Body> {
        let request = lambda_http::request::from_str(&api_event(method, path, headers, body))
            .expect("a valid API Gateway event");
        handle(&self.api, request).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response<Body> {
        self.call(
            "GET",
            path,
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await
    }

    pub async fn post(&self, path: &str, token: &str, body: &str) -> Response<Body> {
        self.call(
            "POST",
            path,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/json"),
            ],
            Some(body),
        )
        .await
    }

    /// The QR token stored on the student `id` now.
    pub async fn stored_token(&self, id: &str) -> String {
        self.db
            .client()
            .await
            .query_one(
                "SELECT qr_code_token FROM students WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn student(&self, index: usize) -> (String, String) {
        let row = self
            .db
            .client()
            .await
            .query_one(
                "SELECT id::text, qr_code_token FROM students WHERE registration_no = $1",
                &[&tools::seed::registration_no(index)],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }
}

/// An API Gateway HTTP API (payload format 2.0) event.
pub fn api_event(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> String {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    let cookies: Vec<String> = headers
        .get("cookie")
        .and_then(|v| v.as_str())
        .map(|c| c.split("; ").map(str::to_owned).collect())
        .unwrap_or_default();
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "cookies": cookies,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "api-id", "domainName": "id.execute-api.ap-south-1.amazonaws.com",
            "domainPrefix": "id",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "tests"},
            "requestId": "id", "routeKey": "$default", "stage": "$default", "time": "26/Nov/2026:06:00:00 +0000", "timeEpoch": 1795672800000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

/// A session token as the app signs it.
pub fn session(id: &str, role: &str) -> String {
    session_with(
        id,
        role,
        chrono::Utc::now().timestamp() + 3600,
        Algorithm::HS256,
        JWT_SECRET,
    )
}

pub fn session_with(id: &str, role: &str, exp: i64, algorithm: Algorithm, secret: &str) -> String {
    encode(
        &Header::new(algorithm),
        &serde_json::json!({"id": id, "role": role, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn admin() -> String {
    session("7a0c0b4e-2f7f-4f8a-9d53-5d9a3c1f0b11", "ADMIN")
}

pub fn body_bytes(response: &Response<Body>) -> Vec<u8> {
    match response.body() {
        Body::Text(text) => text.as_bytes().to_vec(),
        Body::Binary(bytes) => bytes.clone(),
        _ => Vec::new(),
    }
}

pub fn body_json(response: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(&body_bytes(response)).unwrap_or_else(|_| {
        panic!(
            "JSON body, got {:?}",
            String::from_utf8_lossy(&body_bytes(response))
        )
    })
}

pub fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}
