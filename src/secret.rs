//! Secrets: values that must never reach a log line, an error message or `Debug` output.
//!
//! [`Secret`] wraps a string, zeroes it when dropped and prints only a placeholder. Code
//! that needs the value calls [`Secret::expose`], which makes every use easy to find.
//!
//! [`PasswordSource::read`] fetches the password at login time from wherever the
//! configuration says. Its errors name the source (a path, a variable name) but never
//! carry the value, and a password command's stderr is discarded, since a failing
//! command may echo the secret there.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

/// A secret string (password, token, client token). Its `Debug` and `Display` print
/// `[redacted]`; its memory is zeroed on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value. The caller should drop its own copy.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret value. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where `auth.password` comes from. Exactly one source is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `auth.password`: the value itself.
    Inline(Secret),
    /// `auth.password_file`: read again at every login, one trailing newline trimmed.
    File(PathBuf),
    /// `auth.password_env`: the name of an environment variable.
    Env(String),
    /// `auth.password_command`: run at every login, stdout trimmed.
    Command(CommandSpec),
}

/// A command that prints a secret. Its `Debug` hides the command line, whose arguments
/// may carry a credential.
#[derive(Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// A string run through `sh -c`.
    Shell(String),
    /// A program and its arguments, run directly (no shell needed).
    Argv(Vec<String>),
}

impl fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandSpec::Shell(_) => f.write_str("Shell([redacted])"),
            CommandSpec::Argv(_) => f.write_str("Argv([redacted])"),
        }
    }
}

/// How long a password command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes accepted on a password command's stdout.
const COMMAND_OUTPUT_LIMIT: usize = 64 * 1024;

/// Why a password could not be read. No variant holds or prints the password.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The password file could not be read.
    #[error("password_file {}: cannot read it: {source}", path.display())]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The password file is empty (after trimming one trailing newline).
    #[error("password_file {}: the file is empty", path.display())]
    FileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The password file is not UTF-8 text.
    #[error("password_file {}: the content is not valid UTF-8", path.display())]
    FileNotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The password variable is not set.
    #[error("password_env {name}: the environment variable is not set")]
    EnvUnset {
        /// The variable's name.
        name: String,
    },
    /// The password variable is set but empty.
    #[error("password_env {name}: the environment variable is empty")]
    EnvEmpty {
        /// The variable's name.
        name: String,
    },
    /// The password variable is not valid UTF-8.
    #[error("password_env {name}: the value is not valid UTF-8")]
    EnvNotUtf8 {
        /// The variable's name.
        name: String,
    },
    /// The password command could not be started.
    #[error("password_command: cannot start it: {source}")]
    CommandSpawn {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Reading the command's output or waiting for it failed.
    #[error("password_command: cannot read its output: {source}")]
    CommandIo {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The command failed. Its stderr is not shown: it may contain the secret.
    #[error("password_command: {} (its error output is not shown)", describe_status(.status))]
    CommandFailed {
        /// How it ended.
        status: ExitStatus,
    },
    /// The command ran too long and was killed.
    #[error("password_command: no answer within {}, so it was stopped",
        humantime::format_duration(*.timeout))]
    CommandTimeout {
        /// The time limit.
        timeout: Duration,
    },
    /// The command printed nothing but whitespace.
    #[error("password_command: it printed nothing on stdout")]
    CommandEmpty,
    /// The command printed more than 64 KiB.
    #[error("password_command: it printed more than 64 KiB on stdout")]
    CommandOutputTooLong,
    /// The command's output is not UTF-8 text.
    #[error("password_command: its output is not valid UTF-8")]
    CommandNotUtf8,
}

fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended abnormally".to_owned(),
    }
}

impl PasswordSource {
    /// Reads the password now: a file or variable is read again and a command run
    /// again at every call, so rotated secrets are picked up.
    pub async fn read(&self) -> Result<Secret, SecretError> {
        match self {
            PasswordSource::Inline(secret) => Ok(secret.clone()),
            PasswordSource::File(path) => read_password_file(path).await,
            PasswordSource::Env(name) => from_env(name, std::env::var(name)),
            PasswordSource::Command(spec) => run_command(spec, COMMAND_TIMEOUT).await,
        }
    }

    /// Names the source for messages, such as `password_file /run/secrets/pw`; never
    /// the value, nor a command line.
    pub fn describe(&self) -> String {
        match self {
            PasswordSource::Inline(_) => "password".to_owned(),
            PasswordSource::File(path) => format!("password_file {}", path.display()),
            PasswordSource::Env(name) => format!("password_env {name}"),
            PasswordSource::Command(_) => "password_command".to_owned(),
        }
    }
}

/// A file's content without its one trailing line end (`\n` or `\r\n`), as every
/// secret file (password, client token) is read: editors and `echo` add one.
pub fn trim_line_end(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

async fn read_password_file(path: &Path) -> Result<Secret, SecretError> {
    let bytes = Zeroizing::new(tokio::fs::read(path).await.map_err(|source| {
        SecretError::FileUnreadable {
            path: path.to_owned(),
            source,
        }
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::FileNotUtf8 {
        path: path.to_owned(),
    })?;
    let password = trim_line_end(text);
    if password.is_empty() {
        return Err(SecretError::FileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(Secret::new(password))
}

fn from_env(name: &str, value: Result<String, std::env::VarError>) -> Result<Secret, SecretError> {
    let name = name.to_owned();
    match value {
        Ok(value) if value.is_empty() => Err(SecretError::EnvEmpty { name }),
        Ok(value) => Ok(Secret::new(value)),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvUnset { name }),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUtf8 { name }),
    }
}

/// Runs a password command with stdin closed, stdout captured up to the limit and stderr
/// discarded. On timeout or any early return the child is killed when dropped.
async fn run_command(spec: &CommandSpec, timeout: Duration) -> Result<Secret, SecretError> {
    let mut command = build_command(spec)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|source| SecretError::CommandSpawn { source })?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        let (output, ()) = tokio::try_join!(read_capped(stdout), discard(stderr))?;
        let status = child
            .wait()
            .await
            .map_err(|source| SecretError::CommandIo { source })?;
        Ok::<_, SecretError>((output, status))
    };
    let (output, status) = tokio::time::timeout(timeout, finished)
        .await
        .map_err(|_| SecretError::CommandTimeout { timeout })??;
    if !status.success() {
        return Err(SecretError::CommandFailed { status });
    }
    let text = std::str::from_utf8(&output).map_err(|_| SecretError::CommandNotUtf8)?;
    let password = text.trim_end();
    if password.is_empty() {
        return Err(SecretError::CommandEmpty);
    }
    Ok(Secret::new(password))
}

fn build_command(spec: &CommandSpec) -> Result<tokio::process::Command, SecretError> {
    match spec {
        CommandSpec::Shell(line) => {
            let mut command = tokio::process::Command::new("sh");
            command.arg("-c").arg(line);
            Ok(command)
        }
        CommandSpec::Argv(argv) => {
            let Some((program, args)) = argv.split_first() else {
                let source = io::Error::new(io::ErrorKind::InvalidInput, "the command is empty");
                return Err(SecretError::CommandSpawn { source });
            };
            let mut command = tokio::process::Command::new(program);
            command.args(args);
            Ok(command)
        }
    }
}

/// Reads a stream to its end, failing once it exceeds the output limit.
async fn read_capped(
    stream: Option<impl AsyncRead + Unpin>,
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let mut output = Zeroizing::new(Vec::new());
    let Some(stream) = stream else {
        return Ok(output);
    };
    let limit = u64::try_from(COMMAND_OUTPUT_LIMIT + 1).unwrap_or(u64::MAX);
    stream
        .take(limit)
        .read_to_end(&mut output)
        .await
        .map_err(|source| SecretError::CommandIo { source })?;
    if output.len() > COMMAND_OUTPUT_LIMIT {
        return Err(SecretError::CommandOutputTooLong);
    }
    Ok(output)
}

/// Reads and drops a stream, so the child never blocks on a full pipe.
async fn discard(stream: Option<impl AsyncRead + Unpin>) -> Result<(), SecretError> {
    if let Some(mut stream) = stream {
        tokio::io::copy(&mut stream, &mut tokio::io::sink())
            .await
            .map_err(|source| SecretError::CommandIo { source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    fn shell(line: &str) -> CommandSpec {
        CommandSpec::Shell(line.to_owned())
    }

    #[tokio::test]
    async fn inline_password_is_returned_as_is() {
        let source = PasswordSource::Inline(Secret::new("0012"));
        assert_eq!(source.read().await.expect("inline").expose(), "0012");
        assert_eq!(source.describe(), "password");
    }

    #[tokio::test]
    async fn password_file_loses_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (content, expected) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw\n\n", "pw\n"),
            ("pw", "pw"),
        ] {
            let path = dir.path().join("pw");
            std::fs::write(&path, content).expect("write");
            let secret = PasswordSource::File(path).read().await.expect("readable");
            assert_eq!(secret.expose(), expected);
        }
    }

    #[tokio::test]
    async fn missing_or_empty_password_file_names_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing");
        let error = PasswordSource::File(missing.clone()).read().await;
        let message = error.expect_err("missing file").to_string();
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let error = PasswordSource::File(empty)
            .read()
            .await
            .expect_err("empty file");
        assert!(matches!(error, SecretError::FileEmpty { .. }), "{error}");
    }

    #[tokio::test]
    async fn password_env_reads_the_variable_at_call_time() {
        // PATH is set in any test environment; reading it avoids mutating the process
        // environment, which other test threads read concurrently.
        let source = PasswordSource::Env("PATH".into());
        let expected = std::env::var("PATH").expect("PATH is set");
        assert_eq!(source.read().await.expect("set").expose(), expected);
        assert_eq!(source.describe(), "password_env PATH");

        let unset = PasswordSource::Env("PCCE_PROXY_TEST_SURELY_UNSET_4711".into());
        let error = unset.read().await.expect_err("unset variable");
        assert!(matches!(error, SecretError::EnvUnset { .. }), "{error}");
    }

    #[test]
    fn empty_password_env_is_an_error_naming_the_variable_only() {
        let error = from_env("PW", Ok(String::new())).expect_err("empty");
        assert_eq!(
            error.to_string(),
            "password_env PW: the environment variable is empty"
        );
    }

    #[tokio::test]
    async fn shell_command_output_is_trimmed() {
        let secret = run_command(&shell("printf 'hunter2 \\n\\n'"), COMMAND_TIMEOUT).await;
        assert_eq!(secret.expect("runs").expose(), "hunter2");
    }

    #[tokio::test]
    async fn argv_command_runs_without_a_shell() {
        let argv = CommandSpec::Argv(vec!["printf".into(), "%s".into(), "a b;c".into()]);
        let secret = run_command(&argv, COMMAND_TIMEOUT).await.expect("runs");
        assert_eq!(secret.expose(), "a b;c");
    }

    #[tokio::test]
    async fn failing_command_reports_its_status_but_not_its_stderr() {
        let spec = shell("echo hunter2 >&2; exit 3");
        let error = run_command(&spec, COMMAND_TIMEOUT)
            .await
            .expect_err("fails");
        let message = error.to_string();
        assert!(message.contains("exit status 3"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[tokio::test]
    async fn command_that_cannot_start_is_an_error() {
        let argv = CommandSpec::Argv(vec!["/nonexistent/pcce-proxy-test".into()]);
        let error = run_command(&argv, COMMAND_TIMEOUT)
            .await
            .expect_err("no such program");
        assert!(matches!(error, SecretError::CommandSpawn { .. }), "{error}");
    }

    #[tokio::test]
    async fn command_printing_nothing_is_an_error() {
        let error = run_command(&shell("echo"), COMMAND_TIMEOUT)
            .await
            .expect_err("empty");
        assert!(matches!(error, SecretError::CommandEmpty), "{error}");
    }

    #[tokio::test]
    async fn command_printing_too_much_is_an_error() {
        let spec = shell("head -c 70000 /dev/zero | tr '\\0' a");
        let error = run_command(&spec, COMMAND_TIMEOUT)
            .await
            .expect_err("too long");
        assert!(
            matches!(error, SecretError::CommandOutputTooLong),
            "{error}"
        );
    }

    #[tokio::test]
    async fn hanging_command_is_stopped_at_the_timeout() {
        let started = std::time::Instant::now();
        let spec = CommandSpec::Argv(vec!["sleep".into(), "30".into()]);
        let error = run_command(&spec, Duration::from_millis(200))
            .await
            .expect_err("hangs");
        assert!(
            matches!(error, SecretError::CommandTimeout { .. }),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn command_debug_and_description_hide_the_command_line() {
        let source = PasswordSource::Command(shell("echo hunter2"));
        assert!(!format!("{source:?}").contains("hunter2"));
        assert_eq!(source.describe(), "password_command");
    }

    #[test]
    fn one_trailing_line_end_is_trimmed_as_the_login_reads_it() {
        assert_eq!(trim_line_end("pw\n"), "pw");
        assert_eq!(trim_line_end("pw\r\n"), "pw");
        assert_eq!(trim_line_end("pw\n\n"), "pw\n");
        assert_eq!(trim_line_end("pw\r"), "pw\r");
        assert_eq!(trim_line_end("pw"), "pw");
    }
}
