//! The `pcce-proxy` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use pcce_proxy::cli::Cli;
use pcce_proxy::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The main runtime has the accept loop, logins, signals and the admin listener; the
    // client connections are served by worker threads of their own (`server::Workers`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pcce-proxy: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(commands::dispatch(cli));
    // Log lines are written in batches; the last ones must not be lost at exit.
    pcce_proxy::log_writer::flush();
    code
}
