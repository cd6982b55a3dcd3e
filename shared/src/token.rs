//! QR tokens in the app's format, which its scanner verifies: HS256 JWTs signed with
//! `JWT_SECRET`, claims `{n, t: "S", r}` for a student and `{n, t: "T", s}` for a stall, plus `iat`.
//! No other claim may appear: the scanner takes another path when it sees `id`, `c` or `checksum`.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

#[derive(Serialize)]
struct StudentClaims<'a> {
    n: &'a str,
    t: &'static str,
    r: &'a str,
    iat: i64,
}

#[derive(Serialize)]
struct StallClaims<'a> {
    n: &'a str,
    t: &'static str,
    s: &'a str,
    iat: i64,
}

/// 4 hex characters, as the app's `crypto.randomBytes(2).toString('hex')`.
pub fn nonce(value: u16) -> String {
    format!("{value:04x}")
}

fn sign(
    secret: &SecretString,
    claims: &impl Serialize,
) -> Result<String, jsonwebtoken::errors::Error> {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}

pub fn student_token(
    secret: &SecretString,
    registration_no: &str,
    nonce: &str,
    issued_at: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    sign(
        secret,
        &StudentClaims {
            n: nonce,
            t: "S",
            r: registration_no,
            iat: issued_at,
        },
    )
}

pub fn stall_token(
    secret: &SecretString,
    stall_number: &str,
    nonce: &str,
    issued_at: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    sign(
        secret,
        &StallClaims {
            n: nonce,
            t: "T",
            s: stall_number,
            iat: issued_at,
        },
    )
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use jsonwebtoken::{decode, DecodingKey, Validation};
    use serde_json::{json, Value};

    use super::*;

    fn claims(token: &str) -> Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn student_tokens_carry_exactly_the_apps_claims_and_verify() {
        let secret = SecretString::from("app-secret");
        let token = student_token(&secret, "2021001", "a1b2", 1_700_000_000).unwrap();
        assert_eq!(
            claims(&token),
            json!({"n": "a1b2", "t": "S", "r": "2021001", "iat": 1_700_000_000})
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"app-secret"),
            &validation,
        )
        .unwrap();
        assert!(decode::<Value>(&token, &DecodingKey::from_secret(b"other"), &validation).is_err());
        assert!(token.len() < 200, "{} chars", token.len());
    }

    #[test]
    fn stall_tokens_are_signed_with_type_t() {
        let secret = SecretString::from("app-secret");
        let token = stall_token(&secret, "A-17", &nonce(0xbeef), 1_700_000_000).unwrap();
        assert_eq!(
            claims(&token),
            json!({"n": "beef", "t": "T", "s": "A-17", "iat": 1_700_000_000})
        );
        assert_eq!(nonce(7), "0007");
    }
}
