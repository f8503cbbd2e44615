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
use crate::config::{self, Config};
use crate::telemetry;

/// Exit code for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;

/// Runs the command the command line names.
pub async fn dispatch(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Demo = command {
        return demo::demo(&cli.global).await;
    }

    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match config::load(&cli.global, &env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pcce-proxy: invalid configuration:\n{err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log.format, &config.log.level);

    match command {
        Command::Run => run::run(config).await,
        Command::Check => check::check(config).await,
        Command::Token => token::token(config).await,
        Command::Health { wait } => health::health(&config, wait.as_deref()).await,
        other => not_available(&config, other),
    }
}

fn not_available(_config: &Config, command: Command) -> ExitCode {
    eprintln!("pcce-proxy: the {command:?} command is not available in this build");
    ExitCode::from(1)
}
