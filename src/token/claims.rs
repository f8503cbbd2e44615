//! The two JWT claims the token cache reads: `exp` and `iat`.
//!
//! The Console's tokens are HS256 JWTs whose claims are not documented, so the payload is
//! only peeked at: the middle part is base64url-decoded and parsed as JSON, the signature
//! is never checked (the proxy has no key, and the Console checks it anyway), and a token
//! without claims, or with a payload that does not decode, is still a token. Only the
//! expiry arithmetic in [`super::credential`] uses what is found here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The timing claims of a token, in seconds since the Unix epoch, each when present.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Claims {
    /// `exp`: when the token expires.
    pub(crate) exp: Option<f64>,
    /// `iat`: when the token was issued.
    pub(crate) iat: Option<f64>,
}

impl Claims {
    /// Reads `exp` and `iat` from a JWT. Anything that is not a JWT with a JSON object as
    /// payload yields no claims; a claim that is not a finite number is ignored.
    pub(crate) fn parse(token: &str) -> Claims {
        let Some(payload) = payload_part(token) else {
            return Claims::default();
        };
        // Padding is not used in JWTs, but some encoders add it; dropping it costs nothing.
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else {
            return Claims::default();
        };
        let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(&bytes) else {
            return Claims::default();
        };
        let number = |name: &str| {
            object
                .get(name)
                .and_then(serde_json::Value::as_f64)
                .filter(|value| value.is_finite())
        };
        Claims {
            exp: number("exp"),
            iat: number("iat"),
        }
    }
}

/// The middle of the three dot-separated parts, when there are exactly three.
fn payload_part(token: &str) -> Option<&str> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then_some(payload)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A JWT-shaped token whose payload is `payload`, with a placeholder signature.
    pub(crate) fn jwt(payload: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        format!("{header}.{}.c2lnbmF0dXJl", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn exp_alone_is_read() {
        let claims = Claims::parse(&jwt(r#"{"user":"admin","exp":1700000000}"#));
        assert_eq!(claims.exp, Some(1_700_000_000.0));
        assert_eq!(claims.iat, None);
    }

    #[test]
    fn iat_and_exp_are_both_read() {
        let claims = Claims::parse(&jwt(r#"{"iat":1700000000,"exp":1700001800}"#));
        assert_eq!(claims.iat, Some(1_700_000_000.0));
        assert_eq!(claims.exp, Some(1_700_001_800.0));
    }

    #[test]
    fn fractional_claims_are_accepted() {
        let claims = Claims::parse(&jwt(r#"{"exp":1700000000.5}"#));
        assert_eq!(claims.exp, Some(1_700_000_000.5));
    }

    #[test]
    fn a_token_without_claims_has_none() {
        assert_eq!(
            Claims::parse(&jwt(r#"{"user":"admin"}"#)),
            Claims::default()
        );
    }

    #[test]
    fn claims_of_the_wrong_type_are_ignored() {
        let claims = Claims::parse(&jwt(r#"{"exp":"tomorrow","iat":null}"#));
        assert_eq!(claims, Claims::default());
    }

    #[test]
    fn garbage_yields_no_claims() {
        for token in [
            "",
            "opaque-token",
            "a.b",
            "a.!!!.c",
            "a.b.c.d",
            &jwt("not json"),
            &jwt("[1,2,3]"),
            &jwt(r#"{"exp":1"#),
        ] {
            assert_eq!(Claims::parse(token), Claims::default(), "{token}");
        }
    }

    #[test]
    fn a_padded_payload_is_accepted() {
        let header = URL_SAFE_NO_PAD.encode(b"{}");
        let payload = base64::engine::general_purpose::URL_SAFE.encode(br#"{"exp":17}"#);
        let claims = Claims::parse(&format!("{header}.{payload}.sig"));
        assert_eq!(claims.exp, Some(17.0));
    }
}
