//! The rotating student QR the app's student screen shows: one token per 30-second window (see
//! [`crate::token::RotatingSigner`]), drawn as the app draws it (level M, margin 1, 300 px) and
//! cached under the key the app's `generateRotatingQRCodeImage` reads first,
//! `{prefix}qr:rotating:{registration_no}:{window}`. An entry written before its window starts
//! is a hit for the app's own route; it lives until the window's grace ends.

use std::time::Duration;

use crate::cache::Cache;
use crate::error::Error;
use crate::qr::{self, Ecc, QrSettings};
use crate::token::{RotatingSigner, GRACE_WINDOWS, ROTATION_SECS};

/// The app's rotating image options: `errorCorrectionLevel: 'M'`, `margin: 1`, `width: 300`.
pub const ROTATING_QR: QrSettings = QrSettings {
    width_px: 300,
    margin_modules: 1,
    ecc: Ecc::M,
};

/// The part of a rotating key after the configured prefix.
pub const KEY_NAMESPACE: &str = "qr:rotating:";

/// The cache key of a student's image for `window`.
pub fn key(prefix: &str, registration_no: &str, window: i64) -> String {
    format!("{prefix}{KEY_NAMESPACE}{registration_no}:{window}")
}

/// How long an entry written at `now_secs` must live: to the end of its window's grace, when
/// its token stops scanning. Never less than a second.
pub fn ttl(window: i64, now_secs: i64) -> Duration {
    let grace_ends = (window + 1 + GRACE_WINDOWS) * ROTATION_SECS;
    Duration::from_secs(grace_ends.saturating_sub(now_secs).max(1) as u64)
}

/// Seconds until `window` ends, as the app's `rotation_info.expires_in_seconds` counts them
/// (30 at the window's first second, 1 at its last).
pub fn seconds_left(window: i64, now_secs: i64) -> i64 {
    ((window + 1) * ROTATION_SECS - now_secs).clamp(0, ROTATION_SECS)
}

/// One student's rotating QR for one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatingQr {
    pub token: String,
    pub data_url: String,
}

/// Signs and draws a student's QR for `window`.
pub fn render(
    signer: &RotatingSigner,
    registration_no: &str,
    window: i64,
) -> Result<RotatingQr, Error> {
    let token = signer
        .token(registration_no, window)
        .map_err(|e| Error::InvalidRequest(format!("a rotating token could not be signed: {e}")))?;
    let (data_url, _) = qr::render_data_url(&token, &ROTATING_QR)?;
    Ok(RotatingQr { token, data_url })
}

/// Which of `keys` are cached, in one round trip.
pub async fn cached(cache: &Cache, keys: &[String]) -> Result<Vec<bool>, Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("EXISTS").arg(key);
    }
    cache
        .query::<Vec<bool>, _>(&pipe)
        .await
        .map_err(|source| Error::redis("checking rotating images (EXISTS)", source))
}

/// Stores `(window, key, image)` entries in one round trip, each living until its window's
/// grace ends.
pub async fn store(
    cache: &Cache,
    now_secs: i64,
    entries: &[(i64, String, String)],
) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (window, key, value) in entries {
        pipe.cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(ttl(*window, now_secs).as_secs())
            .ignore();
    }
    cache
        .query::<(), _>(&pipe)
        .await
        .map_err(|source| Error::redis("storing rotating images (SET)", source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_apps() {
        assert_eq!(
            key("", "2021001", 57_745_615),
            "qr:rotating:2021001:57745615"
        );
        assert_eq!(
            key("staging:", "2021001", 7),
            "staging:qr:rotating:2021001:7"
        );
    }

    #[test]
    fn entries_live_until_their_grace_ends() {
        let window = 100;
        let starts = window * 30;
        // Written 20 s before its window: the window's 30 s, the two grace windows, and the wait.
        assert_eq!(ttl(window, starts - 20), Duration::from_secs(110));
        assert_eq!(ttl(window, starts), Duration::from_secs(90));
        assert_eq!(ttl(window, starts + 29), Duration::from_secs(61));
        // Long past: still a valid TTL, never zero.
        assert_eq!(ttl(window, starts + 500), Duration::from_secs(1));
    }

    #[test]
    fn seconds_left_count_down_like_the_apps() {
        let starts = 100 * 30;
        assert_eq!(seconds_left(100, starts), 30);
        assert_eq!(seconds_left(100, starts + 29), 1);
        assert_eq!(seconds_left(100, starts - 5), 30);
    }
}
