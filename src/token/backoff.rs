//! How long logins pause after a failure.
//!
//! Transient failures back off exponentially with jitter, so that many proxies behind one
//! Console do not retry in step. Refused credentials pause much longer: each failed login
//! can count towards locking a directory account, and retrying cannot fix a wrong password.

use std::time::Duration;

use rand::Rng;

use super::LoginError;

/// The longest `Retry-After` honoured. A Console (or a proxy in front of it) asking for
/// longer, or sending a garbled value, must not stop logins for days: after an hour the
/// proxy asks again, and backs off again if still refused.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Why logins are paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseKind {
    /// A transient failure; the next attempt comes after the backoff.
    Backoff,
    /// The Console refused the credentials; only new credentials or `SIGHUP` end it early.
    Refused,
}

/// The backoff and refusal settings of a [`super::TokenPolicy`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// The first step.
    pub(crate) initial: Duration,
    /// The largest step.
    pub(crate) max: Duration,
    /// The pause after refused credentials.
    pub(crate) refused: Duration,
}

impl Backoff {
    /// The pause that follows `error`, the `failures`-th failure in a row (1 for the first).
    pub(crate) fn after(&self, error: &LoginError, failures: u32) -> (PauseKind, Duration) {
        if let LoginError::Refused { .. } = error {
            return (PauseKind::Refused, self.refused);
        }
        let wait = jittered(self.step(failures), &mut rand::rng());
        match error {
            LoginError::RateLimited {
                retry_after: Some(asked),
            } => (PauseKind::Backoff, wait.max((*asked).min(MAX_RETRY_AFTER))),
            _ => (PauseKind::Backoff, wait),
        }
    }

    /// The step for the `failures`-th failure in a row: the initial step, doubled for each
    /// earlier failure, never above the maximum.
    pub(crate) fn step(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1 << doublings)
            .map_or(self.max, |step| step.min(self.max))
    }
}

/// A wait drawn uniformly between half and all of `step`.
fn jittered(step: Duration, rng: &mut impl Rng) -> Duration {
    rng.random_range(step / 2..=step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            refused: Duration::from_secs(300),
        }
    }

    #[test]
    fn steps_double_from_one_second_to_sixty() {
        let steps: Vec<u64> = (1..=9).map(|n| backoff().step(n).as_secs()).collect();
        assert_eq!(steps, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff().step(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn waits_fall_between_half_and_all_of_the_step() {
        let error = LoginError::Connect("connection refused".into());
        for failures in 1..=10 {
            let step = backoff().step(failures);
            for _ in 0..50 {
                let (kind, wait) = backoff().after(&error, failures);
                assert_eq!(kind, PauseKind::Backoff);
                assert!(
                    wait >= step / 2 && wait <= step,
                    "{wait:?} for step {step:?}"
                );
            }
        }
    }

    #[test]
    fn retry_after_is_capped_at_an_hour() {
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            refused: Duration::from_secs(300),
        };
        let error = LoginError::RateLimited {
            retry_after: Some(Duration::from_secs(u64::MAX)),
        };
        let (_, wait) = backoff.after(&error, 1);
        assert_eq!(wait, MAX_RETRY_AFTER);
    }

    #[test]
    fn retry_after_is_a_lower_bound() {
        let asked = Duration::from_secs(30);
        let error = LoginError::RateLimited {
            retry_after: Some(asked),
        };
        assert_eq!(backoff().after(&error, 1), (PauseKind::Backoff, asked));
        let (_, wait) = backoff().after(&error, 8);
        assert!(wait >= asked && wait <= Duration::from_secs(60), "{wait:?}");
    }

    #[test]
    fn refused_credentials_pause_five_minutes() {
        let error = LoginError::Refused {
            status: 401,
            message: "invalid credentials".into(),
        };
        let expected = (PauseKind::Refused, Duration::from_secs(300));
        assert_eq!(backoff().after(&error, 1), expected);
        assert_eq!(backoff().after(&error, 7), expected);
    }
}
