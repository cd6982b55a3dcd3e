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

/// Characters of the stall token's MAC: 48 bits, as many as the app's rotating tokens carry.
const STALL_MAC_HEX: usize = 12;

/// A stall's QR token: `STALL_{stall_number}_{MAC}`. The app's scanner accepts any token with
/// the `STALL_` prefix and finds the stall by the whole token, so this scans like the app's own
/// `STALL_{stall_number}`; the MAC (HMAC-SHA256 keyed with `JWT_SECRET`, upper-case hex) makes it
/// unguessable while keeping the printed code sparse (about 30 characters, not a 145-character
/// JWT). The same stall number and secret always give the same token.
pub fn stall_token(
    secret: &SecretString,
    stall_number: &str,
) -> Result<String, hmac::digest::InvalidLength> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose_secret().as_bytes())?;
    mac.update(b"STALL_");
    mac.update(stall_number.as_bytes());
    let digest = hex::encode_upper(mac.finalize().into_bytes());
    Ok(format!("STALL_{stall_number}_{}", &digest[..STALL_MAC_HEX]))
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
    fn stall_tokens_scan_like_the_apps_and_are_keyed() {
        let secret = SecretString::from("app-secret");
        let token = stall_token(&secret, "A-17").unwrap();
        // The app's scanner: a `STALL_` prefix, then the stall found by the whole token.
        assert!(token.starts_with("STALL_A-17_"), "{token}");
        assert_eq!(token.len(), "STALL_A-17_".len() + STALL_MAC_HEX);
        assert_eq!(token, stall_token(&secret, "A-17").unwrap());
        assert_ne!(
            token,
            stall_token(&SecretString::from("other"), "A-17").unwrap()
        );
        assert_ne!(token, stall_token(&secret, "A-18").unwrap());
        // The MAC is HMAC-SHA256 over "STALL_{number}".
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"app-secret").unwrap();
        mac.update(b"STALL_A-17");
        let expected = hex::encode_upper(mac.finalize().into_bytes());
        assert_eq!(&token["STALL_A-17_".len()..], &expected[..STALL_MAC_HEX]);
        assert_eq!(nonce(7), "0007");
    }
}
