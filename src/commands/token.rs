//! `pcce-proxy token`: log in once and print the token on stdout, for scripts such as
//! `curl -H "Authorization: Bearer $(pcce-proxy token)"`.
//!
//! It logs in the way `run` would (`auth.method` `password` or `certificate`, with the
//! same trust and egress) and checks the answer as the token cache does, so a token it
//! prints is one the proxy would have used. Stdout carries the token and nothing else;
//! diagnostics go to stderr and every failure exits non-zero.

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::auth;
use crate::config::Config;
use crate::token::Credential;

/// Runs the command.
pub async fn token(config: Config) -> ExitCode {
    let login = match auth::authenticator(&config) {
        Ok(login) => login,
        Err(err) => return fail(&err.to_string()),
    };
    let token = match login.login().await {
        Ok(token) => token,
        Err(err) => return fail(&super::login_failure(&err, &config)),
    };
    let received = (SystemTime::now(), tokio::time::Instant::now());
    let credential = match Credential::from_login(token, 1, received, config.auth.token_lifetime) {
        Ok(credential) => credential,
        Err(err) => return fail(&super::login_failure(&err, &config)),
    };

    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{}", credential.token().expose()).and_then(|()| stdout.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&format!("cannot write the token: {err}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("pcce-proxy: {message}");
    ExitCode::from(1)
}
