//! `pcce-proxy demo`: a simulated Console and the proxy in front of it, no configuration
//! needed.
//!
//! The simulated Console listens on a random loopback port with a fresh self-signed
//! certificate; the proxy trusts it by pinning that certificate, the way an operator
//! would trust a default Console install. The commands printed on stdout work when pasted.

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
    print_instructions(&base, &console, admin.as_deref());

    wait_for_stop(&handle).await;
    eprintln!("stopping the demo");
    handle.stop().await;
    console.shutdown().await;
    ExitCode::SUCCESS
}

/// Ctrl-C, SIGTERM, or a shutdown begun through the admin listener.
async fn wait_for_stop(handle: &run::ProxyHandle) {
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
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
        _ = handle.shutdown().begun() => {}
    }
}

fn print_instructions(base: &str, console: &SimConsole, admin: Option<&str>) {
    let console_url = console.url();
    let pin = console.cert_sha256_hex();
    println!(
        "\
pcce-proxy demo: a simulated Console runs at {console_url}
(self-signed; the proxy trusts it by its pin {pin};
its user is {DEMO_USER} with the password {DEMO_PASSWORD}).
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
