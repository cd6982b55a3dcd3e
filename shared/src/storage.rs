//! S3: uploads come in under `imports/`, reports go out under `reports/`, and the HTTP API
//! hands out presigned URLs for both. One client, made at cold start.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;

/// How to reach S3; the rest (region, credentials, `AWS_ENDPOINT_URL_S3`) comes from the standard
/// AWS environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// Path-style addressing (`host/bucket/key`), which S3-compatible servers such as moto need.
    pub force_path_style: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("s3://{bucket}/{key} does not exist (or this function may not read it)")]
    NotFound { bucket: String, key: String },
    #[error("the file is {size} bytes, over the {max}-byte limit")]
    TooLarge { size: u64, max: u64 },
    #[error("S3 {operation} s3://{bucket}/{key}: {message}")]
    Request {
        operation: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
}

/// An object read whole, with the version it was.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub version_id: Option<String>,
    pub e_tag: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Storage {
    client: aws_sdk_s3::Client,
}

fn describe<E: std::error::Error + 'static>(error: &aws_sdk_s3::error::SdkError<E>) -> String {
    use aws_sdk_s3::error::DisplayErrorContext;
    DisplayErrorContext(error).to_string()
}

impl Storage {
    /// A client from the standard AWS environment (Lambda's role, or `AWS_*` variables).
    pub async fn from_env(settings: &S3Settings) -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.force_path_style)
            .build();
        Storage {
            client: aws_sdk_s3::Client::from_conf(config),
        }
    }

    pub fn with_client(client: aws_sdk_s3::Client) -> Self {
        Storage { client }
    }

    /// Reads an object, refusing it before download when it is over `max_bytes`.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetched, StorageError> {
        let request = |operation, message| StorageError::Request {
            operation,
            bucket: bucket.into(),
            key: key.into(),
            message,
        };
        let response = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(|error| {
                // Without s3:ListBucket (least privilege), S3 answers a missing key with 403.
                let missing = error.as_service_error().is_some_and(|e| e.is_no_such_key())
                    || error
                        .raw_response()
                        .is_some_and(|r| r.status().as_u16() == 403);
                if missing {
                    StorageError::NotFound {
                        bucket: bucket.into(),
                        key: key.into(),
                    }
                } else {
                    request("GetObject", describe(&error))
                }
            })?;
        let size = response.content_length().unwrap_or(0).max(0) as u64;
        if size > max_bytes {
            return Err(StorageError::TooLarge {
                size,
                max: max_bytes,
            });
        }
        let version_id = response.version_id().map(str::to_owned);
        let e_tag = response.e_tag().map(str::to_owned);
        let mut body = response.body;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| request("GetObject body", e.to_string()))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > max_bytes {
                return Err(StorageError::TooLarge {
                    size: bytes.len() as u64,
                    max: max_bytes,
                });
            }
        }
        Ok(Fetched {
            bytes,
            version_id,
            e_tag,
        })
    }

    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|error| StorageError::Request {
                operation: "PutObject",
                bucket: bucket.into(),
                key: key.into(),
                message: describe(&error),
            })
    }

    /// A URL that lets its holder PUT exactly this key, with this content type and length, until
    /// it expires.
    pub async fn presign_put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        content_length: i64,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        let failed = presign_failure("presign PutObject", bucket, key);
        let presigning =
            PresigningConfig::expires_in(expires_in).map_err(|e| failed(e.to_string()))?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .content_length(content_length)
            .presigned(presigning)
            .await
            .map(|presigned| presigned.uri().to_string())
            .map_err(|error| failed(describe(&error)))
    }

    /// A URL to download an object until it expires.
    pub async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        let failed = presign_failure("presign GetObject", bucket, key);
        let presigning =
            PresigningConfig::expires_in(expires_in).map_err(|e| failed(e.to_string()))?;
        self.client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map(|presigned| presigned.uri().to_string())
            .map_err(|error| failed(describe(&error)))
    }
}

fn presign_failure<'a>(
    operation: &'static str,
    bucket: &'a str,
    key: &'a str,
) -> impl Fn(String) -> StorageError + 'a {
    move |message| StorageError::Request {
        operation,
        bucket: bucket.into(),
        key: key.into(),
        message,
    }
}
