//! QR tokens in the app's format, which its scanner verifies: a student's static token is an
//! HS256 JWT signed with `JWT_SECRET`, claims `{n, t: "S", r}` plus `iat` and no other (the
//! scanner takes another path when it sees `id`, `c` or `checksum`); a stall's is a short keyed
//! `STALL_` string; a student's rotating token is the JWT the app's student screen shows, one
//! per 30-second window.

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

/// A nonce as the app makes one: two random bytes as 4 hex characters.
pub fn random_nonce() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    nonce(u16::from_be_bytes([bytes[0], bytes[1]]))
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

/// `{"typ":"JWT","alg":"HS256"}`, the header jsonwebtoken writes for `Header::new(HS256)`, so
/// [`StudentSigner`]'s tokens are [`student_token`]'s byte for byte.
const JWT_HS256_HEADER: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9";

/// Signs many students' static tokens, as [`student_token`] does one: an import signs one per
/// new student (100,000 for a large file), and jsonwebtoken serialises the same header and
/// derives the HMAC key again for each, about half of the signing time. The key is set up
/// once and cloned per token, and the header is the constant it always encodes to.
#[derive(Clone)]
pub struct StudentSigner {
    key: hmac::Hmac<sha2::Sha256>,
}

impl StudentSigner {
    pub fn new(secret: &SecretString) -> Result<Self, hmac::digest::InvalidLength> {
        use hmac::KeyInit;
        Ok(StudentSigner {
            key: hmac::Hmac::new_from_slice(secret.expose_secret().as_bytes())?,
        })
    }

    /// The token of `registration_no`: the same text as `student_token` with these arguments.
    pub fn sign(
        &self,
        registration_no: &str,
        nonce: &str,
        issued_at: i64,
    ) -> Result<String, serde_json::Error> {
        use base64::Engine;
        use hmac::Mac;
        let claims = serde_json::to_vec(&StudentClaims {
            n: nonce,
            t: "S",
            r: registration_no,
            iat: issued_at,
        })?;
        let engine = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut token =
            String::with_capacity(JWT_HS256_HEADER.len() + 2 + claims.len() * 4 / 3 + 48);
        token.push_str(JWT_HS256_HEADER);
        token.push('.');
        engine.encode_string(&claims, &mut token);
        let mut mac = self.key.clone();
        mac.update(token.as_bytes());
        token.push('.');
        engine.encode_string(mac.finalize().into_bytes(), &mut token);
        Ok(token)
    }
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

/// Seconds per rotating window (`QRCodeService.ROTATION_INTERVAL_SECONDS`).
pub const ROTATION_SECS: i64 = 30;
/// Windows before the current one the app's scanner still accepts (`GRACE_PERIOD_WINDOWS`).
pub const GRACE_WINDOWS: i64 = 2;
/// Hex characters of the rotating token's `h` claim.
const ROTATING_MAC_HEX: usize = 12;
/// `{"alg":"HS256","typ":"JWT"}`, the header node's jsonwebtoken writes, so our tokens are the
/// app's byte for byte.
const NODE_HS256_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// The rotating window a moment falls in: `floor(unix seconds / 30)`.
pub fn window_at(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(ROTATION_SECS)
}

/// Signs rotating student tokens: the HMAC key is set up once and cloned per token, which
/// matters when a window is prepared for tens of thousands of students.
#[derive(Clone)]
pub struct RotatingSigner {
    key: hmac::Hmac<sha2::Sha256>,
}

#[derive(Serialize)]
struct RotatingClaims<'a> {
    r: &'a str,
    w: i64,
    h: &'a str,
    t: &'static str,
    iat: i64,
    exp: i64,
}

impl RotatingSigner {
    pub fn new(secret: &SecretString) -> Result<Self, hmac::digest::InvalidLength> {
        use hmac::KeyInit;
        Ok(RotatingSigner {
            key: hmac::Hmac::new_from_slice(secret.expose_secret().as_bytes())?,
        })
    }

    /// `h`: the first 12 hex characters of HMAC-SHA256(`JWT_SECRET`, `"{r}:{w}"`).
    pub fn window_mac(&self, registration_no: &str, window: i64) -> String {
        use hmac::Mac;
        let mut mac = self.key.clone();
        mac.update(registration_no.as_bytes());
        mac.update(b":");
        mac.update(window.to_string().as_bytes());
        let mut digest = hex::encode(mac.finalize().into_bytes());
        digest.truncate(ROTATING_MAC_HEX);
        digest
    }

    /// The token of `registration_no` for `window`: claims `{r, w, h, t: "RS", iat, exp}` in the
    /// app's order, `iat` the window's first second and `exp` 90 s later, which is exactly when
    /// the app's scanner stops accepting the window. Fixing `iat` to the window makes the token
    /// a function of the student and the window, so the image cached for a window and the token
    /// a route returns beside it always agree.
    pub fn token(&self, registration_no: &str, window: i64) -> Result<String, serde_json::Error> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        use hmac::Mac;
        let issued_at = window * ROTATION_SECS;
        let claims = RotatingClaims {
            r: registration_no,
            w: window,
            h: &self.window_mac(registration_no, window),
            t: "RS",
            iat: issued_at,
            exp: issued_at + (GRACE_WINDOWS + 1) * ROTATION_SECS,
        };
        let mut token = String::with_capacity(200);
        token.push_str(NODE_HS256_HEADER);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(&claims)?, &mut token);
        let mut mac = self.key.clone();
        mac.update(token.as_bytes());
        let signature = mac.finalize().into_bytes();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
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
    fn the_batch_signer_writes_student_token_s_exact_text() {
        let secret = SecretString::from("app-secret");
        let signer = StudentSigner::new(&secret).unwrap();
        for (key, nonce, iat) in [
            ("2021001", "a1b2", 1_700_000_000),
            ("CSE-2024/\"07\"", "0000", 0),
            ("ஆ2021", "ffff", -5),
        ] {
            assert_eq!(
                signer.sign(key, nonce, iat).unwrap(),
                student_token(&secret, key, nonce, iat).unwrap()
            );
        }
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

    #[test]
    fn rotating_windows_are_the_apps() {
        // The app's own example: 1732368450 -> 57745615 (its comment says ...614, off by one).
        assert_eq!(window_at(1_732_368_450), 57_745_615);
        assert_eq!(window_at(1_732_368_449), 57_745_614);
        assert_eq!(window_at(0), 0);
        assert_eq!(window_at(29), 0);
        assert_eq!(window_at(30), 1);
    }

    #[test]
    fn rotating_tokens_carry_the_apps_claims_header_and_mac() {
        let secret = SecretString::from("app-secret");
        let signer = RotatingSigner::new(&secret).unwrap();
        let window = 57_745_615;
        let token = signer.token("2021001", window).unwrap();
        // The MAC, computed here without the signer.
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"app-secret").unwrap();
        mac.update(b"2021001:57745615");
        let h = hex::encode(mac.finalize().into_bytes())[..12].to_owned();
        let iat = window * 30;
        assert_eq!(
            claims(&token),
            json!({"r": "2021001", "w": window, "h": h, "t": "RS", "iat": iat, "exp": iat + 90})
        );
        // Claims in the app's order, and node's header.
        let payload = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(
            payload.starts_with("{\"r\":\"2021001\",\"w\":"),
            "{payload}"
        );
        assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
        // A standard HS256 verifier takes it, and not under another key.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"app-secret"),
            &validation,
        )
        .unwrap();
        assert!(decode::<Value>(&token, &DecodingKey::from_secret(b"other"), &validation).is_err());
        // One token per student and window.
        assert_eq!(token, signer.token("2021001", window).unwrap());
        assert_ne!(token, signer.token("2021001", window + 1).unwrap());
        assert_ne!(token, signer.token("2021002", window).unwrap());
        // Registration numbers are JSON-escaped, never spliced.
        let odd = signer.token("A\"1", window).unwrap();
        assert_eq!(claims(&odd)["r"], "A\"1");
    }
}
