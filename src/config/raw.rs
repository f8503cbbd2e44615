//! The raw configuration: the serde shape of the merged layers, before validation.
//!
//! Every field is optional: a key that no layer sets takes its built-in default during
//! validation (the `DEFAULT_*` constants and [`super::validate`]). Alongside the serde
//! structs, [`SCHEMA`] lists every section and key with its value kind. The loader checks
//! each layer against it before serde sees anything, because serde's own messages quote
//! the offending value (a password among them) and do not name the key; the schema lets
//! every message name `section.key` and stay silent about secrets.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Default `listen.address`.
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:8083";
/// Default `listen.allowed_paths`.
pub const DEFAULT_ALLOWED_PATHS: &[&str] = &["/api/"];
/// Default `listen.socket_mode`.
pub const DEFAULT_SOCKET_MODE: &str = "0600";
/// Default `listen.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default `listen.shutdown_delay`.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::ZERO;
/// Default `listen.drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `console.project_mode`.
pub const DEFAULT_PROJECT_MODE: &str = "add";
/// Default `console.http_version`.
pub const DEFAULT_HTTP_VERSION: &str = "auto";
/// Default `console.connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `console.response_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `auth.method`.
pub const DEFAULT_AUTH_METHOD: &str = "password";
/// Default `auth.api_version`.
pub const DEFAULT_API_VERSION: &str = "v1";
/// Default `auth.refresh`.
pub const DEFAULT_REFRESH: &str = "login";
/// Default `auth.refresh_before`.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Default `auth.token_lifetime`.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Default `auth.client_logins`.
pub const DEFAULT_CLIENT_LOGINS: &str = "emulate";
/// Default `admin.address`.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9083";
/// Default `log.format`.
pub const DEFAULT_LOG_FORMAT: &str = "text";
/// Default `log.level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// All layers merged: one optional value per key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[listen]`.
    #[serde(default)]
    pub listen: RawListen,
    /// `[console]`.
    #[serde(default)]
    pub console: RawConsole,
    /// `[auth]`.
    #[serde(default)]
    pub auth: RawAuth,
    /// `[admin]`.
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[log]`.
    #[serde(default)]
    pub log: RawLog,
}

/// `[listen]` as written; see [`super::ListenConfig`] for meanings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// `"HOST:PORT"` or `"unix:/path"`.
    pub address: Option<String>,
    /// Allow a non-loopback address.
    pub allow_remote: Option<bool>,
    /// Extra accepted `Host` names.
    pub allowed_hosts: Option<Vec<String>>,
    /// Forwarded path prefixes.
    pub allowed_paths: Option<Vec<String>>,
    /// File holding the client token; empty means none.
    pub client_token_file: Option<String>,
    /// Forward only GET, HEAD and OPTIONS.
    pub read_only: Option<bool>,
    /// Octal permissions of a unix socket, such as `"0600"`.
    pub socket_mode: Option<String>,
    /// Concurrent client connections.
    pub max_connections: Option<i64>,
    /// Threads serving clients; absent or 0 means one per core.
    pub workers: Option<i64>,
    /// Duration such as `"5s"`.
    pub shutdown_delay: Option<String>,
    /// Duration such as `"10s"`.
    pub drain_timeout: Option<String>,
}

/// `[console]` as written; see [`super::ConsoleConfig`] for meanings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// `https://HOST[:PORT][/PREFIX]`.
    pub url: Option<String>,
    /// Tenant name; empty means none.
    pub project: Option<String>,
    /// `"add"` or `"replace"`.
    pub project_mode: Option<String>,
    /// Extra trusted PEM bundle; empty means none.
    pub ca_file: Option<String>,
    /// One pin or several.
    pub pin_sha256: Option<OneOrMany>,
    /// Encrypt without verifying.
    pub insecure_skip_verify: Option<bool>,
    /// `"auto"`, `"http1"` or `"http2"`.
    pub http_version: Option<String>,
    /// Duration such as `"10s"`.
    pub connect_timeout: Option<String>,
    /// Duration such as `"120s"`.
    pub response_timeout: Option<String>,
    /// `http://[user:pass@]host[:port]`; may hold a password.
    pub egress_proxy: Option<String>,
}

/// `[auth]` as written; see [`super::AuthConfig`] for meanings. Its `Debug` hides the
/// password and the password command.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `"password"`, `"certificate"` or `"basic"`.
    pub method: Option<String>,
    /// Console user.
    pub username: Option<String>,
    /// The password itself (secret).
    pub password: Option<String>,
    /// File holding the password.
    pub password_file: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// Command printing the password (secret: it may carry one in its arguments).
    pub password_command: Option<RawCommand>,
    /// Client certificate (PEM).
    pub client_cert_file: Option<String>,
    /// Client key (PEM).
    pub client_key_file: Option<String>,
    /// `"v1"` or `"vNN.NN"`.
    pub api_version: Option<String>,
    /// `"login"` or `"renew"`.
    pub refresh: Option<String>,
    /// Duration such as `"5m"`.
    pub refresh_before: Option<String>,
    /// Duration such as `"30m"`.
    pub token_lifetime: Option<String>,
    /// `"emulate"`, `"forward"` or `"reject"`.
    pub client_logins: Option<String>,
    /// Log the token out at exit.
    pub logout_on_exit: Option<bool>,
}

impl fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "[redacted]" } else { "[unset]" };
        f.debug_struct("RawAuth")
            .field("method", &self.method)
            .field("username", &self.username)
            .field("password", &redacted(self.password.is_some()))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field(
                "password_command",
                &redacted(self.password_command.is_some()),
            )
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field("api_version", &self.api_version)
            .field("refresh", &self.refresh)
            .field("refresh_before", &self.refresh_before)
            .field("token_lifetime", &self.token_lifetime)
            .field("client_logins", &self.client_logins)
            .field("logout_on_exit", &self.logout_on_exit)
            .finish()
    }
}

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `"HOST:PORT"` or `"off"`.
    pub address: Option<String>,
    /// Enables `POST /quitquitquit`.
    pub enable_quit: Option<bool>,
}

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `"text"` or `"json"`.
    pub format: Option<String>,
    /// A tracing filter directive.
    pub level: Option<String>,
}

/// A key that takes one string or a list of them (`console.pin_sha256`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single string.
    One(String),
    /// A list of strings.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(value) => vec![value],
            OneOrMany::Many(values) => values,
        }
    }
}

/// `auth.password_command`: a string for `sh -c`, or a program and its arguments.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawCommand {
    /// Run through `sh -c`.
    Shell(String),
    /// Run directly.
    Argv(Vec<String>),
}

/// The kind of value a key holds; it decides how a file value is checked and how an
/// environment value is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string (addresses, names and choices included; they are parsed in validation).
    Str,
    /// A duration string such as `"30s"`.
    Duration,
    /// An octal permission string such as `"0600"`.
    Octal,
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Int,
    /// A list of strings; comma-separated in the environment.
    List,
    /// A string or a list of strings; comma-separated in the environment.
    StrOrList,
    /// A string (shell form) or a non-empty list of strings (program and arguments).
    Command,
}

/// One key of the schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeySpec {
    /// Key name within its section.
    pub(crate) name: &'static str,
    /// Value kind.
    pub(crate) kind: Kind,
    /// Whether the value must never appear in a message.
    pub(crate) secret: bool,
}

const fn key(name: &'static str, kind: Kind) -> KeySpec {
    KeySpec {
        name,
        kind,
        secret: false,
    }
}

const fn secret(name: &'static str, kind: Kind) -> KeySpec {
    KeySpec {
        name,
        kind,
        secret: true,
    }
}

/// Every section and its keys. Must agree with the serde structs above (a test checks).
pub(crate) const SCHEMA: &[(&str, &[KeySpec])] = &[
    (
        "listen",
        &[
            key("address", Kind::Str),
            key("allow_remote", Kind::Bool),
            key("allowed_hosts", Kind::List),
            key("allowed_paths", Kind::List),
            key("client_token_file", Kind::Str),
            key("read_only", Kind::Bool),
            key("socket_mode", Kind::Octal),
            key("max_connections", Kind::Int),
            key("workers", Kind::Int),
            key("shutdown_delay", Kind::Duration),
            key("drain_timeout", Kind::Duration),
        ],
    ),
    (
        "console",
        &[
            key("url", Kind::Str),
            key("project", Kind::Str),
            key("project_mode", Kind::Str),
            key("ca_file", Kind::Str),
            key("pin_sha256", Kind::StrOrList),
            key("insecure_skip_verify", Kind::Bool),
            key("http_version", Kind::Str),
            key("connect_timeout", Kind::Duration),
            key("response_timeout", Kind::Duration),
            // The URL's user-info may hold the egress proxy's password.
            secret("egress_proxy", Kind::Str),
        ],
    ),
    (
        "auth",
        &[
            key("method", Kind::Str),
            key("username", Kind::Str),
            secret("password", Kind::Str),
            key("password_file", Kind::Str),
            key("password_env", Kind::Str),
            secret("password_command", Kind::Command),
            key("client_cert_file", Kind::Str),
            key("client_key_file", Kind::Str),
            key("api_version", Kind::Str),
            key("refresh", Kind::Str),
            key("refresh_before", Kind::Duration),
            key("token_lifetime", Kind::Duration),
            key("client_logins", Kind::Str),
            key("logout_on_exit", Kind::Bool),
        ],
    ),
    (
        "admin",
        &[key("address", Kind::Str), key("enable_quit", Kind::Bool)],
    ),
    ("log", &[key("format", Kind::Str), key("level", Kind::Str)]),
];

/// The keys of `section`, or `None` when there is no such section. Section names are
/// matched exactly; callers lowercase first where case does not matter.
pub(crate) fn section_keys(section: &str) -> Option<&'static [KeySpec]> {
    SCHEMA
        .iter()
        .find(|(name, _)| *name == section)
        .map(|(_, keys)| *keys)
}

/// The names of all sections, for messages.
pub(crate) fn section_names() -> Vec<&'static str> {
    SCHEMA.iter().map(|(name, _)| *name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: Kind) -> toml::Value {
        match kind {
            Kind::Str | Kind::Duration | Kind::Octal => toml::Value::String("x".into()),
            Kind::Bool => toml::Value::Boolean(true),
            Kind::Int => toml::Value::Integer(1),
            Kind::List | Kind::StrOrList | Kind::Command => {
                toml::Value::Array(vec![toml::Value::String("x".into())])
            }
        }
    }

    #[test]
    fn every_schema_key_deserializes_into_the_raw_structs() {
        for (section, keys) in SCHEMA {
            for spec in *keys {
                let mut inner = toml::Table::new();
                inner.insert(spec.name.into(), sample(spec.kind));
                let mut outer = toml::Table::new();
                outer.insert((*section).into(), toml::Value::Table(inner));
                let parsed = toml::Value::Table(outer).try_into::<RawConfig>();
                assert!(
                    parsed.is_ok(),
                    "{section}.{} is not in the raw structs",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn the_example_file_shows_every_key() {
        let text = include_str!("../../config/pcce-proxy.example.toml");
        let example: toml::Table = toml::from_str(text).expect("example is valid TOML");
        for (section, keys) in SCHEMA {
            let shown = example.get(*section).and_then(toml::Value::as_table);
            for spec in *keys {
                let present = shown.is_some_and(|table| table.contains_key(spec.name));
                assert!(
                    present,
                    "{section}.{} is missing from the example",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn raw_structs_reject_keys_missing_from_the_schema() {
        let text = "[listen]\nadress = \"x\"\n";
        assert!(toml::from_str::<RawConfig>(text).is_err());
    }

    #[test]
    fn raw_auth_debug_hides_password_and_command() {
        let auth = RawAuth {
            password: Some("hunter2".into()),
            password_command: Some(RawCommand::Shell("echo hunter2".into())),
            ..RawAuth::default()
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
