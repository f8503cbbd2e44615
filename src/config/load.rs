//! Layering: built-in defaults, the TOML file, the environment, the command line.
//!
//! The layers are merged here by hand rather than with the `config` crate, for three
//! reasons. It converts between types on its own (`"yes"` becomes `true`, `12` becomes
//! `"12"`), while the SPEC wants each value converted only by its key's type; its error
//! messages quote the offending value, which may be a password; and it would accept any
//! key case-insensitively. Instead each layer is checked against [`raw::SCHEMA`] into a
//! `toml::Table`, later layers replace earlier keys, and serde turns the merged table
//! into [`RawConfig`]. Defaults are not a table layer: a key no layer sets is `None` in
//! the raw shape and takes its default in [`validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Value;

use super::raw::{self, KeySpec, Kind, RawConfig};
use super::validate::{self, Problem};
use super::Config;
use crate::cli::GlobalArgs;

/// Prefix of the environment variables the loader reads.
const ENV_PREFIX: &str = "PCCE_PROXY_";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration file could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML. The parser's message is kept, but not
    /// its excerpt of the file, which could show a password.
    #[error("{}: line {line}, column {column}: not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// One or more keys are unknown or have bad values; every one is listed, one per
    /// line, followed by the hint, if any.
    #[error("{}", ProblemLines(problems, hint.as_deref()))]
    Invalid {
        /// Every problem found.
        problems: Vec<Problem>,
        /// A last line for the operator: where a configuration file was looked for, when
        /// none was found and keys are missing.
        hint: Option<String>,
    },
}

impl LoadError {
    /// The individual problems (empty for a file that could not be read or parsed).
    pub fn problems(&self) -> &[Problem] {
        match self {
            LoadError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }

    fn invalid(problems: Vec<Problem>) -> Self {
        LoadError::Invalid {
            problems,
            hint: None,
        }
    }
}

/// Formats problems one per line, then the hint.
struct ProblemLines<'a>(&'a [Problem], Option<&'a str>);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        match self.1 {
            Some(hint) => write!(f, "\n{hint}"),
            None => Ok(()),
        }
    }
}

/// Loads and validates the configuration.
///
/// `env` is the process environment (`std::env::vars().collect()` in `main`); passing it
/// in keeps tests from touching the real one. It supplies the `PCCE_PROXY_*` variables,
/// `XDG_CONFIG_HOME` and `HOME` for finding the file, and the egress proxy variables.
/// `auth.password_env` is not read here but at every login.
pub fn load(args: &GlobalArgs, env: &[(String, String)]) -> Result<Config, LoadError> {
    let layers = layered(args, env)?;
    let found_file = layers.file.is_some();
    match layers.finish(env) {
        Err(LoadError::Invalid { problems, .. })
            if !found_file && problems.iter().any(Problem::is_missing) =>
        {
            let hint = Some(no_file_hint(env));
            Err(LoadError::Invalid { problems, hint })
        }
        result => result,
    }
}

/// `admin.address` alone, read through the same layers as [`load`]. The `health` command
/// needs nothing else, so it also works where the Console and the credentials are not
/// configured (a health check in another container, say). A layer that cannot be read,
/// or holds an unknown key or a value of the wrong type, is still an error.
pub fn load_admin_address(
    args: &GlobalArgs,
    env: &[(String, String)],
) -> Result<Option<SocketAddr>, LoadError> {
    let mut layers = layered(args, env)?;
    let Some(raw) = layers.take_raw() else {
        return Err(LoadError::invalid(layers.problems));
    };
    match validate::admin_address(raw.admin) {
        Ok(address) if layers.problems.is_empty() => Ok(address),
        Ok(_) => Err(LoadError::invalid(layers.problems)),
        Err(found) => Err(layers.attributed(found)),
    }
}

/// The file, the environment and the command line, merged but not yet validated.
fn layered(args: &GlobalArgs, env: &[(String, String)]) -> Result<Layers, LoadError> {
    let mut layers = Layers::default();
    if let Some(path) = config_file(args, env) {
        let table = read_file(&path)?;
        layers.apply_file(table);
        layers.file = Some(path);
    }
    layers.apply_env(env);
    layers.apply_cli(args);
    Ok(layers)
}

/// The configuration file in force: `--config`, else [`default_config_file`] when that
/// file exists.
pub fn config_file(args: &GlobalArgs, env: &[(String, String)]) -> Option<PathBuf> {
    if let Some(path) = &args.config {
        return Some(path.clone());
    }
    let path = default_config_file(env)?;
    path.exists().then_some(path)
}

/// Where the configuration file is looked for without `--config`:
/// `$XDG_CONFIG_HOME/pcce-proxy/config.toml`, with `XDG_CONFIG_HOME` defaulting to
/// `$HOME/.config`, as the XDG specification says. `None` when neither is set.
pub fn default_config_file(env: &[(String, String)]) -> Option<PathBuf> {
    let xdg = env_var(env, "XDG_CONFIG_HOME").filter(|dir| Path::new(dir).is_absolute());
    let base = match xdg {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env_var(env, "HOME")?).join(".config"),
    };
    Some(base.join("pcce-proxy").join("config.toml"))
}

/// The last line of an error about missing keys when no configuration file was read:
/// a user who wrote one in another place learns where it was looked for.
fn no_file_hint(env: &[(String, String)]) -> String {
    match default_config_file(env) {
        Some(path) => format!(
            "no configuration file found at {}; pass -c FILE",
            path.display()
        ),
        None => "no configuration file given, and neither XDG_CONFIG_HOME nor HOME is set to \
                 find one; pass -c FILE"
            .to_owned(),
    }
}

/// The first non-empty value of `name` in `env`.
pub(crate) fn env_var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(key, value)| key == name && !value.is_empty())
        .map(|(_, value)| value.as_str())
}

fn read_file(path: &Path) -> Result<toml::Table, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        let (line, column) = line_and_column(&text, offset);
        LoadError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: error.message().trim_end().to_owned(),
        }
    })
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |tail| tail.chars().count())
        + 1;
    (line, column)
}

/// The merged layers so far.
#[derive(Default)]
struct Layers {
    /// Section name to a table of checked values.
    table: toml::Table,
    /// The configuration file read, if any.
    file: Option<PathBuf>,
    /// `section.key` to the variable or option that set it last, when not the file.
    origins: BTreeMap<String, String>,
    /// Problems found while layering.
    problems: Vec<Problem>,
}

impl Layers {
    fn set(&mut self, section: &str, name: &str, value: Value, origin: Option<String>) {
        let dotted = format!("{section}.{name}");
        match origin {
            Some(origin) => self.origins.insert(dotted, origin),
            None => self.origins.remove(&dotted),
        };
        let entry = self
            .table
            .entry(section)
            .or_insert_with(|| Value::Table(toml::Table::new()));
        if let Value::Table(keys) = entry {
            keys.insert(name.to_owned(), value);
        }
    }

    /// Takes back whatever an earlier layer set for a key, so that its default applies.
    fn unset(&mut self, section: &str, name: &str) {
        self.origins.remove(&format!("{section}.{name}"));
        if let Some(Value::Table(keys)) = self.table.get_mut(section) {
            keys.remove(name);
        }
    }

    fn problem(&mut self, key: impl Into<String>, origin: Option<&str>, message: String) {
        self.problems.push(Problem {
            key: key.into(),
            origin: origin.map(str::to_owned),
            message,
        });
    }

    /// Checks every key of the file against the schema; keeps the good ones.
    fn apply_file(&mut self, root: toml::Table) {
        for (section, value) in root {
            let Some(keys) = raw::section_keys(&section) else {
                let message = unknown_section(&section, &value);
                self.problem(section, None, message);
                continue;
            };
            let Value::Table(entries) = value else {
                let message = format!("expected a table, written as [{section}]");
                self.problem(section, None, message);
                continue;
            };
            for (name, value) in entries {
                self.apply_file_key(&section, keys, &name, value);
            }
        }
    }

    fn apply_file_key(&mut self, section: &str, keys: &[KeySpec], name: &str, value: Value) {
        let dotted = format!("{section}.{name}");
        let Some(spec) = keys.iter().find(|spec| spec.name == name) else {
            self.problem(dotted, None, unknown_key(section, keys, name));
            return;
        };
        if means_unset(spec, &value) {
            return;
        }
        match check_file_value(spec, value) {
            Ok(value) => self.set(section, name, value, None),
            Err(message) => self.problem(dotted, None, message),
        }
    }

    /// Reads `PCCE_PROXY_<SECTION>__<KEY>` variables. Names without the double
    /// underscore belong to someone else (Kubernetes service links, for one).
    fn apply_env(&mut self, env: &[(String, String)]) {
        // Names differing only in case would otherwise override each other in whatever
        // order the environment happens to list them.
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let section = section.to_ascii_lowercase();
            let key = key.to_ascii_lowercase();
            let Some(keys) = raw::section_keys(&section) else {
                let message = format!(
                    "unknown section {section:?}; expected one of {}",
                    raw::section_names().join(", ")
                );
                self.problem(name, None, message);
                continue;
            };
            let Some(spec) = keys.iter().find(|spec| spec.name == key) else {
                self.problem(name, None, unknown_key(&section, keys, &key));
                continue;
            };
            let dotted = format!("{section}.{}", spec.name);
            if let Some(other) = seen.insert(dotted.clone(), name) {
                let message = format!("sets {dotted} as {other} does: keep one of them");
                self.problem(name, None, message);
                continue;
            }
            if means_unset(spec, &Value::String(value.clone())) {
                self.unset(&section, spec.name);
                continue;
            }
            match convert_env_value(spec, value) {
                Ok(value) => self.set(&section, spec.name, value, Some(name.clone())),
                Err(message) => self.problem(dotted, Some(name), message),
            }
        }
    }

    fn apply_cli(&mut self, args: &GlobalArgs) {
        let strings = [
            ("listen", "address", "--listen", args.listen.as_deref()),
            ("console", "url", "--console", args.console.as_deref()),
            ("console", "project", "--project", args.project.as_deref()),
            ("auth", "username", "--username", args.username.as_deref()),
            ("admin", "address", "--admin", args.admin.as_deref()),
            ("log", "format", "--log-format", args.log_format.as_deref()),
            ("log", "level", "--log-level", args.log_level.as_deref()),
        ];
        for (section, key, option, value) in strings {
            if let Some(value) = value {
                self.set(
                    section,
                    key,
                    Value::String(value.into()),
                    Some(option.into()),
                );
            }
        }
        let paths = [
            (
                "auth",
                "password_file",
                "--password-file",
                &args.password_file,
            ),
            ("console", "ca_file", "--ca-file", &args.ca_file),
        ];
        for (section, key, option, path) in paths {
            if let Some(path) = path {
                self.apply_cli_path(section, key, option, path);
            }
        }
        if !args.pin_sha256.is_empty() {
            let pins = args.pin_sha256.iter().cloned().map(Value::String).collect();
            let origin = Some("--pin-sha256".into());
            self.set("console", "pin_sha256", Value::Array(pins), origin);
        }
        if args.insecure_skip_verify {
            let origin = Some("--insecure-skip-verify".into());
            self.set(
                "console",
                "insecure_skip_verify",
                Value::Boolean(true),
                origin,
            );
        }
    }

    fn apply_cli_path(&mut self, section: &str, key: &str, option: &str, path: &Path) {
        match path.to_str() {
            Some(text) => self.set(
                section,
                key,
                Value::String(text.into()),
                Some(option.into()),
            ),
            None => {
                let message = "the path is not valid UTF-8".to_owned();
                self.problem(format!("{section}.{key}"), Some(option), message);
            }
        }
    }

    /// The merged table in the raw shape; `None` (with a problem recorded) if it does
    /// not fit.
    fn take_raw(&mut self) -> Option<RawConfig> {
        let table = std::mem::take(&mut self.table);
        match Value::Table(table).try_into() {
            Ok(raw) => Some(raw),
            // The schema checks make this unreachable short of a schema that disagrees
            // with the raw structs, which a unit test rules out. serde's message is not
            // shown: it would quote the value.
            Err(_) => {
                let message = "the merged configuration does not fit its schema".into();
                self.problem("configuration", None, message);
                None
            }
        }
    }

    /// Turns the merged table into a `Config`, or every problem found on the way.
    fn finish(mut self, env: &[(String, String)]) -> Result<Config, LoadError> {
        let Some(raw) = self.take_raw() else {
            return Err(LoadError::invalid(self.problems));
        };
        let origins = validate::Origins {
            overrides: self.origins.clone(),
            file: self.file.clone(),
        };
        match validate::validate_with_origins(raw, env, origins) {
            Ok(config) if self.problems.is_empty() => Ok(config),
            Ok(_) => Err(LoadError::invalid(self.problems)),
            Err(found) => Err(self.attributed(found)),
        }
    }

    /// The layering problems followed by `found`, each of these with the origin of its
    /// key.
    fn attributed(self, found: Vec<Problem>) -> LoadError {
        let mut problems = self.problems;
        // A key whose value was dropped while layering would otherwise be reported a
        // second time, as missing.
        let reported: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
        for mut problem in found {
            if !reported.contains(&problem.key) {
                problem.origin = self.origins.get(&problem.key).cloned();
                problems.push(problem);
            }
        }
        LoadError::invalid(problems)
    }
}

fn unknown_section(section: &str, value: &Value) -> String {
    let sections = raw::section_names().join("], [");
    if value.is_table() {
        format!("unknown section [{section}]; expected one of [{sections}]")
    } else {
        format!("unknown key at the top level; keys belong in a section: [{sections}]")
    }
}

fn unknown_key(section: &str, keys: &[KeySpec], name: &str) -> String {
    let names: Vec<&str> = keys.iter().map(|spec| spec.name).collect();
    match closest(name, &names) {
        Some(guess) => format!("unknown key; did you mean {section}.{guess}?"),
        None => format!("unknown key; [{section}] has {}", names.join(", ")),
    }
}

/// The candidate within two edits of `name`, if any.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Accepts a file value only when it has the key's type; never converts.
fn check_file_value(spec: &KeySpec, value: Value) -> Result<Value, String> {
    let fits = match spec.kind {
        Kind::Str | Kind::Duration | Kind::Octal => value.is_str(),
        Kind::Bool => value.is_bool(),
        Kind::Int => value.is_integer(),
        Kind::List => is_string_list(&value),
        Kind::StrOrList | Kind::Command => value.is_str() || is_string_list(&value),
    };
    if fits {
        Ok(value)
    } else {
        Err(format!(
            "expected {}, found {}",
            expected(spec.kind),
            found(spec, &value)
        ))
    }
}

fn is_string_list(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|items| items.iter().all(Value::is_str))
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Duration => "a duration string such as \"30s\"",
        Kind::Octal => "an octal string such as \"0600\"",
        Kind::Bool => "true or false",
        Kind::Int => "a whole number",
        Kind::List => "a list of strings",
        Kind::StrOrList => "a string or a list of strings",
        Kind::Command => "a string (run by sh -c) or a list of strings (run directly)",
    }
}

/// Describes a wrongly typed value: its type, and the value itself unless the key holds
/// a secret.
fn found(spec: &KeySpec, value: &Value) -> String {
    if spec.secret {
        format!("a value of type {}", value.type_str())
    } else {
        format!("{} {}", value.type_str(), value)
    }
}

/// Whether `value` is an empty string given to a number or true/false key. An empty
/// string means "not set" for every key that holds one value; string keys carry it to
/// validation, which reads it so, while these keys cannot hold a string at all. (An
/// empty list variable is an empty list.)
fn means_unset(spec: &KeySpec, value: &Value) -> bool {
    let empty = matches!(value, Value::String(text) if text.trim().is_empty());
    empty && matches!(spec.kind, Kind::Int | Kind::Bool)
}

/// Converts an environment value by the key's type alone.
fn convert_env_value(spec: &KeySpec, text: &str) -> Result<Value, String> {
    let quoted = || {
        if spec.secret {
            "a value that is not".to_owned()
        } else {
            format!("{text:?}")
        }
    };
    match spec.kind {
        Kind::Str | Kind::Duration | Kind::Octal | Kind::Command => {
            Ok(Value::String(text.to_owned()))
        }
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, found {}", quoted())),
        },
        Kind::Int => text
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected a whole number, found {}", quoted())),
        Kind::List | Kind::StrOrList => Ok(Value::Array(split_list(text))),
    }
}

/// Splits a comma-separated list, dropping blanks, so that an empty variable is an
/// empty list.
fn split_list(text: &str) -> Vec<Value> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| Value::String(item.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn spec(section: &str, name: &str) -> KeySpec {
        *raw::section_keys(section)
            .and_then(|keys| keys.iter().find(|spec| spec.name == name))
            .expect("key exists in the schema")
    }

    #[test]
    fn env_values_are_converted_by_the_key_type_only() {
        let password = convert_env_value(&spec("auth", "password"), "0012");
        assert_eq!(password, Ok(Value::String("0012".into())));
        let remote = convert_env_value(&spec("listen", "allow_remote"), "TRUE");
        assert_eq!(remote, Ok(Value::Boolean(true)));
        assert!(convert_env_value(&spec("listen", "allow_remote"), "yes").is_err());
        let max = convert_env_value(&spec("listen", "max_connections"), "12");
        assert_eq!(max, Ok(Value::Integer(12)));
    }

    #[test]
    fn env_lists_are_comma_separated() {
        let hosts = convert_env_value(&spec("listen", "allowed_hosts"), " a, b ,,");
        let expected = Value::Array(vec![Value::String("a".into()), Value::String("b".into())]);
        assert_eq!(hosts, Ok(expected));
    }

    #[test]
    fn variables_without_the_double_underscore_are_ignored() {
        let mut layers = Layers::default();
        let vars = env(&[
            ("PCCE_PROXY_PORT", "tcp://10.0.0.1:8083"),
            ("PCCE_PROXY_SERVICE_HOST", "10.0.0.1"),
            ("PCCE_PROXY_CONSOLE__URL", "https://c"),
        ]);
        layers.apply_env(&vars);
        assert!(layers.problems.is_empty());
        assert_eq!(layers.origins["console.url"], "PCCE_PROXY_CONSOLE__URL");
    }

    #[test]
    fn unknown_env_section_or_key_names_the_variable() {
        let mut layers = Layers::default();
        layers.apply_env(&env(&[
            ("PCCE_PROXY_NOPE__X", "1"),
            ("PCCE_PROXY_LOG__LEVLE", "x"),
        ]));
        let keys: Vec<&str> = layers.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["PCCE_PROXY_NOPE__X", "PCCE_PROXY_LOG__LEVLE"]);
        assert!(layers.problems[1].message.contains("log.level"));
    }

    #[test]
    fn one_key_set_by_two_variables_is_an_error() {
        let mut layers = Layers::default();
        let vars = env(&[
            ("PCCE_PROXY_LOG__LEVEL", "info"),
            ("PCCE_PROXY_log__level", "x"),
        ]);
        layers.apply_env(&vars);
        assert_eq!(layers.problems.len(), 1);
        assert_eq!(layers.problems[0].key, "PCCE_PROXY_log__level");
    }

    #[test]
    fn wrong_file_types_never_quote_secrets() {
        let error = check_file_value(&spec("auth", "password"), Value::Integer(4711));
        let message = error.expect_err("an integer is not a string");
        assert!(!message.contains("4711"), "{message}");
        let error = check_file_value(&spec("listen", "allow_remote"), Value::String("yes".into()));
        assert!(error
            .expect_err("a string is not a bool")
            .contains("\"yes\""));
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(
            closest("adress", &["address", "allow_remote"]),
            Some("address")
        );
        assert_eq!(closest("zzz", &["address"]), None);
    }

    #[test]
    fn xdg_config_home_is_preferred_and_must_exist() {
        let dir = tempfile::tempdir().expect("temp dir");
        let xdg = dir.path().to_str().expect("utf-8 temp path").to_owned();
        let vars = env(&[("XDG_CONFIG_HOME", &xdg), ("HOME", "/nonexistent")]);
        assert_eq!(config_file(&GlobalArgs::default(), &vars), None);
        let file = dir.path().join("pcce-proxy").join("config.toml");
        std::fs::create_dir_all(file.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&file, "").expect("write");
        assert_eq!(config_file(&GlobalArgs::default(), &vars), Some(file));
    }

    #[test]
    fn syntax_errors_report_a_position_without_the_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[auth]\npassword = \"hunter2\n").expect("write");
        let error = read_file(&path).expect_err("unterminated string");
        let text = error.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
