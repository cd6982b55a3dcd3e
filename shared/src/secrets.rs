//! Secrets from SSM Parameter Store, read once at cold start in one `GetParameters` call with
//! decryption. Parameter Store rather than Secrets Manager: standard SecureString parameters and
//! their reads cost nothing (Secrets Manager bills each secret monthly and its reads per 10,000),
//! one plain call fetches all of a function's secrets, and each secret here is a single string
//! rotated by hand together with the Node app, so Secrets Manager's managed rotation would go
//! unused. Values are never logged; errors name the variable and the parameter, never a value.

use std::fmt;
use std::time::Duration;

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::{Parameter, ParameterType};
use secrecy::SecretString;

use crate::config::{SecretReference, StoredSecret, StoredSecrets};

/// Longest the read may take. Lambda gives a cold start 10 s in all; a function in a VPC without
/// a route to SSM would otherwise spend them all and die without saying why.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// SSM Parameter Store, through one client.
#[derive(Clone, Debug)]
pub struct ParameterStore {
    client: aws_sdk_ssm::Client,
}

/// Why the secrets could not be read; start-up stops with it.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The store answered, without these parameters.
    #[error(
        "SSM Parameter Store{} has no parameter {}: create {} with `aws ssm put-parameter \
         --type SecureString`, or correct the name",
        in_region(.region), Named(.missing), if .missing.len() == 1 { "it" } else { "them" }
    )]
    NotFound {
        missing: Vec<SecretReference>,
        region: Option<String>,
    },
    /// The store answered with an error: access denied (to the parameters or to their KMS key),
    /// throttling, a malformed name.
    #[error(
        "SSM Parameter Store{} refused to read {}: {code}: {message}. The function's role needs \
         ssm:GetParameters on each parameter and kms:Decrypt on the key that encrypts it",
        in_region(.region), Named(.requested)
    )]
    Refused {
        requested: Vec<SecretReference>,
        region: Option<String>,
        code: String,
        message: String,
    },
    /// No answer: no network route (a VPC without a NAT gateway or SSM endpoint), no
    /// credentials, no region, or the time limit.
    #[error(
        "could not read {} from SSM Parameter Store{}: {message}",
        Named(.requested), in_region(.region)
    )]
    Unreachable {
        requested: Vec<SecretReference>,
        region: Option<String>,
        message: String,
    },
}

/// "/qr/prod/jwt-secret (named by JWT_SECRET_PARAMETER), ...".
struct Named<'a>(&'a [SecretReference]);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, reference) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{} (named by {})",
                reference.parameter, reference.named_by
            )?;
        }
        Ok(())
    }
}

fn in_region(region: &Option<String>) -> String {
    match region {
        Some(region) => format!(" in {region}"),
        None => " (no AWS region set: set AWS_REGION)".into(),
    }
}

impl ParameterStore {
    /// A client from the standard AWS environment: Lambda's role and region, or the `AWS_*`
    /// variables (`AWS_ENDPOINT_URL_SSM` points it at a local server).
    pub async fn from_env() -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(READ_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        ParameterStore::with_client(aws_sdk_ssm::Client::new(&shared))
    }

    pub fn with_client(client: aws_sdk_ssm::Client) -> Self {
        ParameterStore { client }
    }

    fn region(&self) -> Option<String> {
        self.client.config().region().map(ToString::to_string)
    }

    /// Reads every referenced parameter, decrypted, in one call (the references are at most
    /// five, under `GetParameters`' limit of ten).
    pub async fn fetch(
        &self,
        references: &[SecretReference],
    ) -> Result<StoredSecrets, SecretsError> {
        let mut names: Vec<String> = references.iter().map(|r| r.parameter.clone()).collect();
        names.sort();
        names.dedup();
        let answer = self
            .client
            .get_parameters()
            .set_names(Some(names))
            .with_decryption(true)
            .send()
            .await
            .map_err(|error| self.describe(references, error))?;

        let mut stored = StoredSecrets::default();
        let mut missing = Vec::new();
        for reference in references {
            let found = answer
                .parameters()
                .iter()
                .find(|parameter| answers(parameter, &reference.parameter));
            match found.and_then(|parameter| Some((parameter, parameter.value()?))) {
                Some((parameter, value)) => stored.insert(
                    reference.parameter.clone(),
                    StoredSecret {
                        value: SecretString::from(value.to_owned()),
                        version: parameter.version(),
                        encrypted: parameter.r#type() == Some(&ParameterType::SecureString),
                    },
                ),
                None => missing.push(reference.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(SecretsError::NotFound {
                missing,
                region: self.region(),
            });
        }
        Ok(stored)
    }

    fn describe<E, R>(&self, references: &[SecretReference], error: SdkError<E, R>) -> SecretsError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
        R: fmt::Debug + 'static,
    {
        let requested = references.to_vec();
        let region = self.region();
        match &error {
            SdkError::ServiceError(service) => SecretsError::Refused {
                requested,
                region,
                code: service.err().code().unwrap_or("error").to_owned(),
                message: service.err().message().unwrap_or("no message").to_owned(),
            },
            SdkError::TimeoutError(_) => SecretsError::Unreachable {
                requested,
                region,
                message: format!(
                    "no answer within {} s (a function in a VPC needs a NAT gateway or an SSM \
                     interface endpoint)",
                    READ_TIMEOUT.as_secs()
                ),
            },
            _ => SecretsError::Unreachable {
                requested,
                region,
                message: with_causes(&error),
            },
        }
    }
}

/// An error and its causes on one line ("dispatch failure: io error: ...: Connection refused"):
/// the SDK's own `Display` says only "dispatch failure".
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether `parameter` is the answer to `requested`: a name, an ARN (a parameter shared from
/// another account), either with a `:version` or `:label` selector.
fn answers(parameter: &Parameter, requested: &str) -> bool {
    let selector = parameter.selector().unwrap_or_default();
    [parameter.name(), parameter.arn()]
        .into_iter()
        .flatten()
        .any(|id| {
            id == requested || (!selector.is_empty() && format!("{id}{selector}") == requested)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameter(selector: Option<&str>) -> Parameter {
        Parameter::builder()
            .name("/qr/prod/jwt-secret")
            .arn("arn:aws:ssm:ap-south-1:123456789012:parameter/qr/prod/jwt-secret")
            .set_selector(selector.map(str::to_owned))
            .build()
    }

    #[test]
    fn a_parameter_answers_to_its_name_its_arn_and_either_with_its_selector() {
        let plain = parameter(None);
        assert!(answers(&plain, "/qr/prod/jwt-secret"));
        assert!(answers(
            &plain,
            "arn:aws:ssm:ap-south-1:123456789012:parameter/qr/prod/jwt-secret"
        ));
        assert!(!answers(&plain, "/qr/prod/jwt"));
        let versioned = parameter(Some(":3"));
        assert!(answers(&versioned, "/qr/prod/jwt-secret:3"));
        assert!(answers(
            &versioned,
            "arn:aws:ssm:ap-south-1:123456789012:parameter/qr/prod/jwt-secret:3"
        ));
        assert!(!answers(&versioned, "/qr/prod/jwt-secret:2"));
    }

    #[test]
    fn errors_name_each_parameter_and_its_variable() {
        let reference = |named_by, parameter: &str| SecretReference {
            variable: "unused",
            named_by,
            parameter: parameter.into(),
        };
        let error = SecretsError::NotFound {
            missing: vec![
                reference("JWT_SECRET_PARAMETER", "/a"),
                reference("REDIS_URL_PARAMETER", "/b"),
            ],
            region: Some("ap-south-1".into()),
        };
        assert_eq!(
            error.to_string(),
            "SSM Parameter Store in ap-south-1 has no parameter /a (named by JWT_SECRET_PARAMETER), \
             /b (named by REDIS_URL_PARAMETER): create them with `aws ssm put-parameter --type \
             SecureString`, or correct the name"
        );
        let error = SecretsError::Refused {
            requested: vec![reference("JWT_SECRET_PARAMETER", "/a")],
            region: None,
            code: "AccessDeniedException".into(),
            message: "not authorized to perform: ssm:GetParameters".into(),
        };
        assert_eq!(
            error.to_string(),
            "SSM Parameter Store (no AWS region set: set AWS_REGION) refused to read /a (named by \
             JWT_SECRET_PARAMETER): AccessDeniedException: not authorized to perform: \
             ssm:GetParameters. The function's role needs ssm:GetParameters on each parameter \
             and kms:Decrypt on the key that encrypts it"
        );
    }
}
