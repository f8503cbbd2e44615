//! `pcce-proxy check`: is this configuration ready to serve?
//!
//! The configuration has been validated before this runs. The command then connects to
//! the Console once, accepting any certificate, and prints what it presented (subject,
//! SHA-256 fingerprint in the form `console.pin_sha256` takes) and whether the configured
//! trust accepts it. Only a trusted Console gets credentials: the command then logs in
//! once the way `run` would, and prints the user, the Console's version and the token's
//! expiry (never the token). With `auth.method = "basic"` the version call itself proves
//! the credentials.
//!
//! Stdout carries the report, one `name  value` line each. On a failure the command
//! exits 1 with one line on stderr saying what failed and what to do.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;

use crate::auth::{self, SetupError};
use crate::config::{AuthMethod, Config, ConsoleConfig};
use crate::console::session::ConsoleApi;
use crate::console::tls::{self, ClientIdentity};
use crate::token::{Authenticate, Credential, LoginError};

/// A failure, as the one line on stderr.
struct Failure(String);

/// Runs the command.
pub async fn check(config: Config) -> ExitCode {
    match run_checks(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("pcce-proxy: {message}");
            ExitCode::from(1)
        }
    }
}

async fn run_checks(config: &Config) -> Result<(), Failure> {
    let login = Login::prepare(config)?;
    report("console", &config.console.url.base());

    check_certificate(&config.console).await?;

    let (user, version, expiry) = login.run(config).await?;
    report("user", &user);
    report("version", &version);
    report("token", &expiry);
    Ok(())
}

/// Prints one line of the report.
fn report(name: &str, value: &str) {
    println!("{name:<12}{value}");
}

/// Connects, prints the certificate, and fails unless the configured trust accepts it.
async fn check_certificate(console: &ConsoleConfig) -> Result<(), Failure> {
    let inspection = tls::inspect(console)
        .await
        .map_err(|err| Failure(format!("cannot reach the Console: {err}")))?;
    let Some(certificate) = inspection.certificate else {
        return Err(Failure(
            "the Console presented no certificate: check console.url".to_owned(),
        ));
    };
    report("certificate", &certificate.subject);
    report("sha256", &certificate.fingerprint);
    match inspection.verified {
        // Insecure mode is the operator's explicit choice, so the check goes on to log in;
        // the report says plainly that nothing was verified.
        Ok(()) if console.insecure_skip_verify && console.pin_sha256.is_empty() => {
            report("verified", INSECURE);
            Ok(())
        }
        Ok(()) => {
            report("verified", &format!("yes ({})", trust_name(console)));
            Ok(())
        }
        Err(reason) => {
            report("verified", "no");
            Err(Failure(untrusted(
                console,
                &reason,
                &certificate.fingerprint,
            )))
        }
    }
}

/// The `verified` line in insecure mode.
const INSECURE: &str = "no: console.insecure_skip_verify is set (the certificate is not checked)";

/// The one line for a certificate the configured trust refuses.
fn untrusted(console: &ConsoleConfig, reason: &str, fingerprint: &str) -> String {
    // With a pin, the verifier's message is the whole story: a CA file cannot help (pins
    // are strict), and pinning whatever the Console presents now could accept an
    // interception.
    if !console.pin_sha256.is_empty() {
        return reason.to_owned();
    }
    // The verifier's reason ends in a hint naming configuration keys; the summary before
    // it is enough here, followed by the command-line options to use.
    let summary = reason.split(" (").next().unwrap_or(reason);
    format!("{summary}: pass --ca-file FILE, or pin it with --pin-sha256 {fingerprint}")
}

fn trust_name(console: &ConsoleConfig) -> &'static str {
    if !console.pin_sha256.is_empty() {
        "console.pin_sha256"
    } else if console.ca_file.is_some() {
        "system roots and console.ca_file"
    } else {
        "system roots"
    }
}

/// How the check logs in, prepared before anything is sent so that a broken client
/// certificate or password source setting is reported first.
enum Login {
    /// A token login (`password` or `certificate`), with the user it logs in as.
    Token {
        login: Arc<dyn Authenticate>,
        user: String,
    },
    /// Basic credentials, tried on the version call.
    Basic(ConsoleApi),
}

impl Login {
    fn prepare(config: &Config) -> Result<Login, Failure> {
        let setup = |err: SetupError| Failure(err.to_string());
        if config.auth.method == AuthMethod::Basic {
            return auth::console_api(config).map(Login::Basic).map_err(setup);
        }
        let user = match config.auth.method {
            AuthMethod::Certificate => {
                let identity = auth::client_identity(config).map_err(setup)?;
                format!("{} (client certificate)", certificate_subject(&identity))
            }
            _ => config.auth.username.clone(),
        };
        let login = auth::authenticator(config).map_err(setup)?;
        Ok(Login::Token { login, user })
    }

    /// Logs in and reads the version: the user, the version and the token's expiry.
    async fn run(&self, config: &Config) -> Result<(String, String, String), Failure> {
        match self {
            Login::Token { login, user } => {
                let credential = token_login(login.as_ref(), config).await?;
                let api = auth::console_api(config).map_err(|err| Failure(err.to_string()))?;
                let version = read_version(&api, credential.header(), config).await?;
                Ok((user.clone(), version, describe_expiry(&credential)))
            }
            Login::Basic(api) => {
                let header = basic_header(config).await?;
                let version = read_version(api, &header, config).await?;
                let token = "none: auth.method = \"basic\" sends the credentials every time";
                Ok((config.auth.username.clone(), version, token.to_owned()))
            }
        }
    }
}

async fn token_login(login: &dyn Authenticate, config: &Config) -> Result<Credential, Failure> {
    let token = login
        .login()
        .await
        .map_err(|err| login_failure(&err, config))?;
    let received = (SystemTime::now(), tokio::time::Instant::now());
    Credential::from_login(token, 1, received, config.auth.token_lifetime)
        .map_err(|err| login_failure(&err, config))
}

async fn basic_header(config: &Config) -> Result<HeaderValue, Failure> {
    let source = config
        .auth
        .password
        .as_ref()
        .ok_or_else(|| Failure("auth.method = \"basic\" needs a password source".to_owned()))?;
    let password = source
        .read()
        .await
        .map_err(|err| Failure(format!("cannot read the password: {err}")))?;
    auth::basic::header_value(&config.auth.username, &password).map_err(Failure)
}

async fn read_version(
    api: &ConsoleApi,
    authorization: &HeaderValue,
    config: &Config,
) -> Result<String, Failure> {
    api.version(authorization).await.map_err(|err| match err {
        LoginError::Refused { .. } => login_failure(&err, config),
        other => Failure(format!("cannot read the Console's version: {other}")),
    })
}

/// One line that says what went wrong with the login and what to check.
fn login_failure(err: &LoginError, config: &Config) -> Failure {
    Failure(super::login_failure(err, config))
}

fn describe_expiry(credential: &Credential) -> String {
    let expires = humantime::format_rfc3339_seconds(credential.expires_at());
    let whole_seconds = std::time::Duration::from_secs(credential.lifetime().as_secs());
    let lifetime = humantime::format_duration(whole_seconds);
    format!("expires {expires} (in {lifetime})")
}

/// The subject of the client certificate, such as `CN=alice`.
fn certificate_subject(identity: &ClientIdentity) -> String {
    identity
        .chain
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map_or_else(
            || "(unreadable certificate)".to_owned(),
            |(_, cert)| cert.subject().to_string(),
        )
}
