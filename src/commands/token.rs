//! `pcce-proxy token`: log in once and print the token on stdout, for scripts such as
//! `curl -H "Authorization: Bearer $(pcce-proxy token)"`. Diagnostics go to stderr.

use std::io::Write;
use std::process::ExitCode;

use crate::config::Config;
use crate::console::{api_client, login::PasswordLogin};
use crate::token::Authenticate;

/// Runs the command.
pub async fn token(config: Config) -> ExitCode {
    let api = match api_client::api_client(&config.console, None) {
        Ok(api) => api,
        Err(err) => return fail(&err.to_string()),
    };
    let Some(login) = PasswordLogin::new(api, &config.console, &config.auth) else {
        return fail("auth.method = \"password\" needs a password source");
    };
    match login.login().await {
        Ok(token) => {
            let mut stdout = std::io::stdout().lock();
            let written = writeln!(stdout, "{}", token.expose()).and_then(|()| stdout.flush());
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&format!("cannot write the token: {err}")),
            }
        }
        Err(err) => fail(&format!("login failed: {err}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("pcce-proxy: {message}");
    ExitCode::from(1)
}
