//! The subcommands, and the one place that turns their outcome into an exit code.
//!
//! Exit codes: 0 success, 1 a runtime failure (the Console, a port in use...), 2 an
//! invalid configuration or command line.

pub mod check;
pub mod demo;
pub mod health;
pub mod run;
pub mod token;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::{self, AuthMethod, Config};
use crate::telemetry;
use crate::token::LoginError;

/// Exit code for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;

/// Runs the command the command line names.
pub async fn dispatch(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Demo = command {
        return demo::demo(&cli.global).await;
    }

    let env: Vec<(String, String)> = std::env::vars().collect();
    if let Command::Health { wait } = &command {
        return match config::load_admin_address(&cli.global, &env) {
            Ok(address) => health::health(address, wait.as_deref()).await,
            Err(err) => invalid_configuration(&err),
        };
    }
    let config = match config::load(&cli.global, &env) {
        Ok(config) => config,
        Err(err) => return invalid_configuration(&err),
    };
    telemetry::init(config.log.format, &config.log.level);

    match command {
        Command::Run => run::run(config).await,
        Command::Check => check::check(config).await,
        Command::Token => token::token(config).await,
        other => not_available(&config, other),
    }
}

fn invalid_configuration(err: &config::LoadError) -> ExitCode {
    eprintln!("pcce-proxy: invalid configuration:\n{err}");
    ExitCode::from(EXIT_CONFIG)
}

fn not_available(_config: &Config, command: Command) -> ExitCode {
    eprintln!("pcce-proxy: the {command:?} command is not available in this build");
    ExitCode::from(1)
}

/// One line saying why a login failed and, when the Console refused it, whom it refused
/// and what to check. `check` and `token` print it alike.
pub(crate) fn login_failure(err: &LoginError, config: &Config) -> String {
    match (err, config.auth.method) {
        (LoginError::Refused { status, message }, AuthMethod::Certificate) => format!(
            "login refused ({status}: {message}): the Console knows no user for the client \
             certificate; check auth.client_cert_file"
        ),
        (LoginError::Refused { status, message }, _) => format!(
            "login refused for user \"{}\" ({status}: {message}): check auth.username and \
             the password",
            config.auth.username
        ),
        (other, _) => format!("login failed: {other}"),
    }
}
