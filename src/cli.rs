//! The command line: global options and subcommands, parsed with clap.
//!
//! Every global option overrides one configuration key, so the options carry plain
//! strings and [`crate::config::load`] validates them with the same rules and messages
//! as the file and the environment. The environment is deliberately not wired into
//! clap: `PCCE_PROXY_<SECTION>__<KEY>` variables are read by the loader, which knows
//! which names to ignore and how to convert each key's value.

use std::path::PathBuf;

use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

/// `pcce-proxy [GLOBAL OPTIONS] [COMMAND]`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pcce-proxy",
    version,
    about = "Local authenticating reverse proxy for the Prisma Cloud Compute Console API",
    long_about = "Local authenticating reverse proxy for the Prisma Cloud Compute Console \
                  API.\n\nScripts talk plain HTTP to the proxy without credentials; the \
                  proxy logs in, keeps a token fresh, adds the tenant parameter and \
                  forwards every request over verified TLS to the Console.\n\n\
                  Configuration comes from built-in defaults, a TOML file, \
                  PCCE_PROXY_<SECTION>__<KEY> environment variables and the options \
                  below, each overriding the one before."
)]
pub struct Cli {
    /// Options that apply to every command.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do; `run` when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command to execute, `run` when none was given.
    pub fn command_or_run(&self) -> Command {
        self.command.clone().unwrap_or(Command::Run)
    }
}

/// The subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the proxy (the default when no command is given)
    Run,

    /// Validate the configuration, connect to the Console and log in once
    ///
    /// Prints the Console certificate's subject and SHA-256 fingerprint and whether it
    /// verifies; only if it does, logs in and prints the user, the Console's version and
    /// the token's expiry. Exits 0 when all is well.
    Check,

    /// Log in and print a bearer token on stdout, nothing else
    ///
    /// For example: curl -H "Authorization: Bearer $(pcce-proxy token)" ...
    Token,

    /// Ask a running proxy's admin listener whether it is ready
    ///
    /// Requests /readyz from admin.address of the same configuration and exits 0 when
    /// the proxy is ready: a health check for images without curl.
    Health {
        /// Keep asking until ready or until this much time has passed, such as "30s"
        #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
        wait: Option<String>,
    },

    /// Run a simulated Console and the proxy in front of it, needing no configuration
    ///
    /// Prints ready-to-paste curl commands and serves until Ctrl-C.
    Demo,
}

/// The global options. Each one overrides the configuration key named in its help.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct GlobalArgs {
    /// TOML configuration file [default: $XDG_CONFIG_HOME/pcce-proxy/config.toml, when it
    /// exists]
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// listen.address: "HOST:PORT" or "unix:/path/to/socket"
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,

    /// console.url: https://HOST[:PORT][/PREFIX]
    #[arg(long, global = true, value_name = "URL")]
    pub console: Option<String>,

    /// console.project: tenant added to every request as project=<NAME>
    #[arg(long, global = true, value_name = "NAME")]
    pub project: Option<String>,

    /// auth.username: the Console user the proxy logs in as
    #[arg(long, global = true, value_name = "USER")]
    pub username: Option<String>,

    /// auth.password_file: file holding the password, read at every login ("" unsets it)
    #[arg(long, global = true, value_name = "FILE", value_parser = path_or_empty())]
    pub password_file: Option<PathBuf>,

    /// console.ca_file: PEM bundle trusted in addition to the system roots ("" unsets it)
    #[arg(long, global = true, value_name = "FILE", value_parser = path_or_empty())]
    pub ca_file: Option<PathBuf>,

    /// console.pin_sha256: SHA-256 of the Console's certificate, hex (repeatable)
    #[arg(long = "pin-sha256", global = true, value_name = "HEX")]
    pub pin_sha256: Vec<String>,

    /// console.insecure_skip_verify = true: encrypt without verifying the Console
    #[arg(long, global = true)]
    pub insecure_skip_verify: bool,

    /// admin.address: "HOST:PORT" of the admin listener, or "off"
    #[arg(long, global = true, value_name = "ADDR")]
    pub admin: Option<String>,

    /// log.format: "text" or "json"
    #[arg(long, global = true, value_name = "text|json")]
    pub log_format: Option<String>,

    /// log.level: a tracing filter such as "info" or "pcce_proxy=debug"
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// A path, where an empty value is allowed and means unset, as it does in the file and
/// the environment (clap's own path parser refuses it).
fn path_or_empty() -> impl TypedValueParser<Value = PathBuf> {
    OsStringValueParser::new().map(PathBuf::from)
}

/// Checks a `--wait` value at parse time, so a typo is reported like any other bad
/// option; the command reads the string again with the same parser.
fn duration_arg(text: &str) -> Result<String, String> {
    crate::config::validate::parse_duration(text).map(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["pcce-proxy", "check", "--console", "https://c:8083"])
            .expect("options after the subcommand parse");
        assert_eq!(cli.command, Some(Command::Check));
        assert_eq!(cli.global.console.as_deref(), Some("https://c:8083"));
    }

    #[test]
    fn no_command_means_run() {
        let cli = Cli::try_parse_from(["pcce-proxy", "-c", "/etc/p.toml"]).expect("parses");
        assert_eq!(cli.command_or_run(), Command::Run);
        assert_eq!(cli.global.config, Some(PathBuf::from("/etc/p.toml")));
    }

    #[test]
    fn an_empty_path_option_is_accepted() {
        let cli = Cli::try_parse_from(["pcce-proxy", "--password-file", "", "--ca-file", ""])
            .expect("empty paths parse");
        assert_eq!(cli.global.password_file, Some(PathBuf::new()));
        assert_eq!(cli.global.ca_file, Some(PathBuf::new()));
    }

    #[test]
    fn pin_sha256_is_repeatable() {
        let cli = Cli::try_parse_from(["pcce-proxy", "--pin-sha256", "aa", "--pin-sha256", "bb"])
            .expect("parses");
        assert_eq!(cli.global.pin_sha256, ["aa", "bb"]);
    }

    #[test]
    fn health_wait_needs_a_duration_with_a_unit() {
        let cli = Cli::try_parse_from(["pcce-proxy", "health", "--wait", "30s"]).expect("parses");
        assert_eq!(
            cli.command,
            Some(Command::Health {
                wait: Some("30s".into())
            })
        );
        assert!(Cli::try_parse_from(["pcce-proxy", "health", "--wait", "30"]).is_err());
    }
}
