//! The deployment files under `config/` and the `Dockerfile`, checked as far as they can
//! be without systemd, Kubernetes or a container engine: every TOML they carry loads
//! under the real configuration loader with the environment they set, and each file has
//! the settings its documentation promises.

use std::path::{Path, PathBuf};

use clap::Parser;
use pcce_proxy::cli::{Cli, GlobalArgs};
use pcce_proxy::config::{self, Config, LogFormat};
use pcce_proxy::secret::{CommandSpec, PasswordSource};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap_or_else(|err| panic!("{relative}: {err}"))
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Loads `toml` as the configuration file, with `env` as the whole environment.
fn load_toml(toml: &str, env: &[(&str, &str)]) -> Config {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).expect("write the configuration");
    let args = GlobalArgs {
        config: Some(path),
        ..GlobalArgs::default()
    };
    config::load(&args, &vars(env)).unwrap_or_else(|err| panic!("{err}\n{toml}"))
}

/// The `Key=value` lines of a systemd unit (or `KEY value` of a Dockerfile) that start
/// with `key`, comments and continuation lines aside.
fn lines_starting<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.strip_prefix(key))
        .collect()
}

// ----- laptop ---------------------------------------------------------------------------

#[test]
fn the_laptop_example_loads_with_the_macos_keychain_command() {
    let config = load_toml(&read("config/laptop.toml"), &[]);

    let Some(PasswordSource::Command(CommandSpec::Argv(argv))) = &config.auth.password else {
        panic!("the active password source is a command given as a list");
    };
    assert_eq!(argv[..2], ["security", "find-generic-password"]);
    assert!(
        argv.contains(&"-w".to_owned()),
        "-w prints only the password"
    );
    assert_eq!(config.console.url.port, 8083);
    assert_eq!(
        config.admin.address,
        Some("127.0.0.1:9083".parse().expect("address"))
    );
    assert!(matches!(
        config.listen.address,
        config::ListenAddress::Tcp(addr) if addr.ip().is_loopback()
    ));
}

#[test]
fn the_laptop_examples_linux_alternative_loads_when_swapped_in() {
    let text = read("config/laptop.toml");
    let linux = text
        .lines()
        .find_map(|line| line.strip_prefix("# password_command = [\"secret-tool\""))
        .map(|rest| format!("password_command = [\"secret-tool\"{rest}"))
        .expect("a commented secret-tool example");
    let swapped: String = text
        .lines()
        .map(|line| {
            if line.starts_with("password_command = ") {
                linux.clone()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");

    let config = load_toml(&swapped, &[]);
    let Some(PasswordSource::Command(CommandSpec::Argv(argv))) = &config.auth.password else {
        panic!("the Linux password source is a command given as a list");
    };
    assert_eq!(argv[..2], ["secret-tool", "lookup"]);
}

// ----- systemd --------------------------------------------------------------------------

#[test]
fn the_systemd_unit_is_hardened_as_documented() {
    let unit = read("config/pcce-proxy.service");
    for setting in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "SystemCallFilter=@system-service",
        "Type=exec",
        "KillSignal=SIGTERM",
        "RestartPreventExitStatus=2",
    ] {
        assert!(unit.lines().any(|l| l == setting), "missing {setting}");
    }
    assert_eq!(lines_starting(&unit, "CapabilityBoundingSet="), [""]);
    let families = lines_starting(&unit, "RestrictAddressFamilies=");
    assert_eq!(families, ["AF_INET AF_INET6 AF_UNIX"]);
    assert_eq!(
        lines_starting(&unit, "ExecReload="),
        ["/bin/kill -HUP $MAINPID"]
    );

    let stop = lines_starting(&unit, "TimeoutStopSec=")[0];
    let stop = config::validate::parse_duration(stop).expect("a duration");
    let defaults = load_toml(
        "[console]\nurl = \"https://c:8083\"\n[auth]\nusername = \"u\"\npassword = \"p\"\n",
        &[],
    );
    assert!(stop > defaults.listen.shutdown_delay + defaults.listen.drain_timeout);
}

#[test]
fn the_systemd_credential_reaches_the_proxy_as_its_password_file() {
    let unit = read("config/pcce-proxy.service");
    let credential = lines_starting(&unit, "LoadCredential=")[0];
    let (name, source) = credential.split_once(':').expect("NAME:PATH");
    assert!(source.starts_with("/etc/pcce-proxy/"), "{source}");
    let variable = format!("PCCE_PROXY_AUTH__PASSWORD_FILE=%d/{name}");
    assert!(
        lines_starting(&unit, "Environment=").contains(&variable.as_str()),
        "the password file must point into the credentials directory"
    );

    // As systemd would run it: %d expanded, the command line parsed, the file loaded.
    let exec = lines_starting(&unit, "ExecStart=")[0];
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert!(args[0].ends_with("/pcce-proxy"));
    let cli = Cli::try_parse_from(&args).expect("ExecStart parses");
    assert_eq!(cli.command, Some(pcce_proxy::cli::Command::Run));
    assert_eq!(
        cli.global.config.as_deref(),
        Some(Path::new("/etc/pcce-proxy/config.toml"))
    );
    let expanded = format!("/run/credentials/pcce-proxy.service/{name}");
    let config = load_toml(
        "[console]\nurl = \"https://console.example.com:8083\"\n[auth]\nusername = \"svc\"\n",
        &[("PCCE_PROXY_AUTH__PASSWORD_FILE", &expanded)],
    );
    assert_eq!(
        config.auth.password,
        Some(PasswordSource::File(PathBuf::from(expanded)))
    );
}

// ----- Kubernetes -----------------------------------------------------------------------

/// The block scalar `config.toml: |` of the ConfigMap, unindented.
fn configmap_toml(yaml: &str) -> String {
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "config.toml: |")
        .skip(1);
    let first = lines.next().expect("the block is not empty");
    let indent = first.len() - first.trim_start().len();
    let block = std::iter::once(first).chain(
        lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent),
    );
    block
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value after `key:` on the first line that has it, quotes removed.
fn yaml_value<'a>(yaml: &'a str, key: &str) -> Vec<&'a str> {
    yaml.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
        .filter_map(|rest| rest.strip_prefix(':'))
        .map(|v| v.trim().trim_matches('"'))
        .collect()
}

#[test]
fn the_sidecar_configuration_loads_with_the_pods_environment() {
    let yaml = read("config/kubernetes-sidecar.yaml");
    let toml = configmap_toml(&yaml);
    let password = yaml_value(&yaml, "value")
        .into_iter()
        .find(|v| v.starts_with("/var/run/secrets/"))
        .expect("PCCE_PROXY_AUTH__PASSWORD_FILE's value");
    let config = load_toml(&toml, &[("PCCE_PROXY_AUTH__PASSWORD_FILE", password)]);

    assert!(matches!(
        config.auth.password,
        Some(PasswordSource::File(_))
    ));
    assert_eq!(config.log.format, LogFormat::Json);
    let admin = config.admin.address.expect("admin listener on");
    assert!(admin.ip().is_unspecified(), "the kubelet must reach it");
    assert!(yaml_value(&yaml, "containerPort").contains(&admin.port().to_string().as_str()));
    assert!(matches!(
        config.listen.address,
        config::ListenAddress::Tcp(addr) if addr.ip().is_loopback()
    ));

    // The password file is where the Secret is mounted.
    let mount = Path::new(password).parent().expect("a directory");
    let mounts = yaml_value(&yaml, "mountPath");
    assert!(
        mounts.contains(&mount.to_str().expect("utf-8")),
        "{mounts:?}"
    );
    assert!(mounts.contains(&"/etc/pcce-proxy"));
    assert_eq!(yaml_value(&yaml, "secretName"), ["pcce-proxy-credentials"]);

    let grace: u64 = yaml_value(&yaml, "terminationGracePeriodSeconds")[0]
        .parse()
        .expect("seconds");
    let needed = config.listen.shutdown_delay + config.listen.drain_timeout;
    assert!(grace > needed.as_secs() + 5, "{grace} s is too short");
}

#[test]
fn the_sidecar_is_probed_on_the_admin_port_and_locked_down() {
    let yaml = read("config/kubernetes-sidecar.yaml");
    let sidecar: String = yaml
        .lines()
        .skip_while(|l| !l.contains("initContainers:"))
        .take_while(|l| !l.trim_start().starts_with("containers:"))
        .collect::<Vec<_>>()
        .join("\n");

    assert_eq!(yaml_value(&sidecar, "restartPolicy"), ["Always"]);
    for probe in ["livenessProbe:", "readinessProbe:", "startupProbe:"] {
        let at = sidecar.find(probe).unwrap_or_else(|| panic!("no {probe}"));
        let body = &sidecar[at..];
        assert!(yaml_value(body, "port")[0] == "admin", "{probe}");
    }
    let paths = yaml_value(&sidecar, "path");
    assert_eq!(paths[..2], ["/healthz", "/readyz"], "liveness, readiness");
    for setting in [
        ("readOnlyRootFilesystem", "true"),
        ("runAsNonRoot", "true"),
        ("allowPrivilegeEscalation", "false"),
        ("drop", "[\"ALL\"]"),
    ] {
        assert!(
            yaml_value(&sidecar, setting.0).contains(&setting.1),
            "{setting:?}"
        );
    }
    assert!(yaml_value(&yaml, "runAsUser").iter().all(|uid| *uid != "0"));
    for (key, value) in [("cpu", "50m"), ("memory", "32Mi"), ("memory", "128Mi")] {
        assert!(yaml_value(&sidecar, key).contains(&value), "{key}: {value}");
    }
    assert!(
        sidecar.contains("RSS") || sidecar.contains("resident"),
        "measured sizes"
    );
}

// ----- container image ------------------------------------------------------------------

/// The Dockerfile's instructions as (keyword, arguments), continuation lines joined and
/// comments dropped.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        match line.trim_end().strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(line.trim());
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(' ') {
            Some((keyword, rest)) => (keyword.to_owned(), rest.trim().to_owned()),
            None => (l, String::new()),
        })
        .collect()
}

fn arguments(instructions: &[(String, String)], keyword: &str) -> Vec<String> {
    instructions
        .iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, args)| args.clone())
        .collect()
}

#[test]
fn the_dockerfile_builds_what_ci_checks_and_runs_unprivileged() {
    let dockerfile = instructions(&read("Dockerfile"));
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let binary = manifest["bin"][0]["name"].as_str().expect("binary name");

    let build = arguments(&dockerfile, "RUN").join(" ");
    assert!(build.contains("cargo build --release --locked"), "{build}");
    assert!(
        build.contains(&format!("target/release/{binary} /{binary}")),
        "{build}"
    );
    let ci = read(".ci/run");
    assert!(
        ci.contains("cargo test --locked"),
        "CI checks Cargo.lock as the image does"
    );
    assert!(repo_file("Cargo.lock").is_file());
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|l| l.trim() == "target/"));
    assert!(!ignored
        .lines()
        .any(|l| matches!(l.trim(), "Cargo.lock" | "src/" | "src")));

    let stages = arguments(&dockerfile, "FROM");
    assert_eq!(stages.len(), 2, "a build stage and a final stage");
    let rust = stages[0]
        .split_once("rust:")
        .and_then(|(_, tag)| tag.split('-').next())
        .expect("a rust image tag");
    let wanted = manifest["package"]["rust-version"].as_str().expect("MSRV");
    assert!(version_at_least(rust, wanted), "rust {rust} < {wanted}");
    assert!(stages[1].contains("distroless/cc") && stages[1].contains(":nonroot"));
    let user = &arguments(&dockerfile, "USER")[0];
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );

    let health = &arguments(&dockerfile, "HEALTHCHECK")[0];
    assert!(
        health.ends_with(&format!("CMD [\"/{binary}\", \"health\"]")),
        "{health}"
    );
    assert_eq!(
        arguments(&dockerfile, "ENTRYPOINT"),
        [format!("[\"/{binary}\"]")]
    );
    assert_eq!(arguments(&dockerfile, "CMD"), ["[\"run\"]"]);
}

#[test]
fn the_images_environment_is_valid_and_moves_only_the_admin_listener() {
    let text = read("Dockerfile");
    let dockerfile = instructions(&text);
    let image_env: Vec<(String, String)> = arguments(&dockerfile, "ENV")
        .iter()
        .flat_map(|args| {
            args.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    let xdg = image_env
        .iter()
        .find(|(k, _)| k == "XDG_CONFIG_HOME")
        .map(|(_, v)| v.clone())
        .expect("XDG_CONFIG_HOME");
    assert!(
        text.contains(&format!("{xdg}/pcce-proxy/config.toml")),
        "documented"
    );

    // XDG_CONFIG_HOME is left out: this machine's /etc is not the image's. Unknown
    // PCCE_PROXY_* keys are errors, so loading proves every name is right.
    let env: Vec<(&str, &str)> = image_env
        .iter()
        .filter(|(k, _)| k.starts_with("PCCE_PROXY_"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([
            (
                "PCCE_PROXY_CONSOLE__URL",
                "https://console.example.com:8083",
            ),
            ("PCCE_PROXY_AUTH__USERNAME", "svc"),
            (
                "PCCE_PROXY_AUTH__PASSWORD_FILE",
                "/var/run/secrets/pcce-proxy/password",
            ),
        ])
        .collect();
    let config = config::load(&GlobalArgs::default(), &vars(&env)).expect("valid environment");
    let admin = config.admin.address.expect("admin on");
    assert_eq!(admin, "0.0.0.0:9083".parse().expect("address"));
    assert_eq!(arguments(&dockerfile, "EXPOSE"), ["9083"]);
    let config::ListenAddress::Tcp(listen) = config.listen.address else {
        panic!("TCP listener");
    };
    assert!(
        listen.ip().is_loopback(),
        "the pod shares loopback; nothing else may reach it"
    );
}

fn version_at_least(have: &str, want: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    parse(have) >= parse(want)
}
