//! The one switch that begins a graceful shutdown, whoever asks for it.
//!
//! A signal (`SIGTERM`, `SIGINT`), `POST /quitquitquit` on the admin listener and
//! [`crate::commands::run::ProxyHandle::stop`] all flip the same [`Shutdown`]; readiness
//! reads it to answer 503 from that moment on, and the task that stops the proxy waits
//! on it. The first reason given is kept, so the log says what started the shutdown.

use std::sync::Arc;

use tokio::sync::watch;

/// A shared, one-way shutdown switch. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    begun: Arc<watch::Sender<Option<&'static str>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A switch that has not been flipped.
    pub fn new() -> Self {
        Shutdown {
            begun: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Begins the shutdown, for `reason` (such as `"SIGTERM"`). Returns whether this call
    /// began it; later calls change nothing.
    pub fn begin(&self, reason: &'static str) -> bool {
        self.begun.send_if_modified(|begun| {
            if begun.is_some() {
                return false;
            }
            *begun = Some(reason);
            true
        })
    }

    /// Why the shutdown began, once it has.
    pub fn reason(&self) -> Option<&'static str> {
        *self.begun.borrow()
    }

    /// Waits until the shutdown begins and returns its reason.
    pub async fn begun(&self) -> &'static str {
        let mut receiver = self.begun.subscribe();
        let reason = match receiver.wait_for(Option::is_some).await {
            Ok(begun) => *begun,
            // The sender lives in `self`, so the channel cannot close while we wait.
            Err(_) => None,
        };
        reason.unwrap_or("shutdown")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_is_kept_and_waiters_are_released() {
        let shutdown = Shutdown::new();
        assert_eq!(shutdown.reason(), None);
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.begun().await }
        });

        assert!(shutdown.begin("SIGTERM"));
        assert!(!shutdown.begin("POST /quitquitquit"));

        assert_eq!(waiter.await.expect("waiter"), "SIGTERM");
        assert_eq!(shutdown.reason(), Some("SIGTERM"));
        assert_eq!(shutdown.begun().await, "SIGTERM");
    }
}
