//! The Console's tokens: HS256 JSON Web Tokens signed with a key that lives only in
//! memory, so a new key (a restarted Console) invalidates every earlier token.
//!
//! The claims are `user`, `exp`, optionally `iat`, and a random `jti` that names the
//! token in statistics and in the logged-out list. Expiry is checked in whole seconds,
//! as JWT libraries do: a token is accepted while the current Unix second is at most
//! its `exp`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header every token carries, already encoded as the Console writes it.
const HEADER_JSON: &str = r#"{"typ":"JWT","alg":"HS256"}"#;

/// A random HMAC key. It is never printed.
pub(super) struct SigningKey([u8; 32]);

/// The claims of a token this Console issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Claims {
    /// The user the token was issued to.
    pub(super) user: String,
    /// Expiry, Unix seconds.
    pub(super) exp: u64,
    /// Issue time, Unix seconds, when the Console is set to include it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) iat: Option<u64>,
    /// A unique id for the token.
    pub(super) jti: String,
}

/// Why a presented token was not accepted; for debug logs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejection {
    /// Not three base64url parts with JSON inside, or not HS256.
    Malformed,
    /// Signed with another key: forged, or issued before a restart.
    BadSignature,
    /// Past its `exp`.
    Expired,
}

impl SigningKey {
    /// A fresh random key.
    pub(super) fn random() -> Self {
        SigningKey(rand::random())
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

/// The current time in whole Unix seconds.
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Issues a token for `user` that lives `lifetime` (rounded up to whole seconds).
pub(super) fn issue(key: &SigningKey, user: &str, lifetime: Duration, include_iat: bool) -> String {
    let now = now_secs();
    let lifetime_secs = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
    let claims = Claims {
        user: user.to_owned(),
        exp: now + lifetime_secs,
        iat: include_iat.then_some(now),
        jti: hex::encode(rand::random::<[u8; 8]>()),
    };
    let payload = serde_json::to_vec(&claims).expect("claims are plain strings and numbers");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER_JSON),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = key.mac();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Checks the signature, the algorithm and the expiry of `token`.
pub(super) fn verify(key: &SigningKey, token: &str) -> Result<Claims, Rejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Rejection::Malformed)?;
    let mut mac = key.mac();
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| Rejection::BadSignature)?;

    if !is_hs256(header) {
        return Err(Rejection::Malformed);
    }
    let claims: Claims = decode_json(payload).ok_or(Rejection::Malformed)?;
    if now_secs() > claims.exp {
        return Err(Rejection::Expired);
    }
    Ok(claims)
}

fn is_hs256(header: &str) -> bool {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    decode_json::<Header>(header).is_some_and(|h| h.alg == "HS256")
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_token_verifies_and_carries_its_claims() {
        let key = SigningKey::random();
        let token = issue(&key, "admin", Duration::from_millis(1500), true);
        let claims = verify(&key, &token).expect("fresh token is valid");
        assert_eq!(claims.user, "admin");
        assert_eq!(claims.exp - claims.iat.expect("iat requested"), 2);
        assert_eq!(claims.jti.len(), 16);
    }

    #[test]
    fn header_is_the_consoles_and_unpadded() {
        let token = issue(&SigningKey::random(), "u", Duration::from_secs(60), false);
        let header = token.split('.').next().expect("three parts");
        assert_eq!(header, "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9");
        assert!(!token.contains('='));
        let claims: Claims = decode_json(token.split('.').nth(1).expect("payload")).expect("json");
        assert_eq!(claims.iat, None);
    }

    #[test]
    fn token_from_another_key_is_rejected() {
        let token = issue(
            &SigningKey::random(),
            "admin",
            Duration::from_secs(60),
            true,
        );
        let result = verify(&SigningKey::random(), &token);
        assert_eq!(result.map(|_| ()), Err(Rejection::BadSignature));
    }

    #[test]
    fn expired_and_garbled_tokens_are_rejected() {
        let key = SigningKey::random();
        let past = Claims {
            user: "admin".into(),
            exp: now_secs() - 5,
            iat: None,
            jti: "x".into(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&past).expect("json"));
        let input = format!("{}.{payload}", URL_SAFE_NO_PAD.encode(HEADER_JSON));
        let mut mac = key.mac();
        mac.update(input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let expired = verify(&key, &format!("{input}.{sig}")).map(|_| ());
        assert_eq!(expired, Err(Rejection::Expired));
        assert_eq!(verify(&key, "a.b").map(|_| ()), Err(Rejection::Malformed));
    }
}
