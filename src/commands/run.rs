//! `pcce-proxy run`: build everything from the configuration and serve until a signal.
//!
//! [`start`] is the whole proxy in one call, returning a [`ProxyHandle`]; the `run`
//! command adds signal handling around it, and the tests and `demo` call it directly.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Credentials;
use crate::config::{AuthMethod, Config, ListenAddress};
use crate::console::{connect, tls};
use crate::proxy::guard::GuardConfig;
use crate::proxy::service::Proxy;
use crate::secret::Secret;
use crate::server::{self, Drained, Limits, Listener};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS set-up (CA file, client certificate) failed.
    #[error("{0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address as configured.
        address: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Something else in the configuration cannot be used.
    #[error("{0}")]
    Setup(String),
}

/// A running proxy.
pub struct ProxyHandle {
    /// The bound TCP address (port 0 resolved); `None` on a unix socket.
    pub addr: Option<SocketAddr>,
    /// The proxy's Console credential (token cache or Basic), for status and tests.
    pub credentials: Credentials,
    stop: watch::Sender<bool>,
    server: JoinHandle<Drained>,
    driver: JoinHandle<()>,
}

impl ProxyHandle {
    /// Stops accepting, drains requests in flight (up to the drain timeout) and stops the
    /// login driver.
    pub async fn stop(self) -> Drained {
        let _ = self.stop.send(true);
        let drained = self.server.await.unwrap_or(Drained::TimedOut);
        self.credentials.shutdown();
        let _ = self.driver.await;
        drained
    }

    /// Signals the server to stop without waiting.
    pub fn begin_stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Builds the proxy from `config`, binds its listener and starts serving. The listener
/// is open before the first login finishes; requests wait for it.
pub async fn start(config: &Config) -> Result<ProxyHandle, StartError> {
    let limits = Limits::new(config.listen.max_connections, config.listen.drain_timeout);
    start_with_limits(config, limits).await
}

/// [`start`] with other connection [`Limits`] than the configuration gives (tests use
/// short timeouts).
pub async fn start_with_limits(config: &Config, limits: Limits) -> Result<ProxyHandle, StartError> {
    let forward_tls = tls::client_config(
        &config.console,
        tls::Alpn::from(config.console.http_version),
        None,
    )
    .map_err(|err| StartError::Tls(err.to_string()))?;
    let client = connect::forward_client(&config.console, forward_tls);
    let credentials =
        Credentials::from_config(config).map_err(|err| StartError::Setup(err.to_string()))?;

    let listener = Listener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Bind {
            address: describe_address(&config.listen.address),
            source,
        })?;
    let addr = listener.local_addr();
    let client_token = read_client_token(config)?;
    let guard = GuardConfig::new(
        &config.listen,
        addr,
        client_token.clone(),
        config.auth.client_logins,
    );
    let proxy = Proxy::new(config, guard, client, credentials.clone(), client_token)
        .map_err(|err| StartError::Setup(err.message().to_owned()))?;

    log_start(config, addr);
    let driver = credentials.spawn_driver();
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        server::serve(listener, proxy, limits, shutdown).await
    });

    Ok(ProxyHandle {
        addr,
        credentials,
        stop,
        server,
        driver,
    })
}

/// The `run` command: serve until SIGTERM or SIGINT, then shut down gracefully.
pub async fn run(config: Config) -> ExitCode {
    let handle = match start(&config).await {
        Ok(handle) => handle,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            eprintln!("pcce-proxy: {err}");
            return ExitCode::from(1);
        }
    };
    spawn_sighup(handle.credentials.clone());

    wait_for_termination().await;
    tracing::info!(
        shutdown_delay_s = config.listen.shutdown_delay.as_secs_f64(),
        "shutting down"
    );
    tokio::spawn(async {
        wait_for_termination().await;
        tracing::warn!("second signal: exiting at once");
        crate::log_writer::flush();
        std::process::exit(1);
    });
    tokio::time::sleep(config.listen.shutdown_delay).await;

    match handle.stop().await {
        Drained::Complete => tracing::info!("all requests finished; exiting"),
        Drained::TimedOut => {
            tracing::warn!("drain timeout reached; remaining requests were cut off")
        }
    }
    ExitCode::SUCCESS
}

async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn spawn_sighup(credentials: Credentials) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: logging in again");
            credentials.force_login();
        }
    });
}

fn read_client_token(config: &Config) -> Result<Option<Secret>, StartError> {
    let Some(path) = &config.listen.client_token_file else {
        return Ok(None);
    };
    let content = std::fs::read_to_string(path).map_err(|err| {
        StartError::Setup(format!(
            "listen.client_token_file {}: {err}",
            path.display()
        ))
    })?;
    let content = Secret::new(content);
    let value = content.expose();
    let value = value.strip_suffix('\n').unwrap_or(value);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(StartError::Setup(format!(
            "listen.client_token_file {} is empty",
            path.display()
        )));
    }
    Ok(Some(Secret::new(value)))
}

fn describe_address(address: &ListenAddress) -> String {
    match address {
        ListenAddress::Tcp(addr) => addr.to_string(),
        ListenAddress::Unix(path) => format!("unix:{}", path.display()),
    }
}

fn auth_method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Password => "password",
        AuthMethod::Certificate => "certificate",
        AuthMethod::Basic => "basic",
    }
}

fn log_start(config: &Config, addr: Option<SocketAddr>) {
    let console = &config.console;
    let trust = if console.insecure_skip_verify {
        "insecure (certificate not verified)"
    } else if !console.pin_sha256.is_empty() {
        "pinned certificate"
    } else if console.ca_file.is_some() {
        "system roots and console.ca_file"
    } else {
        "system roots"
    };
    if console.insecure_skip_verify {
        tracing::warn!(
            "console.insecure_skip_verify is set: the Console's certificate is not verified, \
             so anyone on the network path can read the credentials; pin it with \
             console.pin_sha256 instead"
        );
    }
    let listen = addr.map_or_else(
        || describe_address(&config.listen.address),
        |a| a.to_string(),
    );
    tracing::info!(
        listen.address = %listen,
        console.url = %console.url.base(),
        console.project = console.project.as_deref().unwrap_or(""),
        console.trust = trust,
        auth.method = auth_method_name(config.auth.method),
        auth.username = %config.auth.username,
        "pcce-proxy listening"
    );
}
