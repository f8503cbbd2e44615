//! Validation: the merged raw configuration becomes a [`Config`] of real types.
//!
//! Every check runs even after one has failed, so an operator sees all problems in one
//! go. A failing check records a [`Problem`] and returns a placeholder, which is never
//! seen because the result is an error whenever a problem was recorded. Messages name
//! the key, quote the bad value unless it is a secret (passwords, the password command,
//! egress proxy URLs that may carry user-info) and say what is expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::load::env_var;
use super::raw::{
    OneOrMany, RawAdmin, RawAuth, RawCommand, RawConfig, RawConsole, RawListen, RawLog,
    DEFAULT_ADMIN_ADDRESS, DEFAULT_ALLOWED_PATHS, DEFAULT_API_VERSION, DEFAULT_AUTH_METHOD,
    DEFAULT_CLIENT_LOGINS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HTTP_VERSION,
    DEFAULT_LISTEN_ADDRESS, DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PROJECT_MODE, DEFAULT_REFRESH, DEFAULT_REFRESH_BEFORE, DEFAULT_RESPONSE_TIMEOUT,
    DEFAULT_SHUTDOWN_DELAY, DEFAULT_SOCKET_MODE, DEFAULT_TOKEN_LIFETIME,
};
use super::{
    AdminConfig, AuthConfig, AuthMethod, ClientLogins, Config, ConsoleConfig, ConsoleUrl,
    EgressProxy, EgressSetting, HttpVersion, ListenAddress, ListenConfig, LogConfig, LogFormat,
    ProjectMode, RefreshMode,
};
use crate::secret::{CommandSpec, PasswordSource, Secret};

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, such as `console.url`; for an unknown environment variable, its name.
    pub key: String,
    /// The command-line option or environment variable that supplied the bad value, when
    /// it did not come from the file.
    pub origin: Option<String>,
    /// What is wrong and what is expected; never contains a secret.
    pub message: String,
}

impl Problem {
    /// Whether this is a required key that no layer set; such messages start with
    /// `missing`.
    pub fn is_missing(&self) -> bool {
        self.message.starts_with("missing")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "{} (from {origin}): {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Where the values of the merged configuration came from. The loader names the origin
/// of a problem's own key; this serves the messages that weigh several keys against
/// each other, which must say where each of them was set.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// `section.key` to the environment variable or command-line option that set it.
    pub overrides: BTreeMap<String, String>,
    /// The configuration file, which set every key that has no override.
    pub file: Option<PathBuf>,
}

impl Origins {
    /// `key` followed by where its value came from, when that is known.
    fn name(&self, key: &str) -> String {
        match (self.overrides.get(key), &self.file) {
            (Some(origin), _) => format!("{key} (from {origin})"),
            (None, Some(file)) => format!("{key} (from {})", file.display()),
            (None, None) => key.to_owned(),
        }
    }
}

/// The problems found so far.
#[derive(Default)]
struct Problems {
    found: Vec<Problem>,
    origins: Origins,
}

impl Problems {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.found.push(Problem {
            key: key.to_owned(),
            origin: None,
            message: message.into(),
        });
    }
}

/// Validates the merged configuration. `env` supplies `HTTPS_PROXY`, `https_proxy`,
/// `NO_PROXY` and `no_proxy` for resolving the egress proxy.
pub fn validate(raw: RawConfig, env: &[(String, String)]) -> Result<Config, Vec<Problem>> {
    validate_with_origins(raw, env, Origins::default())
}

/// [`validate`], naming in its messages where each value came from.
pub fn validate_with_origins(
    raw: RawConfig,
    env: &[(String, String)],
    origins: Origins,
) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems {
        found: Vec::new(),
        origins,
    };
    let config = Config {
        listen: listen(raw.listen, &mut problems),
        console: console(raw.console, env, &mut problems),
        auth: auth(raw.auth, &mut problems),
        admin: admin(raw.admin, &mut problems),
        log: log(raw.log, &mut problems),
    };
    if problems.found.is_empty() {
        Ok(config)
    } else {
        Err(problems.found)
    }
}

/// Validates `admin.address` alone, for the `health` command, which needs nothing else.
pub fn admin_address(raw: RawAdmin) -> Result<Option<SocketAddr>, Vec<Problem>> {
    let mut problems = Problems::default();
    let admin = admin(raw, &mut problems);
    if problems.found.is_empty() {
        Ok(admin.address)
    } else {
        Err(problems.found)
    }
}

/// Parses a duration written with a unit: `"500ms"`, `"30s"`, `"5m"`, `"1h"`. The error
/// message quotes the input and says what is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{text:?} has no unit: add one, such as \"{trimmed}s\""
        ));
    }
    let duration = humantime::parse_duration(trimmed).map_err(|_| {
        format!("{text:?} is not a duration: expected a number and a unit, such as \"30s\"")
    })?;
    if duration > MAX_DURATION {
        return Err(format!(
            "{text:?} is too long: durations are at most 365 days"
        ));
    }
    Ok(duration)
}

/// The longest duration any setting accepts. Longer than any real timeout or token
/// lifetime (the Console allows about 50 days), and short enough that adding it to a
/// clock reading can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// An empty string means the key is unset.
fn text(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

fn path(value: Option<String>) -> Option<PathBuf> {
    text(value).map(PathBuf::from)
}

fn duration(
    problems: &mut Problems,
    key: &str,
    value: Option<String>,
    default: Duration,
) -> Duration {
    let Some(value) = text(value) else {
        return default;
    };
    parse_duration(&value).unwrap_or_else(|message| {
        problems.push(key, message);
        default
    })
}

/// Like [`duration`], for timeouts that cannot be zero.
fn positive_duration(
    problems: &mut Problems,
    key: &str,
    value: Option<String>,
    default: Duration,
) -> Duration {
    let parsed = duration(problems, key, value, default);
    if parsed.is_zero() {
        problems.push(key, "must be longer than zero");
        return default;
    }
    parsed
}

/// One of a fixed set of lowercase words; `default` must be one of them.
fn choice<T: Copy>(
    problems: &mut Problems,
    key: &str,
    value: Option<String>,
    default: &str,
    options: &[(&str, T)],
) -> T {
    let find = |wanted: &str| options.iter().find(|(name, _)| *name == wanted);
    let fallback = find(default).unwrap_or(&options[0]).1;
    let Some(value) = text(value) else {
        return fallback;
    };
    if let Some((_, found)) = find(&value.to_ascii_lowercase()) {
        return *found;
    }
    let names: Vec<String> = options
        .iter()
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    problems.push(key, format!("{value:?}: expected {}", one_of(&names)));
    fallback
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
fn one_of(names: &[String]) -> String {
    join_words(names, "or")
}

fn join_words(words: &[String], conjunction: &str) -> String {
    match words.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} {conjunction} {last}", rest.join(", ")),
        None => String::new(),
    }
}

// ----- [listen] -----------------------------------------------------------------------

fn listen(raw: RawListen, problems: &mut Problems) -> ListenConfig {
    let allow_remote = raw.allow_remote.unwrap_or(false);
    ListenConfig {
        address: listen_address(raw.address, allow_remote, problems),
        allow_remote,
        allowed_hosts: allowed_hosts(raw.allowed_hosts.unwrap_or_default(), problems),
        allowed_paths: allowed_paths(raw.allowed_paths, problems),
        client_token_file: path(raw.client_token_file),
        read_only: raw.read_only.unwrap_or(false),
        socket_mode: socket_mode(raw.socket_mode, problems),
        max_connections: max_connections(raw.max_connections, problems),
        workers: workers(raw.workers, problems),
        shutdown_delay: duration(
            problems,
            "listen.shutdown_delay",
            raw.shutdown_delay,
            DEFAULT_SHUTDOWN_DELAY,
        ),
        drain_timeout: duration(
            problems,
            "listen.drain_timeout",
            raw.drain_timeout,
            DEFAULT_DRAIN_TIMEOUT,
        ),
    }
}

fn listen_address(
    value: Option<String>,
    allow_remote: bool,
    problems: &mut Problems,
) -> ListenAddress {
    const KEY: &str = "listen.address";
    let value = text(value).unwrap_or_else(|| DEFAULT_LISTEN_ADDRESS.to_owned());
    let address = match parse_listen_address(&value) {
        Ok(address) => address,
        Err(message) => {
            problems.push(KEY, message);
            return ListenAddress::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 8083)));
        }
    };
    if let ListenAddress::Tcp(socket) = &address {
        if !socket.ip().is_loopback() && !allow_remote {
            problems.push(
                KEY,
                format!(
                    "{value:?} is not a loopback address, so other hosts could use the \
                     proxy's Console credentials: to allow that, set listen.allow_remote = \
                     true, and protect it with listen.client_token_file"
                ),
            );
        }
    }
    address
}

/// `HOST:PORT` (an IP address or `localhost`) or `unix:/absolute/path`.
fn parse_listen_address(value: &str) -> Result<ListenAddress, String> {
    if let Some(path) = value.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!(
                "{value:?}: a unix socket needs an absolute path, such as \
                 \"unix:/run/pcce-proxy/proxy.sock\""
            ));
        }
        return Ok(ListenAddress::Unix(PathBuf::from(path)));
    }
    parse_socket_addr(value)
        .map(ListenAddress::Tcp)
        .map_err(|_| {
            format!(
                "{value:?}: expected HOST:PORT with an IP address or localhost, such as \
                 \"127.0.0.1:8083\" or \"[::1]:8083\", or unix:/path/to/socket"
            )
        })
}

/// A socket address, with `localhost:PORT` meaning `127.0.0.1:PORT`.
fn parse_socket_addr(value: &str) -> Result<SocketAddr, ()> {
    if let Some((host, port)) = value.rsplit_once(':') {
        if host.eq_ignore_ascii_case("localhost") {
            let port = port.parse::<u16>().map_err(|_| ())?;
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
    value.parse().map_err(|_| ())
}

fn allowed_hosts(hosts: Vec<String>, problems: &mut Problems) -> Vec<String> {
    let mut result = Vec::with_capacity(hosts.len());
    for host in hosts {
        let bad = host.is_empty() || host.contains(['/', '@', ' ', '\t']);
        if bad {
            problems.push(
                "listen.allowed_hosts",
                format!(
                    "{host:?}: expected a host name, with or without a port, such as \
                     \"proxy.local\" or \"proxy.local:8083\", or \"*\""
                ),
            );
            continue;
        }
        result.push(host.to_ascii_lowercase());
    }
    result
}

fn allowed_paths(paths: Option<Vec<String>>, problems: &mut Problems) -> Vec<String> {
    const KEY: &str = "listen.allowed_paths";
    let Some(paths) = paths else {
        return DEFAULT_ALLOWED_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
    };
    if paths.is_empty() {
        problems.push(
            KEY,
            "empty: nothing would be forwarded; the default is [\"/api/\"]",
        );
    }
    for path in &paths {
        if !path.starts_with('/') {
            let message = format!("{path:?}: a path prefix must start with /, such as \"/api/\"");
            problems.push(KEY, message);
        }
    }
    paths
}

fn socket_mode(value: Option<String>, problems: &mut Problems) -> u32 {
    let value = text(value).unwrap_or_else(|| DEFAULT_SOCKET_MODE.to_owned());
    let digits = value.strip_prefix("0o").unwrap_or(&value);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.starts_with('+') => mode,
        _ => {
            let message =
                format!("{value:?}: expected octal permissions up to 0777, such as \"0600\"");
            problems.push("listen.socket_mode", message);
            0o600
        }
    }
}

fn max_connections(value: Option<i64>, problems: &mut Problems) -> usize {
    let Some(value) = value else {
        return DEFAULT_MAX_CONNECTIONS;
    };
    match usize::try_from(value) {
        Ok(count) if count >= 1 => count,
        _ => {
            let message = format!("{value}: expected a whole number of at least 1");
            problems.push("listen.max_connections", message);
            DEFAULT_MAX_CONNECTIONS
        }
    }
}

/// Most `listen.workers`: beyond the cores of all but the largest hosts, low enough to
/// catch a typo. The default of one per core is capped at it too.
const MAX_WORKERS: usize = 256;

/// `listen.workers`: absent or 0 means one per core the process may use.
fn workers(value: Option<i64>, problems: &mut Problems) -> usize {
    let one_per_core = || {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        cores.min(MAX_WORKERS)
    };
    match value.map(usize::try_from) {
        None | Some(Ok(0)) => one_per_core(),
        Some(Ok(count)) if count <= MAX_WORKERS => count,
        _ => {
            let value = value.unwrap_or_default();
            let message =
                format!("{value}: expected 0 (one per core) or a whole number up to {MAX_WORKERS}");
            problems.push("listen.workers", message);
            one_per_core()
        }
    }
}

// ----- [console] ----------------------------------------------------------------------

fn console(raw: RawConsole, env: &[(String, String)], problems: &mut Problems) -> ConsoleConfig {
    let url = console_url(raw.url, problems);
    let pins = pins(raw.pin_sha256, problems);
    let insecure = raw.insecure_skip_verify.unwrap_or(false);
    if insecure && !pins.is_empty() {
        problems.push(
            "console.insecure_skip_verify",
            "cannot be true together with console.pin_sha256: a pin already \
             authenticates a self-signed Console; remove insecure_skip_verify",
        );
    }
    let egress = egress(raw.egress_proxy, url.as_ref(), env, problems);
    ConsoleConfig {
        url: url.unwrap_or_else(placeholder_url),
        project: text(raw.project),
        project_mode: choice(
            problems,
            "console.project_mode",
            raw.project_mode,
            DEFAULT_PROJECT_MODE,
            &[("add", ProjectMode::Add), ("replace", ProjectMode::Replace)],
        ),
        ca_file: path(raw.ca_file),
        pin_sha256: pins,
        insecure_skip_verify: insecure,
        http_version: choice(
            problems,
            "console.http_version",
            raw.http_version,
            DEFAULT_HTTP_VERSION,
            &[
                ("auto", HttpVersion::Auto),
                ("http1", HttpVersion::Http1),
                ("http2", HttpVersion::Http2),
            ],
        ),
        connect_timeout: positive_duration(
            problems,
            "console.connect_timeout",
            raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        ),
        response_timeout: positive_duration(
            problems,
            "console.response_timeout",
            raw.response_timeout,
            DEFAULT_RESPONSE_TIMEOUT,
        ),
        egress,
    }
}

fn placeholder_url() -> ConsoleUrl {
    ConsoleUrl {
        host: "invalid".into(),
        port: 443,
        explicit_port: false,
        prefix: String::new(),
    }
}

fn console_url(value: Option<String>, problems: &mut Problems) -> Option<ConsoleUrl> {
    const KEY: &str = "console.url";
    let Some(value) = text(value) else {
        problems.push(
            KEY,
            "missing: set it to the Console's address, such as \
             https://console.example.com:8083",
        );
        return None;
    };
    parse_console_url(&value)
        .map_err(|message| problems.push(KEY, message))
        .ok()
}

/// Parses `https://HOST[:PORT][/PREFIX]`. The prefix is kept as written, never resolved.
pub fn parse_console_url(value: &str) -> Result<ConsoleUrl, String> {
    // A URL with user-info carries a credential: it is never quoted, nor is a fix
    // suggested that would repeat it.
    let secret = value.contains('@');
    let shown = if secret {
        "the URL".to_owned()
    } else {
        format!("{value:?}")
    };
    let Some((scheme, rest)) = value.split_once("://") else {
        let example = if secret {
            "console.example.com:8083"
        } else {
            value
        };
        return Err(format!(
            "{shown}: expected https://HOST[:PORT][/PREFIX], such as https://{example}"
        ));
    };
    if scheme.eq_ignore_ascii_case("http") {
        let fix = if secret {
            String::new()
        } else {
            format!(": use https://{rest}")
        };
        return Err(format!(
            "{shown} uses http, but the Console is reached over TLS only (https://){fix}"
        ));
    }
    if !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("{shown}: expected an https:// URL"));
    }
    if rest.contains(['?', '#']) {
        return Err(format!("{shown}: a query or fragment is not allowed"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(format!(
            "{shown}: user-info is not allowed in the URL; set the credentials in [auth]"
        ));
    }
    let (host, port, explicit_port) =
        parse_authority(authority, 443).map_err(|why| format!("{shown}: {why}"))?;
    Ok(ConsoleUrl {
        host,
        port,
        explicit_port,
        prefix: path.trim_end_matches('/').to_owned(),
    })
}

/// Splits `host[:port]` or `[v6][:port]`; lowercases the host.
fn parse_authority(authority: &str, default_port: u16) -> Result<(String, u16, bool), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs a closing bracket")?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| "expected an IPv6 address between the brackets")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("expected :PORT after the address")?,
            ),
        };
        (host, port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
        if host.contains(':') {
            return Err("write an IPv6 address in brackets, such as [2001:db8::1]".into());
        }
        if host.is_empty() || !host.chars().all(valid) {
            return Err("expected a host name or IP address".into());
        }
        (host, port)
    };
    let (port, explicit) = match port {
        None => (default_port, false),
        Some(port) => match port.parse::<u16>() {
            Ok(number) if number > 0 => (number, true),
            _ => return Err("the port must be a number from 1 to 65535".into()),
        },
    };
    Ok((host.to_ascii_lowercase(), port, explicit))
}

fn pins(value: Option<OneOrMany>, problems: &mut Problems) -> Vec<[u8; 32]> {
    let values = value.map(OneOrMany::into_vec).unwrap_or_default();
    let mut pins = Vec::with_capacity(values.len());
    for value in values.iter().filter(|value| !value.is_empty()) {
        match parse_pin(value) {
            Some(pin) => pins.push(pin),
            None => problems.push(
                "console.pin_sha256",
                format!(
                    "{value:?}: expected the certificate's SHA-256 as 64 hex digits, colons \
                     allowed, such as the fingerprint `pcce-proxy check` prints"
                ),
            ),
        }
    }
    pins
}

/// 64 hex digits, any case, optionally separated by colons.
pub fn parse_pin(value: &str) -> Option<[u8; 32]> {
    let digits: String = value.chars().filter(|c| *c != ':').collect();
    let mut pin = [0u8; 32];
    hex::decode_to_slice(digits, &mut pin).ok()?;
    Some(pin)
}

fn egress(
    value: Option<String>,
    console: Option<&ConsoleUrl>,
    env: &[(String, String)],
    problems: &mut Problems,
) -> EgressSetting {
    if let Some(value) = text(value) {
        return parse_egress(&value)
            .map(EgressSetting::Via)
            .unwrap_or_else(|why| {
                problems.push("console.egress_proxy", why);
                EgressSetting::Direct
            });
    }
    let from_env = ["HTTPS_PROXY", "https_proxy"]
        .into_iter()
        .find_map(|name| env_var(env, name).map(|value| (name, value)));
    let (Some((name, value)), Some(console)) = (from_env, console) else {
        return EgressSetting::Direct;
    };
    let no_proxy = env_var(env, "NO_PROXY").or_else(|| env_var(env, "no_proxy"));
    if no_proxy.is_some_and(|list| no_proxy_matches(list, &console.host, console.port)) {
        return EgressSetting::Direct;
    }
    parse_egress(value)
        .map(EgressSetting::Via)
        .unwrap_or_else(|why| {
            let hint = "; fix it, set console.egress_proxy, or add the Console to NO_PROXY";
            problems.push(name, format!("{why}{hint}"));
            EgressSetting::Direct
        })
}

/// Parses `[http://][user:pass@]host[:port][/]`. The messages never quote the value: its
/// user-info may hold a password.
fn parse_egress(value: &str) -> Result<EgressProxy, String> {
    let rest = match value.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return Err("only an http:// egress proxy is supported".into()),
        None => value,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err("expected http://[USER:PASSWORD@]HOST[:PORT] without a path".into());
    }
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((user_info, host_port)) => (Some(decode_user_info(user_info)?), host_port),
        None => (None, authority),
    };
    let (host, port, _) =
        parse_authority(host_port, 80).map_err(|why| format!("egress proxy address: {why}"))?;
    Ok(EgressProxy {
        host,
        port,
        credentials,
    })
}

fn decode_user_info(user_info: &str) -> Result<(String, Secret), String> {
    let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| "the user-info is not valid UTF-8 once percent-decoded".to_owned())
    };
    Ok((decode(user)?, Secret::new(decode(password)?)))
}

/// Whether `NO_PROXY` exempts the Console: `*`, an exact host, or a domain suffix (with
/// or without a leading dot); an entry with a port matches that port only. IP addresses
/// are compared literally; CIDR ranges are not supported.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    list.split(',')
        .map(|entry| entry.trim().to_ascii_lowercase())
        .filter(|entry| !entry.is_empty())
        .any(|entry| no_proxy_entry_matches(&entry, host, port))
}

fn no_proxy_entry_matches(entry: &str, host: &str, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    let (name, entry_port) = split_entry_port(entry);
    if entry_port.is_some_and(|entry_port| entry_port != port) {
        return false;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return host.parse::<IpAddr>() == Ok(ip);
    }
    let name = name.trim_start_matches("*.").trim_start_matches('.');
    host == name
        || host
            .strip_suffix(name)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Splits `host:port` and `[v6]:port`; a bare IPv6 address has no port.
fn split_entry_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (entry, None),
    }
}

// ----- [auth] -------------------------------------------------------------------------

fn auth(raw: RawAuth, problems: &mut Problems) -> AuthConfig {
    let method = choice(
        problems,
        "auth.method",
        raw.method.clone(),
        DEFAULT_AUTH_METHOD,
        &[
            ("password", AuthMethod::Password),
            ("certificate", AuthMethod::Certificate),
            ("basic", AuthMethod::Basic),
        ],
    );
    let username = text(raw.username.clone()).unwrap_or_default();
    let client_cert_file = path(raw.client_cert_file.clone());
    let client_key_file = path(raw.client_key_file.clone());
    let password = match method {
        AuthMethod::Certificate => {
            require_certificate(&client_cert_file, &client_key_file, problems);
            None
        }
        AuthMethod::Password | AuthMethod::Basic => password_login(&raw, &username, problems),
    };
    if method == AuthMethod::Basic && username.contains(':') {
        problems.push(
            "auth.username",
            format!(
                "{username:?} contains ':', which HTTP Basic cannot carry in a username; use \
                 auth.method = \"password\""
            ),
        );
    }
    AuthConfig {
        method,
        username,
        password,
        client_cert_file,
        client_key_file,
        api_version: api_version(raw.api_version, problems),
        refresh: choice(
            problems,
            "auth.refresh",
            raw.refresh,
            DEFAULT_REFRESH,
            &[("login", RefreshMode::Login), ("renew", RefreshMode::Renew)],
        ),
        refresh_before: duration(
            problems,
            "auth.refresh_before",
            raw.refresh_before,
            DEFAULT_REFRESH_BEFORE,
        ),
        token_lifetime: positive_duration(
            problems,
            "auth.token_lifetime",
            raw.token_lifetime,
            DEFAULT_TOKEN_LIFETIME,
        ),
        client_logins: choice(
            problems,
            "auth.client_logins",
            raw.client_logins,
            DEFAULT_CLIENT_LOGINS,
            &[
                ("emulate", ClientLogins::Emulate),
                ("forward", ClientLogins::Forward),
                ("reject", ClientLogins::Reject),
            ],
        ),
        logout_on_exit: raw.logout_on_exit.unwrap_or(false),
    }
}

/// The password and basic methods need a username and one password source.
fn password_login(
    raw: &RawAuth,
    username: &str,
    problems: &mut Problems,
) -> Option<PasswordSource> {
    if username.is_empty() {
        problems.push(
            "auth.username",
            "missing: set the Console user the proxy logs in as",
        );
    }
    password_source(raw, problems)
}

fn require_certificate(cert: &Option<PathBuf>, key: &Option<PathBuf>, problems: &mut Problems) {
    if cert.is_none() {
        problems.push(
            "auth.client_cert_file",
            "missing: auth.method = \"certificate\" needs a client certificate (PEM)",
        );
    }
    if key.is_none() {
        problems.push(
            "auth.client_key_file",
            "missing: auth.method = \"certificate\" needs the client certificate's key (PEM)",
        );
    }
}

/// Exactly one of the four password keys must be set.
fn password_source(raw: &RawAuth, problems: &mut Problems) -> Option<PasswordSource> {
    let mut sources = Vec::new();
    if let Some(password) = text(raw.password.clone()) {
        sources.push((
            "auth.password",
            PasswordSource::Inline(Secret::new(password)),
        ));
    }
    if let Some(file) = path(raw.password_file.clone()) {
        sources.push(("auth.password_file", PasswordSource::File(file)));
    }
    if let Some(name) = text(raw.password_env.clone()) {
        sources.push(("auth.password_env", PasswordSource::Env(name)));
    }
    if let Some(command) = raw.password_command.clone().and_then(command_spec) {
        sources.push(("auth.password_command", PasswordSource::Command(command)));
    }
    match sources.len() {
        1 => sources.pop().map(|(_, source)| source),
        0 => {
            problems.push(
                "auth.password",
                "missing: set one of auth.password_file, auth.password_env or \
                 auth.password_command (or auth.password)",
            );
            None
        }
        _ => {
            // Keyed by the section: each source names its own origin, since one may come
            // from the file and another from a variable or option.
            let names: Vec<String> = sources
                .iter()
                .map(|(name, _)| problems.origins.name(name))
                .collect();
            problems.push(
                "auth",
                format!(
                    "{} are set: keep exactly one password source",
                    join_words(&names, "and")
                ),
            );
            None
        }
    }
}

/// An empty string or list means unset.
fn command_spec(raw: RawCommand) -> Option<CommandSpec> {
    match raw {
        RawCommand::Shell(line) if !line.trim().is_empty() => Some(CommandSpec::Shell(line)),
        RawCommand::Argv(argv) if argv.first().is_some_and(|p| !p.is_empty()) => {
            Some(CommandSpec::Argv(argv))
        }
        _ => None,
    }
}

fn api_version(value: Option<String>, problems: &mut Problems) -> String {
    let value = text(value).unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
    let numbered = value.strip_prefix('v').and_then(|v| v.split_once('.'));
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let valid = value == "v1" || numbered.is_some_and(|(a, b)| digits(a) && digits(b));
    if !valid {
        let message = format!("{value:?}: expected \"v1\" or a version such as \"v34.03\"");
        problems.push("auth.api_version", message);
    }
    value
}

// ----- [admin] and [log] --------------------------------------------------------------

fn admin(raw: RawAdmin, problems: &mut Problems) -> AdminConfig {
    let value = text(raw.address).unwrap_or_else(|| DEFAULT_ADMIN_ADDRESS.to_owned());
    let address = if value.eq_ignore_ascii_case("off") {
        None
    } else {
        parse_socket_addr(&value)
            .map_err(|_| {
                let message = format!(
                    "{value:?}: expected HOST:PORT with an IP address or localhost, such \
                     as \"127.0.0.1:9083\", or \"off\""
                );
                problems.push("admin.address", message);
            })
            .ok()
    };
    AdminConfig {
        address,
        enable_quit: raw.enable_quit.unwrap_or(false),
    }
}

fn log(raw: RawLog, problems: &mut Problems) -> LogConfig {
    let format = choice(
        problems,
        "log.format",
        raw.format,
        DEFAULT_LOG_FORMAT,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    );
    let level = text(raw.level).unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&level) {
        let message = format!(
            "{level:?} is not a valid filter ({error}): expected a level such as \"info\" \
             or directives such as \"info,pcce_proxy=debug\""
        );
        problems.push("log.level", message);
    }
    LogConfig { format, level }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [console]
        url = "https://console.example.com:8083"
        [auth]
        username = "admin"
        password_file = "/run/secrets/pw"
    "#;

    fn check_with_env(extra: &str, env: &[(&str, &str)]) -> Result<Config, Vec<Problem>> {
        let raw: RawConfig = toml::from_str(&merge(BASE, extra)).expect("test TOML is valid");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        validate(raw, &env)
    }

    fn check(extra: &str) -> Result<Config, Vec<Problem>> {
        check_with_env(extra, &[])
    }

    /// Appends `extra` keys to the matching sections of `base`, so a test can replace
    /// or add single keys.
    fn merge(base: &str, extra: &str) -> String {
        let mut table: toml::Table = toml::from_str(base).expect("base is valid");
        let extra: toml::Table = toml::from_str(extra).expect("extra is valid");
        for (section, keys) in extra {
            let entry = table
                .entry(section)
                .or_insert(toml::Value::Table(Default::default()));
            if let (Some(entry), toml::Value::Table(keys)) = (entry.as_table_mut(), keys) {
                entry.extend(keys);
            }
        }
        toml::to_string(&table).expect("serializable")
    }

    fn messages(result: Result<Config, Vec<Problem>>) -> Vec<String> {
        result
            .expect_err("expected problems")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn one_message(extra: &str) -> String {
        let found = messages(check(extra));
        assert_eq!(found.len(), 1, "{found:?}");
        found[0].clone()
    }

    #[test]
    fn console_url_keeps_the_prefix_unresolved_without_a_trailing_slash() {
        let url = parse_console_url("https://Twistlock.Example.COM/us-1-123/").expect("valid");
        assert_eq!(url.host, "twistlock.example.com");
        assert_eq!((url.port, url.explicit_port), (443, false));
        assert_eq!(url.prefix, "/us-1-123");
        let url = parse_console_url("https://h:8083/a/../b").expect("valid");
        assert_eq!(
            (url.port, url.explicit_port, url.prefix.as_str()),
            (8083, true, "/a/../b")
        );
    }

    #[test]
    fn console_url_accepts_bracketed_ipv6() {
        let url = parse_console_url("https://[2001:DB8::1]:8083").expect("valid");
        assert_eq!(url.host, "2001:db8::1");
        assert_eq!(url.authority(), "[2001:db8::1]:8083");
        assert!(parse_console_url("https://2001:db8::1").is_err());
    }

    #[test]
    fn console_url_refuses_plain_http_and_says_tls_is_required() {
        let message = one_message("[console]\nurl = \"http://c.example.com:8083\"");
        assert!(
            message.starts_with("console.url: \"http://c.example.com:8083\""),
            "{message}"
        );
        assert!(message.contains("TLS"), "{message}");
        assert!(message.contains("https://c.example.com:8083"), "{message}");
    }

    #[test]
    fn console_url_refuses_user_info_query_fragment_and_missing_host() {
        for url in [
            "https://u:pw@h",
            "https://h/?a=1",
            "https://h/#x",
            "https://",
            "h:8083",
        ] {
            assert!(parse_console_url(url).is_err(), "{url}");
        }
        let message = parse_console_url("https://u:hunter2@h").expect_err("user-info");
        assert!(!message.contains("hunter2"), "{message}");
        let message = parse_console_url("http://u:hunter2@h").expect_err("user-info");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn missing_console_url_explains_what_to_set() {
        let raw: RawConfig =
            toml::from_str("[auth]\nusername = \"u\"\npassword = \"p\"").expect("valid TOML");
        let found: Vec<String> = validate(raw, &[])
            .expect_err("missing url")
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            found,
            [
                "console.url: missing: set it to the Console's address, such as \
              https://console.example.com:8083"
            ]
        );
    }

    #[test]
    fn durations_need_a_unit() {
        let message = one_message("[listen]\ndrain_timeout = \"10\"");
        assert_eq!(
            message,
            "listen.drain_timeout: \"10\" has no unit: add one, such as \"10s\""
        );
        let config = check("[listen]\ndrain_timeout = \"500ms\"").expect("valid");
        assert_eq!(config.listen.drain_timeout, Duration::from_millis(500));
        assert!(one_message("[console]\nconnect_timeout = \"0s\"").contains("longer than zero"));
    }

    #[test]
    fn pins_accept_colons_and_either_case() {
        let hex = "AB:".repeat(31) + "ab";
        let config = check(&format!("[console]\npin_sha256 = \"{hex}\"")).expect("valid");
        assert_eq!(config.console.pin_sha256, vec![[0xab; 32]]);
        let list = format!(
            "[console]\npin_sha256 = [\"{}\", \"{}\"]",
            "00".repeat(32),
            hex
        );
        assert_eq!(check(&list).expect("valid").console.pin_sha256.len(), 2);
        assert!(one_message("[console]\npin_sha256 = \"abcd\"").contains("64 hex digits"));
    }

    #[test]
    fn pin_together_with_insecure_skip_verify_is_refused() {
        let pin = "00".repeat(32);
        let message = one_message(&format!(
            "[console]\npin_sha256 = \"{pin}\"\ninsecure_skip_verify = true"
        ));
        assert!(
            message.starts_with("console.insecure_skip_verify: "),
            "{message}"
        );
    }

    #[test]
    fn listen_addresses_in_every_accepted_form() {
        let cases = [
            (
                "localhost:9000",
                ListenAddress::Tcp("127.0.0.1:9000".parse().expect("addr")),
            ),
            (
                "[::1]:9000",
                ListenAddress::Tcp("[::1]:9000".parse().expect("addr")),
            ),
            (
                "unix:/run/p.sock",
                ListenAddress::Unix("/run/p.sock".into()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_listen_address(text), Ok(expected), "{text}");
        }
        for bad in [
            "unix:relative.sock",
            "example.com:80",
            "127.0.0.1",
            "127.0.0.1:99999",
        ] {
            assert!(parse_listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn non_loopback_listener_needs_allow_remote() {
        let message = one_message("[listen]\naddress = \"0.0.0.0:8083\"");
        assert!(
            message.contains(
                "set listen.allow_remote = true, and protect it with listen.client_token_file"
            ),
            "{message}"
        );
        let config = check("[listen]\naddress = \"0.0.0.0:8083\"\nallow_remote = true");
        assert!(config.is_ok());
    }

    #[test]
    fn socket_mode_is_octal_up_to_0777() {
        let config = check("[listen]\nsocket_mode = \"0660\"").expect("valid");
        assert_eq!(config.listen.socket_mode, 0o660);
        assert!(check("[listen]\nsocket_mode = \"0800\"").is_err());
        assert!(check("[listen]\nsocket_mode = \"01777\"").is_err());
    }

    #[test]
    fn listen_lists_and_limits_are_checked() {
        let config = check("[listen]\nallowed_hosts = [\"Proxy.Local:8083\"]").expect("valid");
        assert_eq!(config.listen.allowed_hosts, ["proxy.local:8083"]);
        assert!(one_message("[listen]\nallowed_paths = [\"api/\"]").contains("start with /"));
        assert!(one_message("[listen]\nmax_connections = 0").contains("at least 1"));
        assert!(one_message("[listen]\nworkers = -1").contains("up to 256"));
        assert!(one_message("[listen]\nworkers = 257").contains("up to 256"));
        let config = check("[listen]\nworkers = 0").expect("valid");
        assert!(config.listen.workers >= 1);
        let config = check("[listen]\nclient_token_file = \"\"").expect("valid");
        assert_eq!(config.listen.client_token_file, None);
    }

    #[test]
    fn admin_address_can_be_turned_off() {
        assert_eq!(
            check("[admin]\naddress = \"off\"")
                .expect("valid")
                .admin
                .address,
            None
        );
        let config = check("[admin]\naddress = \"localhost:9999\"").expect("valid");
        assert_eq!(
            config.admin.address,
            Some("127.0.0.1:9999".parse().expect("addr"))
        );
        assert!(check("[admin]\naddress = \"nowhere\"").is_err());
    }

    #[test]
    fn two_password_sources_are_named_without_their_values() {
        let message = one_message("[auth]\npassword = \"hunter2\"\npassword_env = \"PW\"");
        assert!(message.starts_with("auth: auth.password,"), "{message}");
        assert!(
            message.contains("auth.password_file and auth.password_env"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn two_password_sources_say_where_each_was_set() {
        let raw: RawConfig = toml::from_str(&merge(BASE, "[auth]\npassword_env = \"PW\""))
            .expect("test TOML is valid");
        let origins = Origins {
            overrides: [(
                "auth.password_env".to_owned(),
                "PCCE_PROXY_AUTH__PASSWORD_ENV".to_owned(),
            )]
            .into(),
            file: Some(PathBuf::from("/etc/pcce-proxy.toml")),
        };
        let problems = validate_with_origins(raw, &[], origins).expect_err("two sources");
        assert_eq!(
            problems[0].to_string(),
            "auth: auth.password_file (from /etc/pcce-proxy.toml) and auth.password_env (from \
             PCCE_PROXY_AUTH__PASSWORD_ENV) are set: keep exactly one password source"
        );
    }

    #[test]
    fn no_password_source_says_to_set_one() {
        let message = one_message("[auth]\npassword_file = \"\"");
        assert!(
            message.starts_with("auth.password: missing: set one of"),
            "{message}"
        );
    }

    #[test]
    fn password_command_as_string_or_list() {
        let config = check("[auth]\npassword_file = \"\"\npassword_command = \"pass show pcce\"");
        let source = config.expect("valid").auth.password;
        assert_eq!(
            source,
            Some(PasswordSource::Command(CommandSpec::Shell(
                "pass show pcce".into()
            )))
        );
        let config = check("[auth]\npassword_file = \"\"\npassword_command = [\"vault\", \"x\"]");
        let expected = CommandSpec::Argv(vec!["vault".into(), "x".into()]);
        assert_eq!(
            config.expect("valid").auth.password,
            Some(PasswordSource::Command(expected))
        );
    }

    #[test]
    fn basic_refuses_a_username_with_a_colon() {
        let message = one_message("[auth]\nmethod = \"basic\"\nusername = \"a:b\"");
        assert!(
            message.starts_with("auth.username: \"a:b\" contains ':'"),
            "{message}"
        );
        assert!(check("[auth]\nusername = \"a:b\"").is_ok());
    }

    #[test]
    fn certificate_method_needs_both_files_but_no_password() {
        let found = messages(check("[auth]\nmethod = \"certificate\""));
        assert_eq!(found.len(), 2, "{found:?}");
        let config = check(
            "[auth]\nmethod = \"certificate\"\nclient_cert_file = \"/c.pem\"\n\
             client_key_file = \"/k.pem\"",
        );
        assert_eq!(config.expect("valid").auth.password, None);
    }

    #[test]
    fn api_version_is_v1_or_numbered() {
        assert!(check("[auth]\napi_version = \"v34.03\"").is_ok());
        assert!(one_message("[auth]\napi_version = \"34.03\"").contains("\"v1\""));
    }

    #[test]
    fn choices_and_log_level_are_checked() {
        let message = one_message("[console]\nproject_mode = \"merge\"");
        assert_eq!(
            message,
            "console.project_mode: \"merge\": expected \"add\" or \"replace\""
        );
        assert!(one_message("[log]\nlevel = \"info,=[\"").starts_with("log.level: "));
        let config = check("[log]\nformat = \"json\"\nlevel = \"pcce_proxy=debug\"");
        assert_eq!(config.expect("valid").log.format, LogFormat::Json);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let extra = "[listen]\ndrain_timeout = \"1\"\n[console]\nurl = \"http://x\"\n\
                     [log]\nformat = \"xml\"";
        assert_eq!(messages(check(extra)).len(), 3);
    }

    #[test]
    fn egress_proxy_user_info_is_decoded_into_a_secret() {
        let config =
            check("[console]\negress_proxy = \"http://me%40corp:p%3Ass@Proxy.Corp:3128/\"");
        let EgressSetting::Via(proxy) = config.expect("valid").console.egress else {
            panic!("expected an egress proxy");
        };
        assert_eq!((proxy.host.as_str(), proxy.port), ("proxy.corp", 3128));
        let (user, password) = proxy.credentials.expect("credentials");
        assert_eq!((user.as_str(), password.expose()), ("me@corp", "p:ss"));
        let message = one_message("[console]\negress_proxy = \"https://u:hunter2@p\"");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn https_proxy_applies_unless_no_proxy_matches() {
        let via = |env: &[(&str, &str)]| {
            matches!(
                check_with_env("", env).expect("valid").console.egress,
                EgressSetting::Via(_)
            )
        };
        assert!(via(&[("HTTPS_PROXY", "http://p:3128")]));
        assert!(via(&[("https_proxy", "p:3128")]));
        assert!(!via(&[]));
        let no_proxy = [
            ("HTTPS_PROXY", "http://p:3128"),
            ("NO_PROXY", ".example.com"),
        ];
        assert!(!via(&no_proxy));
        let no_proxy = [("HTTPS_PROXY", "http://p:3128"), ("no_proxy", "other.com")];
        assert!(via(&no_proxy));
    }

    #[test]
    fn no_proxy_entries_match_as_curl_does() {
        let host = "console.example.com";
        for list in [
            "*",
            "console.example.com",
            "example.com",
            ".example.com",
            "*.example.com",
            "x, Console.Example.com:8083",
        ] {
            assert!(no_proxy_matches(list, host, 8083), "{list}");
        }
        for list in ["ample.com", "console.example.com:443", "", "10.0.0.0/8"] {
            assert!(!no_proxy_matches(list, host, 8083), "{list}");
        }
        assert!(no_proxy_matches("10.1.2.3", "10.1.2.3", 8083));
        assert!(no_proxy_matches("[::1]:8083,x", "::1", 8083));
        assert!(no_proxy_matches("::1", "::1", 8083));
        assert!(!no_proxy_matches("0.1.2.3", "10.1.2.3", 8083));
    }

    #[test]
    fn parse_duration_accepts_units() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
