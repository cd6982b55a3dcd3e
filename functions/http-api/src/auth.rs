//! The app's own session token, verified: an HS256 JWT signed with `JWT_SECRET`, claims
//! `{id, role, exp}` (plus `email` or `registration_no`, which are not needed here), sent as
//! `Authorization: Bearer <token>` or as the app's `token` cookie.
//!
//! jsonwebtoken checks what it knows: the algorithm (HS256 only; a header naming any other, or
//! `none`, is refused before the signature is looked at), the signature, `exp` (required) and
//! `nbf` with [`LEEWAY_SECS`] of grace. What only the app defines, `id` and `role`, is checked
//! here.
//!
//! Every refusal is an [`AuthError`] (401) whose message is a short reason for the logs; none
//! carries any part of the token or the secret. Callers return a generic message to the client.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

/// Clock skew allowed on `exp` (and `nbf`, when a token has one), in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Tokens longer than this are refused unread. The app's are about 250 characters.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The cookie the app keeps its session token in (`COOKIE_CONFIG.TOKEN_NAME`).
pub const COOKIE_NAME: &str = "token";

/// Why a token whose header or claims jsonwebtoken cannot read is refused.
const UNREADABLE_JSON: &str =
    "header or claims unreadable (an algorithm other than HS256, or not JSON of a JWT's shape)";

/// Longest `id` claim accepted (the app's ids are UUIDs).
const MAX_ID_LEN: usize = 128;

/// A role, as the app's tables name them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// `ADMIN`
    Admin,
    /// `SUPER_ADMIN`
    SuperAdmin,
    /// `STUDENT`
    Student,
    /// `VOLUNTEER`
    Volunteer,
    /// `STALL`
    Stall,
    /// `EVENT_MANAGER`
    EventManager,
    /// A role this crate does not know, as the token spells it. It is never an admin.
    Other(String),
}

impl Role {
    /// The app's spelling; matching is exact (the app writes these upper-case).
    pub fn parse(text: &str) -> Role {
        match text {
            "ADMIN" => Role::Admin,
            "SUPER_ADMIN" => Role::SuperAdmin,
            "STUDENT" => Role::Student,
            "VOLUNTEER" => Role::Volunteer,
            "STALL" => Role::Stall,
            "EVENT_MANAGER" => Role::EventManager,
            other => Role::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Role::Admin => "ADMIN",
            Role::SuperAdmin => "SUPER_ADMIN",
            Role::Student => "STUDENT",
            Role::Volunteer => "VOLUNTEER",
            Role::Stall => "STALL",
            Role::EventManager => "EVENT_MANAGER",
            Role::Other(other) => other,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The `id` claim: the row's id in the role's table (a number in JSON becomes its digits).
    pub id: String,
    pub role: Role,
}

impl Principal {
    /// `ADMIN` or `SUPER_ADMIN`.
    pub fn is_admin(&self) -> bool {
        matches!(self.role, Role::Admin | Role::SuperAdmin)
    }
}

/// Why a token was refused. Each is a 401; the message is for logs only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("bad signature")]
    BadSignature,
    #[error("algorithm not allowed: {0}")]
    WrongAlgorithm(&'static str),
    #[error("missing claim: {0}")]
    MissingClaims(&'static str),
    #[error("invalid claim: {0}")]
    InvalidClaims(&'static str),
}

impl AuthError {
    /// The HTTP status: always 401 Unauthorized.
    pub fn status(&self) -> u16 {
        401
    }

    /// A short stable name for metrics and log fields.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongAlgorithm(_) => "wrong_algorithm",
            AuthError::MissingClaims(_) => "missing_claims",
            AuthError::InvalidClaims(_) => "invalid_claims",
        }
    }
}

/// A valid token whose role may not use a route: 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role {role} may not use this route")]
pub struct Forbidden {
    pub role: Role,
}

impl Forbidden {
    /// The HTTP status: always 403 Forbidden.
    pub fn status(&self) -> u16 {
        403
    }
}

/// Admin routes: `ADMIN` or `SUPER_ADMIN`.
pub fn require_admin(principal: &Principal) -> Result<(), Forbidden> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(Forbidden {
            role: principal.role.clone(),
        })
    }
}

/// The token a request carries: `Authorization: Bearer <token>` (scheme case-insensitive),
/// else the `token` cookie of the `Cookie` header. Empty values count as absent.
pub fn token_from_headers<'a>(
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
) -> Option<&'a str> {
    authorization
        .and_then(bearer)
        .or_else(|| cookie.and_then(|header| cookie_value(header, COOKIE_NAME)))
}

fn bearer(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// The value of the first cookie called exactly `name` in a `Cookie` header
/// (`a=1; token=xyz; b=2`), surrounding double quotes removed.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if key.trim() != name {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .trim();
        (!value.is_empty()).then_some(value)
    })
}

/// Verifies a session token against the current time.
pub fn verify(token: &str, secret: &SecretString) -> Result<Principal, AuthError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("too long"));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    let key = DecodingKey::from_secret(secret.expose_secret().as_bytes());
    let claims: Claims = jsonwebtoken::decode(token, &key, &validation)
        .map_err(|error| match error.kind() {
            // The header named another algorithm jsonwebtoken knows: say which, for the logs.
            ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm(
                jsonwebtoken::decode_header(token).map_or("unknown", |h| algorithm_label(h.alg)),
            ),
            kind => map_jwt_error(kind),
        })?
        .claims;
    claims.into_principal()
}

fn algorithm_label(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm("rejected by validation"),
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => AuthError::MissingClaims("exp"),
        ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaims("registered claim"),
        ErrorKind::InvalidClaimFormat(_) => AuthError::InvalidClaims("registered claim format"),
        ErrorKind::InvalidAudience => AuthError::InvalidClaims("aud"),
        ErrorKind::InvalidIssuer => AuthError::InvalidClaims("iss"),
        ErrorKind::InvalidSubject => AuthError::InvalidClaims("sub"),
        ErrorKind::Base64(_) => AuthError::Malformed("not base64url"),
        // jsonwebtoken reads the header into its list of algorithms: `none`, a missing `alg` or
        // one it does not know fail here, before the signature is looked at.
        ErrorKind::Json(_) => AuthError::Malformed(UNREADABLE_JSON),
        ErrorKind::Utf8(_) => AuthError::Malformed("not UTF-8"),
        ErrorKind::InvalidToken => AuthError::Malformed("not a JWT"),
        _ => AuthError::Malformed("unreadable"),
    }
}

/// The app's own claims (the registered ones are jsonwebtoken's to check); each is read by
/// hand so that a missing and a wrong one have their own reasons.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    role: Option<Value>,
}

impl Claims {
    fn into_principal(self) -> Result<Principal, AuthError> {
        let id = match self.id {
            None | Some(Value::Null) => return Err(AuthError::MissingClaims("id")),
            Some(Value::String(id)) => {
                let id = id.trim();
                if id.is_empty() {
                    return Err(AuthError::MissingClaims("id"));
                }
                if id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
                    return Err(AuthError::InvalidClaims("id"));
                }
                id.to_owned()
            }
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(_) => return Err(AuthError::InvalidClaims("id")),
        };
        let role = match self.role {
            None | Some(Value::Null) => return Err(AuthError::MissingClaims("role")),
            Some(Value::String(role)) if role.trim().is_empty() => {
                return Err(AuthError::MissingClaims("role"))
            }
            Some(Value::String(role)) => Role::parse(role.trim()),
            Some(_) => return Err(AuthError::InvalidClaims("role")),
        };
        Ok(Principal { id, role })
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "the-apps-jwt-secret-for-tests";
    /// The real clock: jsonwebtoken checks `exp` and `nbf` against it.
    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn secret() -> SecretString {
        SecretString::from(SECRET)
    }

    fn mint_with(alg: Algorithm, secret: &str, claims: &Value) -> String {
        encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn mint(claims: Value) -> String {
        mint_with(Algorithm::HS256, SECRET, &claims)
    }

    /// A token with a hand-written header, signed HMAC-SHA256 with the test secret.
    fn crafted(header: &Value, claims: &Value, signature: Option<&str>) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match signature {
            Some(signature) => signature.to_owned(),
            None => jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(SECRET.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap(),
        };
        format!("{message}.{signature}")
    }

    fn admin_claims() -> Value {
        json!({
            "id": "6f1c2a9e-3b7d-4e5f-8a90-1b2c3d4e5f60",
            "email": "admin@example.com",
            "role": "ADMIN",
            "iat": now() - 60,
            "exp": now() + 3600,
        })
    }

    fn verify(token: &str) -> Result<Principal, AuthError> {
        super::verify(token, &secret())
    }

    #[test]
    fn a_valid_admin_token() {
        let principal = verify(&mint(admin_claims())).unwrap();
        assert_eq!(
            principal,
            Principal {
                id: "6f1c2a9e-3b7d-4e5f-8a90-1b2c3d4e5f60".into(),
                role: Role::Admin
            }
        );
        assert!(principal.is_admin());
        assert!(require_admin(&principal).is_ok());
    }

    #[test]
    fn a_valid_super_admin_token() {
        let mut claims = admin_claims();
        claims["role"] = json!("SUPER_ADMIN");
        let principal = verify(&mint(claims)).unwrap();
        assert_eq!(principal.role, Role::SuperAdmin);
        assert!(principal.is_admin());
        assert!(require_admin(&principal).is_ok());
    }

    #[test]
    fn a_student_token_is_valid_but_not_admin() {
        let token = mint(json!({
            "id": "b2c3d4e5-0000-4000-8000-000000000001",
            "registration_no": "2025001",
            "role": "STUDENT",
            "iat": now(),
            "exp": now() + 86_400,
        }));
        let principal = verify(&token).unwrap();
        assert_eq!(principal.role, Role::Student);
        assert_eq!(principal.id, "b2c3d4e5-0000-4000-8000-000000000001");
        assert!(!principal.is_admin());
        let forbidden = require_admin(&principal).unwrap_err();
        assert_eq!(forbidden.status(), 403);
        assert_eq!(forbidden.to_string(), "role STUDENT may not use this route");
    }

    #[test]
    fn every_role_parses_and_unknown_ones_are_kept_but_never_admin() {
        for (text, role) in [
            ("ADMIN", Role::Admin),
            ("SUPER_ADMIN", Role::SuperAdmin),
            ("STUDENT", Role::Student),
            ("VOLUNTEER", Role::Volunteer),
            ("STALL", Role::Stall),
            ("EVENT_MANAGER", Role::EventManager),
        ] {
            assert_eq!(Role::parse(text), role);
            assert_eq!(role.as_str(), text);
        }
        let mut claims = admin_claims();
        claims["role"] = json!("admin");
        let principal = verify(&mint(claims)).unwrap();
        assert_eq!(principal.role, Role::Other("admin".into()));
        assert!(!principal.is_admin());
        for role in [Role::Volunteer, Role::Stall, Role::EventManager] {
            let principal = Principal {
                id: "1".into(),
                role,
            };
            assert!(require_admin(&principal).is_err());
        }
    }

    #[test]
    fn a_numeric_id_becomes_its_digits() {
        let mut claims = admin_claims();
        claims["id"] = json!(42);
        assert_eq!(verify(&mint(claims)).unwrap().id, "42");
        let mut claims = admin_claims();
        claims["id"] = json!(4.5);
        assert_eq!(
            verify(&mint(claims)).unwrap_err(),
            AuthError::InvalidClaims("id")
        );
        let mut claims = admin_claims();
        claims["id"] = json!({"nested": 1});
        assert_eq!(
            verify(&mint(claims)).unwrap_err(),
            AuthError::InvalidClaims("id")
        );
    }

    #[test]
    fn a_missing_token() {
        assert_eq!(verify("").unwrap_err(), AuthError::Missing);
        assert_eq!(verify("   ").unwrap_err(), AuthError::Missing);
        assert_eq!(AuthError::Missing.status(), 401);
    }

    #[test]
    fn malformed_tokens() {
        let good = mint(admin_claims());
        let (head, rest) = good.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        for token in [
            "abc".to_owned(),
            "a.b".to_owned(),
            format!("{head}.{payload}"),
            format!("{good}.extra"),
            format!("{head}.{payload}.{signature}.{signature}"),
            "!!!.???.###".to_owned(),
            format!(
                "{}.{payload}.{signature}",
                URL_SAFE_NO_PAD.encode("not json")
            ),
            format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode("[1,2]")),
            format!("{head}.{payload}.%%%%"),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            let error = verify(&token).unwrap_err();
            assert!(
                matches!(error, AuthError::Malformed(_)),
                "{token}: {error:?}"
            );
            assert_eq!(error.status(), 401);
        }
    }

    #[test]
    fn a_payload_that_is_not_base64_is_refused_even_when_signed() {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
        let message = format!("{header}.@@not-base64@@");
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        assert!(matches!(
            verify(&format!("{message}.{signature}")).unwrap_err(),
            AuthError::Malformed(_)
        ));
    }

    #[test]
    fn expiry_is_checked_with_a_small_leeway() {
        let mut claims = admin_claims();
        claims["exp"] = json!(now() - LEEWAY_SECS as i64 - 5);
        assert_eq!(verify(&mint(claims)).unwrap_err(), AuthError::Expired);

        let mut claims = admin_claims();
        claims["exp"] = json!(now() - 3600);
        assert_eq!(verify(&mint(claims)).unwrap_err(), AuthError::Expired);

        // Within the leeway: still accepted.
        let mut claims = admin_claims();
        claims["exp"] = json!(now() - LEEWAY_SECS as i64 + 5);
        assert!(verify(&mint(claims)).is_ok());

        // A fractional NumericDate is read too.
        let mut claims = admin_claims();
        claims["exp"] = json!((now() - 3600) as f64 + 0.5);
        assert_eq!(verify(&mint(claims)).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn the_real_clock_is_used_by_verify() {
        let now = chrono::Utc::now().timestamp();
        let mut claims = admin_claims();
        claims["exp"] = json!(now + 600);
        assert!(super::verify(&mint(claims), &secret()).is_ok());
        let mut claims = admin_claims();
        claims["exp"] = json!(now - 600);
        assert_eq!(
            super::verify(&mint(claims), &secret()).unwrap_err(),
            AuthError::Expired
        );
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let mut claims = admin_claims();
        claims.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            verify(&mint(claims)).unwrap_err(),
            AuthError::MissingClaims("exp")
        );
        let mut claims = admin_claims();
        claims["exp"] = json!("tomorrow");
        let error = verify(&mint(claims)).unwrap_err();
        assert!(
            matches!(
                error,
                AuthError::MissingClaims("exp")
                    | AuthError::InvalidClaims(_)
                    | AuthError::Malformed(_)
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_future_nbf_is_refused() {
        let mut claims = admin_claims();
        claims["nbf"] = json!(now() + 3600);
        assert_eq!(verify(&mint(claims)).unwrap_err(), AuthError::NotYetValid);
        let mut claims = admin_claims();
        claims["nbf"] = json!(now() - 10);
        assert!(verify(&mint(claims)).is_ok());
    }

    #[test]
    fn alg_none_is_refused() {
        for alg in ["none", "None", "NONE"] {
            let token = crafted(
                &json!({"alg": alg, "typ": "JWT"}),
                &admin_claims(),
                Some(""),
            );
            assert!(token.ends_with('.'));
            assert_eq!(
                verify(&token).unwrap_err(),
                AuthError::Malformed(UNREADABLE_JSON),
                "{alg}"
            );
        }
        // Even with a valid HS256 signature over it, and with no alg at all.
        for header in [json!({"alg": "none", "typ": "JWT"}), json!({"typ": "JWT"})] {
            let token = crafted(&header, &admin_claims(), None);
            assert_eq!(
                verify(&token).unwrap_err(),
                AuthError::Malformed(UNREADABLE_JSON),
                "{header}"
            );
        }
    }

    #[test]
    fn other_hmac_algorithms_with_the_same_secret_are_refused() {
        for (alg, label) in [(Algorithm::HS512, "HS512"), (Algorithm::HS384, "HS384")] {
            let token = mint_with(alg, SECRET, &admin_claims());
            assert_eq!(
                verify(&token).unwrap_err(),
                AuthError::WrongAlgorithm(label)
            );
        }
    }

    #[test]
    fn asymmetric_algorithm_labels_with_an_hmac_signature_are_refused() {
        for alg in ["RS256", "ES256", "PS256", "EdDSA"] {
            let token = crafted(&json!({"alg": alg, "typ": "JWT"}), &admin_claims(), None);
            assert_eq!(
                verify(&token).unwrap_err(),
                AuthError::WrongAlgorithm(alg),
                "{alg}"
            );
        }
        // Spellings of an algorithm jsonwebtoken does not know are refused while it reads them.
        for alg in [json!("HS256 "), json!("hs256"), json!(256)] {
            let token = crafted(&json!({ "alg": alg }), &admin_claims(), None);
            assert_eq!(
                verify(&token).unwrap_err(),
                AuthError::Malformed(UNREADABLE_JSON),
                "{alg}"
            );
        }
    }

    #[test]
    fn a_hand_crafted_hs256_token_is_accepted() {
        // The crafting helper itself is sound: with the right header it verifies.
        let token = crafted(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &admin_claims(),
            None,
        );
        assert!(verify(&token).is_ok());
    }

    #[test]
    fn another_secret_is_refused() {
        let token = mint_with(Algorithm::HS256, "some-other-secret", &admin_claims());
        assert_eq!(verify(&token).unwrap_err(), AuthError::BadSignature);
        // A tampered payload under the original signature.
        let good = mint(admin_claims());
        let parts: Vec<&str> = good.split('.').collect();
        let mut claims = admin_claims();
        claims["role"] = json!("SUPER_ADMIN");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(verify(&forged).unwrap_err(), AuthError::BadSignature);
        // An empty signature under HS256.
        let unsigned = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(verify(&unsigned).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn missing_or_empty_claims_are_refused() {
        for (claim, value) in [
            ("role", None),
            ("role", Some(json!(""))),
            ("role", Some(Value::Null)),
            ("id", None),
            ("id", Some(json!(""))),
            ("id", Some(json!("   "))),
        ] {
            let mut claims = admin_claims();
            match value {
                None => {
                    claims.as_object_mut().unwrap().remove(claim);
                }
                Some(value) => claims[claim] = value,
            }
            let expected = if claim == "role" {
                AuthError::MissingClaims("role")
            } else {
                AuthError::MissingClaims("id")
            };
            assert_eq!(verify(&mint(claims)).unwrap_err(), expected, "{claim}");
        }
        let mut claims = admin_claims();
        claims["role"] = json!(["ADMIN"]);
        assert_eq!(
            verify(&mint(claims)).unwrap_err(),
            AuthError::InvalidClaims("role")
        );
    }

    #[test]
    fn a_token_with_an_audience_is_not_a_session_token() {
        let mut claims = admin_claims();
        claims["aud"] = json!("someone-else");
        assert_eq!(
            verify(&mint(claims)).unwrap_err(),
            AuthError::InvalidClaims("aud")
        );
    }

    #[test]
    fn messages_never_carry_the_token_or_the_secret() {
        let tokens = [
            mint_with(Algorithm::HS256, "other", &admin_claims()),
            mint_with(Algorithm::HS512, SECRET, &admin_claims()),
            crafted(&json!({"alg": "none"}), &admin_claims(), Some("")),
            crafted(&json!({"alg": "RS256<script>"}), &admin_claims(), None),
            "garbage.garbage.garbage".to_owned(),
        ];
        for token in tokens {
            let error = verify(&token).unwrap_err();
            let message = format!("{error} {error:?}");
            assert!(!message.contains(SECRET), "{message}");
            for part in token.split('.').filter(|p| p.len() > 3) {
                assert!(!message.contains(part), "{message}");
            }
            assert!(!message.contains("script"), "{message}");
        }
    }

    #[test]
    fn bearer_header_first_then_the_token_cookie() {
        assert_eq!(
            token_from_headers(Some("Bearer abc.def.ghi"), None),
            Some("abc.def.ghi")
        );
        assert_eq!(token_from_headers(Some("bearer abc"), None), Some("abc"));
        assert_eq!(
            token_from_headers(Some("BEARER   abc  "), None),
            Some("abc")
        );
        assert_eq!(token_from_headers(Some("  Bearer\tabc"), None), Some("abc"));
        assert_eq!(
            token_from_headers(Some("Bearer from-header"), Some("token=from-cookie")),
            Some("from-header")
        );
        // Not a bearer header: the cookie is used.
        assert_eq!(
            token_from_headers(Some("Basic dXNlcjpwYXNz"), Some("token=from-cookie")),
            Some("from-cookie")
        );
        assert_eq!(
            token_from_headers(Some("Bearer "), Some("token=from-cookie")),
            Some("from-cookie")
        );
        assert_eq!(token_from_headers(Some("Bearer"), None), None);
        assert_eq!(token_from_headers(Some("Bearerabc"), None), None);
        assert_eq!(token_from_headers(Some("Token abc"), None), None);
        assert_eq!(token_from_headers(None, None), None);
    }

    #[test]
    fn cookie_parsing_edge_cases() {
        let from = |cookie: &'static str| token_from_headers(None, Some(cookie));
        assert_eq!(from("token=xyz"), Some("xyz"));
        assert_eq!(from("a=1; token=xyz; b=2"), Some("xyz"));
        assert_eq!(from("a=1;token=xyz;b=2"), Some("xyz"));
        assert_eq!(from("  token = xyz  ; b=2"), Some("xyz"));
        assert_eq!(from("token=\"xyz\""), Some("xyz"));
        assert_eq!(from("token=a.b.c"), Some("a.b.c"));
        // Base64 padding or an `=` inside the value is kept.
        assert_eq!(from("token=ab=="), Some("ab=="));
        // Only a cookie named exactly `token`.
        assert_eq!(from("xtoken=nope"), None);
        assert_eq!(from("tokenx=nope"), None);
        assert_eq!(from("Token=nope"), None);
        assert_eq!(from("my_token=nope; csrf-token=nope"), None);
        assert_eq!(from("xtoken=nope; token=yes"), Some("yes"));
        assert_eq!(from("a=token=nope"), None);
        // Empty values are absent; the first non-empty `token` wins.
        assert_eq!(from("token=; b=2"), None);
        assert_eq!(from("token=\"\""), None);
        assert_eq!(from("token=; token=second"), Some("second"));
        assert_eq!(from("token=first; token=second"), Some("first"));
        assert_eq!(from("token"), None);
        assert_eq!(from(""), None);
        assert_eq!(from(";;;"), None);
    }

    #[test]
    fn a_cookie_token_verifies() {
        let token = mint(admin_claims());
        let cookie = format!("theme=dark; token={token}; lang=en");
        let found = token_from_headers(None, Some(&cookie)).unwrap();
        assert!(verify(found).unwrap().is_admin());
    }
}
