//! Secrets: values that must never reach a log line, an error message or `Debug` output.
//!
//! [`Secret`] wraps a string, zeroes it when dropped and prints only a placeholder. Code
//! that needs the value calls [`Secret::expose`], which makes every use easy to find.

use std::fmt;
use std::path::PathBuf;

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

/// A command that prints a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// A string run through `sh -c`.
    Shell(String),
    /// A program and its arguments, run directly (no shell needed).
    Argv(Vec<String>),
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
}
