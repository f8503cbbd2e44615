//! `pcce-proxy demo`: a simulated Console and the proxy in front of it, no configuration
//! needed.
//!
//! The simulated Console listens on a random loopback port with a fresh self-signed
//! certificate; the proxy trusts it by pinning that certificate, the way an operator
//! would trust a default Console install. The commands printed on stdout work when pasted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::GlobalArgs;
use crate::commands::{run, EXIT_CONFIG};
use crate::config::{self, ListenAddress};
use crate::sim::{SimConsole, SimOptions};
use crate::telemetry;

/// The simulated Console's demo user.
const DEMO_USER: &str = "admin";
/// Its password, known only to the simulated Console and the proxy.
const DEMO_PASSWORD: &str = "admin-password";

/// Runs the demo until Ctrl-C.
pub async fn demo(args: &GlobalArgs) -> ExitCode {
    if let Some(ignored) = options_the_demo_sets_itself(args) {
        eprintln!(
            "pcce-proxy: demo runs its own simulated Console and sets {ignored} itself; \
             only --listen, --admin, --project, --log-format and --log-level apply to it"
        );
        return ExitCode::from(EXIT_CONFIG);
    }

    let console = match SimConsole::start(SimOptions::default()).await {
        Ok(console) => console,
        Err(err) => {
            eprintln!("pcce-proxy: cannot start the simulated Console: {err}");
            return ExitCode::from(1);
        }
    };

    let mut demo_args = args.clone();
    demo_args.config = None;
    demo_args.console = Some(console.url());
    demo_args.username = Some(DEMO_USER.to_owned());
    demo_args.pin_sha256 = vec![console.cert_sha256_hex()];
    demo_args.ca_file = None;
    demo_args.password_file = None;
    demo_args.insecure_skip_verify = false;
    // Only what the demo sets counts: no configuration file, no PCCE_PROXY_* variables.
    let env = vec![(
        "PCCE_PROXY_AUTH__PASSWORD".to_owned(),
        DEMO_PASSWORD.to_owned(),
    )];
    let config = match config::load(&demo_args, &env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pcce-proxy: invalid demo options:\n{err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log.format, &config.log.level);

    let handle = match run::start(&config).await {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("pcce-proxy: {err}");
            return ExitCode::from(1);
        }
    };
    let base = match (&config.listen.address, handle.addr) {
        (_, Some(addr)) => format!("http://{addr}"),
        (ListenAddress::Unix(path), None) => {
            format!("--unix-socket {} http://localhost", path.display())
        }
        (ListenAddress::Tcp(addr), None) => format!("http://{addr}"),
    };
    let admin = handle.admin_addr.map(|addr| format!("http://{addr}"));
    let certificate = write_certificate(&console);
    print_instructions(&base, &console, certificate.as_deref(), admin.as_deref());

    let reason = wait_for_stop(&handle).await;
    eprintln!("stopping the demo");
    handle.shutdown().begin(reason);
    handle.wait().await;
    if let Some(path) = certificate {
        let _ = std::fs::remove_file(path);
    }
    console.shutdown().await;
    ExitCode::SUCCESS
}

/// The first option given that the demo decides itself, so that it is not silently
/// ignored.
fn options_the_demo_sets_itself(args: &GlobalArgs) -> Option<&'static str> {
    let given = [
        ("--config", args.config.is_some()),
        ("--console", args.console.is_some()),
        ("--username", args.username.is_some()),
        ("--password-file", args.password_file.is_some()),
        ("--ca-file", args.ca_file.is_some()),
        ("--pin-sha256", !args.pin_sha256.is_empty()),
        ("--insecure-skip-verify", args.insecure_skip_verify),
    ];
    given
        .into_iter()
        .find_map(|(option, set)| set.then_some(option))
}

/// Writes the simulated Console's certificate where a second proxy can trust it with
/// `--ca-file`; removed when the demo stops. `None` when the file cannot be written.
fn write_certificate(console: &SimConsole) -> Option<PathBuf> {
    let name = format!("pcce-proxy-demo-console-{}.pem", console.addr().port());
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, console.cert_pem()).ok()?;
    Some(path)
}

/// Ctrl-C, SIGTERM, or a shutdown begun through the admin listener; returns which.
async fn wait_for_stop(handle: &run::ProxyHandle) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = terminated => "SIGTERM",
        reason = handle.shutdown().begun() => reason,
    }
}

fn print_instructions(
    base: &str,
    console: &SimConsole,
    certificate: Option<&Path>,
    admin: Option<&str>,
) {
    let console_url = console.url();
    let pin = console.cert_sha256_hex();
    let certificate = certificate.map_or_else(String::new, |path| {
        format!("\n  certificate (for --ca-file): {}", path.display())
    });
    println!(
        "\
pcce-proxy demo: a simulated Console runs at {console_url}
  user {DEMO_USER}, password {DEMO_PASSWORD}
  self-signed certificate, sha256 {pin} (the proxy pins it){certificate}
The proxy listens at {base}. Try, from another terminal:

  curl -s {base}/api/v1/version
  curl -s '{base}/api/v1/images?limit=2'
  curl -s -i '{base}/api/v1/images?limit=2&offset=10' | grep -i total-count
  curl -s '{base}/api/v1/echo/a%2Fb?x=1+2'
  curl -s -o /dev/null -w '%{{http_code}}\\n' \\
       -H 'Origin: https://evil.example' {base}/api/v1/version

The first answers the Console's version with no credentials on the client side. The echo
endpoint shows what reached the Console: the path and query byte for byte, and the
proxy's bearer token in place of any client credential. The last one is refused (403):
web pages cannot borrow the proxy's credentials."
    );
    if let Some(admin) = admin {
        println!(
            "
The admin listener answers at {admin}:

  curl -s {admin}/readyz
  curl -s {admin}/status
  curl -s {admin}/metrics | grep pcce_proxy_requests_total"
        );
    }
    println!("\nPress Ctrl-C to stop.");
}
