//! One token as the proxy uses it: the header it sends, its generation, and when it stops
//! being usable.
//!
//! A token's lifetime is fixed when it is received and then counted on two clocks at once.
//! The wall clock moves on while a laptop sleeps (tokio's monotonic clock does not), and
//! the monotonic clock is immune to the wall clock being set back; a token is usable only
//! while both say enough of its lifetime remains. Claims are read only to shorten the
//! lifetime, never trusted as absolute times: with both `iat` and `exp`, their difference
//! is counted from receipt, so a skewed local clock changes nothing.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::claims::Claims;
use super::LoginError;
use crate::secret::Secret;

/// The least time a token must have left to be sent, whatever its lifetime.
const MIN_MARGIN: Duration = Duration::from_secs(1);

/// A bearer token the proxy obtained, ready to be sent.
///
/// Its `Debug` output shows the generation and the expiry, never the token. The raw token
/// is zeroed when the credential is dropped; the header's copy is not, because `http`
/// gives no way to wipe a `HeaderValue`.
pub struct Credential {
    header: HeaderValue,
    token: Secret,
    generation: u64,
    obtained_wall: SystemTime,
    obtained_mono: Instant,
    lifetime: Duration,
}

impl Credential {
    /// Turns a login answer received at `wall`/`mono` into a credential, or explains why
    /// it cannot be one. `max_lifetime` is `auth.token_lifetime`.
    pub(crate) fn from_login(
        token: Secret,
        generation: u64,
        (wall, mono): (SystemTime, Instant),
        max_lifetime: Duration,
    ) -> Result<Credential, LoginError> {
        let header = bearer_header(&token)?;
        let lifetime = lifetime(Claims::parse(token.expose()), wall, max_lifetime)?;
        if lifetime <= margin(lifetime) {
            return Err(LoginError::Unusable(format!(
                "the token's lifetime of {lifetime:?} is too short to use"
            )));
        }
        Ok(Credential {
            header,
            token,
            generation,
            obtained_wall: wall,
            obtained_mono: mono,
            lifetime,
        })
    }

    /// The `Authorization` value, `Bearer <token>`, marked sensitive.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Counts successful logins: 1 for the first token, one more for each new one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the token's lifetime, counted from receipt, ends by the wall clock. It stops
    /// being sent a safety margin before that.
    pub fn expires_at(&self) -> SystemTime {
        self.obtained_wall + self.lifetime
    }

    /// When the token was received, by the wall clock.
    pub fn obtained_at(&self) -> SystemTime {
        self.obtained_wall
    }

    /// The lifetime counted from receipt: the shorter of `auth.token_lifetime` and what the
    /// claims allow.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The raw token, for `pcce-proxy token` and for logging out. Never log it.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// How long since receipt, by whichever clock has moved further.
    pub(crate) fn age(&self, wall: SystemTime, mono: Instant) -> Duration {
        let by_wall = wall.duration_since(self.obtained_wall).unwrap_or_default();
        by_wall.max(mono.saturating_duration_since(self.obtained_mono))
    }

    /// Whether more than the safety margin of the lifetime remains on both clocks.
    pub(crate) fn is_usable(&self, wall: SystemTime, mono: Instant) -> bool {
        self.lifetime.saturating_sub(self.age(wall, mono)) > margin(self.lifetime)
    }

    /// The age at which a refresh is due: once less than `refresh_before` remains, but not
    /// before half the lifetime, and at the latest when the token stops being usable.
    pub(crate) fn refresh_after(&self, refresh_before: Duration) -> Duration {
        let wanted = self.lifetime.saturating_sub(refresh_before);
        let unusable = self.lifetime - margin(self.lifetime);
        wanted.max(self.lifetime / 2).min(unusable)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("generation", &self.generation)
            .field("token", &"[redacted]")
            .field(
                "obtained_at",
                &humantime::format_rfc3339_seconds(self.obtained_wall),
            )
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// The time a token must still have left to be sent: max(1 s, 5 % of its lifetime), so
/// clock granularity and transit time cannot make it arrive dead.
pub(crate) fn margin(lifetime: Duration) -> Duration {
    MIN_MARGIN.max(lifetime / 20)
}

/// Builds `Bearer <token>`. A bearer token is visible ASCII without spaces (RFC 6750); a
/// token with anything else would be cut or refused on the way, so it is not accepted.
fn bearer_header(token: &Secret) -> Result<HeaderValue, LoginError> {
    let raw = token.expose();
    if raw.is_empty() {
        return Err(LoginError::Unusable("the token is empty".into()));
    }
    if !raw.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(LoginError::Unusable(
            "the token has characters that cannot be sent in a header".into(),
        ));
    }
    let text = Zeroizing::new(format!("Bearer {raw}"));
    let mut header = HeaderValue::from_str(&text).map_err(|_| {
        LoginError::Unusable("the token has characters that cannot be sent in a header".into())
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// The lifetime from receipt: `max_lifetime`, shortened by the claims when they say so.
fn lifetime(
    claims: Claims,
    received: SystemTime,
    max_lifetime: Duration,
) -> Result<Duration, LoginError> {
    let left = match (claims.iat, claims.exp) {
        (Some(iat), Some(exp)) if exp <= iat => {
            return Err(LoginError::Unusable(
                "the token's exp claim is not after its iat claim".into(),
            ))
        }
        (Some(iat), Some(exp)) => exp - iat,
        (None, Some(exp)) => exp - unix_seconds(received),
        _ => return Ok(max_lifetime),
    };
    if left <= 0.0 {
        return Err(LoginError::Unusable(
            "the token's exp claim is already past by the local clock".into(),
        ));
    }
    // An overflowing claim means "far in the future": the configured bound applies.
    Ok(Duration::try_from_secs_f64(left).map_or(max_lifetime, |left| left.min(max_lifetime)))
}

/// Seconds since the Unix epoch, negative before it.
fn unix_seconds(time: SystemTime) -> f64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::claims::tests::jwt;
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(unix: u64) -> (SystemTime, Instant) {
        (UNIX_EPOCH + Duration::from_secs(unix), Instant::now())
    }

    fn login(token: &str, received: (SystemTime, Instant)) -> Result<Credential, LoginError> {
        Credential::from_login(Secret::new(token), 1, received, 30 * MINUTE)
    }

    #[test]
    fn a_token_without_claims_lives_the_configured_lifetime() {
        let credential = login("opaque", at(1_000)).expect("usable");
        assert_eq!(credential.lifetime(), 30 * MINUTE);
        assert_eq!(
            credential.expires_at(),
            UNIX_EPOCH + Duration::from_secs(2_800)
        );
        assert_eq!(credential.header(), "Bearer opaque");
        assert!(credential.header().is_sensitive());
    }

    #[test]
    fn exp_alone_shortens_the_lifetime() {
        let credential = login(&jwt(r#"{"exp":1600}"#), at(1_000)).expect("usable");
        assert_eq!(credential.lifetime(), 10 * MINUTE);
    }

    #[test]
    fn the_configured_lifetime_caps_a_long_exp() {
        let credential = login(&jwt(r#"{"exp":99999999999}"#), at(1_000)).expect("usable");
        assert_eq!(credential.lifetime(), 30 * MINUTE);
        let huge = login(&jwt(r#"{"iat":0,"exp":1e300}"#), at(1_000)).expect("usable");
        assert_eq!(huge.lifetime(), 30 * MINUTE);
    }

    #[test]
    fn iat_and_exp_in_the_past_still_give_the_full_lifetime() {
        // The local clock runs an hour ahead of the Console's.
        let token = jwt(r#"{"iat":1000,"exp":1900}"#);
        let credential = login(&token, at(1_000 + 3_600)).expect("usable");
        assert_eq!(credential.lifetime(), 15 * MINUTE);
        assert_eq!(
            credential.expires_at(),
            UNIX_EPOCH + Duration::from_secs(5_500)
        );
    }

    #[test]
    fn iat_and_exp_in_the_future_do_not_stretch_the_lifetime() {
        let token = jwt(r#"{"iat":9000,"exp":9600}"#);
        assert_eq!(
            login(&token, at(1_000)).expect("usable").lifetime(),
            10 * MINUTE
        );
    }

    #[test]
    fn unusable_answers_are_failed_logins() {
        let cases = [
            ("", "empty"),
            ("two words", "header"),
            ("line\nbreak", "header"),
            ("caf\u{e9}", "header"),
            (&jwt(r#"{"iat":1000,"exp":1000}"#), "not after"),
            (&jwt(r#"{"iat":1000,"exp":900}"#), "not after"),
            (&jwt(r#"{"exp":999}"#), "already past"),
            (&jwt(r#"{"exp":1000.5}"#), "too short"),
        ];
        for (token, reason) in cases {
            match login(token, at(1_000)) {
                Err(LoginError::Unusable(message)) => {
                    assert!(message.contains(reason), "{message}")
                }
                other => panic!("{token:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_margin_is_one_second_or_five_percent() {
        assert_eq!(margin(Duration::from_secs(4)), Duration::from_secs(1));
        assert_eq!(margin(Duration::from_secs(20)), Duration::from_secs(1));
        assert_eq!(margin(30 * MINUTE), Duration::from_secs(90));
    }

    #[test]
    fn a_token_stops_being_usable_inside_the_margin() {
        let (wall, mono) = at(1_000);
        let credential = login("opaque", (wall, mono)).expect("usable");
        let after = |secs| {
            (
                wall + Duration::from_secs(secs),
                mono + Duration::from_secs(secs),
            )
        };
        let (w, m) = after(1_709);
        assert!(credential.is_usable(w, m));
        let (w, m) = after(1_710);
        assert!(!credential.is_usable(w, m));
    }

    #[test]
    fn either_clock_alone_can_expire_a_token() {
        let (wall, mono) = at(1_000);
        let credential = login("opaque", (wall, mono)).expect("usable");
        let hour = Duration::from_secs(3_600);
        // A laptop slept: the wall clock jumped, the monotonic clock did not.
        assert!(!credential.is_usable(wall + hour, mono));
        // The wall clock was set back: the monotonic clock still counts.
        assert!(!credential.is_usable(wall - hour, mono + hour));
        assert!(credential.is_usable(wall - hour, mono));
    }

    #[test]
    fn refresh_waits_for_half_the_lifetime_of_a_short_token() {
        let credential =
            Credential::from_login(Secret::new("opaque"), 1, at(1_000), Duration::from_secs(4))
                .expect("usable");
        assert_eq!(credential.refresh_after(5 * MINUTE), Duration::from_secs(2));
    }

    #[test]
    fn refresh_comes_refresh_before_the_expiry_of_a_long_token() {
        let credential = login("opaque", at(1_000)).expect("usable");
        assert_eq!(credential.refresh_after(5 * MINUTE), 25 * MINUTE);
    }

    #[test]
    fn refresh_is_due_no_later_than_the_token_becomes_unusable() {
        let credential = Credential::from_login(
            Secret::new("opaque"),
            1,
            at(0),
            Duration::from_millis(1_500),
        )
        .expect("usable");
        assert_eq!(
            credential.refresh_after(5 * MINUTE),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let credential = login("s3cr3t-token", at(1_000)).expect("usable");
        let text = format!("{credential:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("generation: 1"), "{text}");
    }
}
