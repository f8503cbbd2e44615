//! Logging the proxy's own token out when it stops (`auth.logout_on_exit`).
//!
//! The call is `POST /api/<v>/logout` with the token as bearer, made with the same
//! client as the logins (same trust, egress and no redirects). It is the last thing the
//! proxy does, after every request has finished, so nothing in flight loses its token;
//! and it is bounded by a short timeout of its own, because a process that is being
//! stopped must not hang on an unreachable Console.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;

use crate::config::{AuthConfig, ConsoleConfig};
use crate::console::api_client;
use crate::token::Credential;

/// The longest the logout call may take.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// A prepared logout call.
#[derive(Debug, Clone)]
pub struct Logout {
    client: reqwest::Client,
    url: String,
}

impl Logout {
    /// A logout against `console`, at the API version of `auth`'s login calls.
    pub fn new(client: reqwest::Client, console: &ConsoleConfig, auth: &AuthConfig) -> Self {
        Logout {
            client,
            url: format!("{}/api/{}/logout", console.url.base(), auth.api_version),
        }
    }

    /// Logs `credential` out. The error says what failed, never with the token.
    pub async fn log_out(&self, credential: &Credential) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, credential.header().clone())
            .timeout(LOGOUT_TIMEOUT)
            .send()
            .await
            .map_err(|err| api_client::classify(&err).1)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "the Console answered the logout with status {status}"
            ))
        }
    }
}
