//! `pcce-proxy run`: build everything from the configuration and serve until a signal.
//!
//! [`start`] is the whole proxy in one call, returning a [`ProxyHandle`]; the `run`
//! command adds signal handling around it, and the tests and `demo` call it directly.
//!
//! Shutdown has one path, whoever starts it (a signal, `POST /quitquitquit`,
//! [`ProxyHandle::stop`]): readiness turns 503 at once, the proxy keeps serving for
//! `listen.shutdown_delay` (so that load balancers notice), stops accepting, lets requests
//! in flight finish for up to `listen.drain_timeout`, stops the login driver, logs its
//! token out when `auth.logout_on_exit` asks for it, and closes the admin listener last.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin, StaticInfo};
use crate::auth::Credentials;
use crate::config::{AuthMethod, ClientLogins, Config, ListenAddress};
use crate::console::pool::ConsoleClient;
use crate::console::tls;
use crate::metrics::Metrics;
use crate::proxy::guard::GuardConfig;
use crate::proxy::service::Proxy;
use crate::secret::{trim_line_end, Secret};
use crate::server::{self, Drained, Limits, Listener, Workers};
use crate::shutdown::Shutdown;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS set-up (CA file, client certificate) failed.
    #[error("{0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {address}: {}", bind_reason(source, option))]
    Bind {
        /// The address as configured.
        address: String,
        /// The command-line option that chooses another address (`--listen`, `--admin`).
        option: &'static str,
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
    /// The bound admin address (port 0 resolved); `None` when `admin.address` is off.
    pub admin_addr: Option<SocketAddr>,
    /// The proxy's Console credential (token cache or Basic), for status and tests.
    pub credentials: Credentials,
    /// The proxy's metrics.
    pub metrics: Arc<Metrics>,
    shutdown: Shutdown,
    finished: JoinHandle<Drained>,
}

impl ProxyHandle {
    /// Shuts down gracefully (see the module documentation) and waits until done.
    pub async fn stop(self) -> Drained {
        self.stop_because("stopped by its owner").await
    }

    /// Like [`ProxyHandle::stop`], with `reason` (such as `"SIGINT"`) as what the log and
    /// readiness say began the shutdown.
    pub async fn stop_because(self, reason: &'static str) -> Drained {
        self.shutdown.begin(reason);
        self.wait().await
    }

    /// Begins the graceful shutdown without waiting.
    pub fn begin_stop(&self) {
        self.shutdown.begin("stopped by its owner");
    }

    /// The switch that begins the shutdown: signals, the admin listener and
    /// [`ProxyHandle::stop`] share it.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Waits until a shutdown, begun by anyone, has finished.
    pub async fn wait(self) -> Drained {
        self.finished.await.unwrap_or(Drained::TimedOut)
    }
}

/// Why a bind failed; an address in use gets the usual cause and what to do about it.
/// (A unix socket in use is explained where it is found, in [`crate::server`].)
fn bind_reason(source: &std::io::Error, option: &str) -> String {
    if source.kind() == std::io::ErrorKind::AddrInUse && source.raw_os_error().is_some() {
        return format!(
            "the address is in use (another process uses it: stop it or choose another \
             address with {option})"
        );
    }
    source.to_string()
}

/// What the shutdown task stops, in order.
struct Running {
    shutdown: Shutdown,
    shutdown_delay: Duration,
    stop_server: watch::Sender<bool>,
    server: JoinHandle<Drained>,
    credentials: Credentials,
    driver: JoinHandle<()>,
    logout_on_exit: bool,
    stop_admin: watch::Sender<bool>,
    admin: Option<JoinHandle<()>>,
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
    let client = ConsoleClient::new(&config.console, forward_tls.clone());
    let credentials =
        Credentials::from_config(config).map_err(|err| StartError::Setup(err.to_string()))?;

    let listener = Listener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Bind {
            address: describe_address(&config.listen.address),
            option: "--listen",
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

    let metrics = Arc::new(Metrics::new());
    credentials.set_observer(metrics.clone());
    let proxy = proxy.with_metrics(Arc::clone(&metrics));
    let workers = start_workers(config, proxy, &forward_tls)?;
    let admin_listener = bind_admin(config).await?;
    let admin_addr = admin_listener.as_ref().map(|(_, bound)| *bound);
    let shutdown = Shutdown::new();

    log_start(config, addr, admin_addr);
    let driver = credentials.spawn_driver();
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        server::serve(listener, workers, limits, shutdown).await
    });

    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin = admin_listener.map(|(listener, bound)| {
        let admin = admin_endpoints(config, bound, addr, &credentials, &metrics, &shutdown);
        tokio::spawn(admin::serve(listener, admin, stopped_future(admin_stopped)))
    });
    let running = Running {
        shutdown: shutdown.clone(),
        shutdown_delay: config.listen.shutdown_delay,
        stop_server: stop,
        server,
        credentials: credentials.clone(),
        driver,
        logout_on_exit: config.auth.logout_on_exit,
        stop_admin,
        admin,
    };

    Ok(ProxyHandle {
        addr,
        admin_addr,
        credentials,
        metrics,
        shutdown,
        finished: tokio::spawn(shut_down_when_asked(running)),
    })
}

/// Starts `listen.workers` worker threads. The first keeps the Console client `proxy` was
/// built with; each other gets one of its own, so that every worker has its own pool.
fn start_workers(
    config: &Config,
    proxy: Proxy,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Workers, StartError> {
    let others: Vec<Proxy> = (1..config.listen.workers)
        .map(|_| proxy.with_client(ConsoleClient::new(&config.console, tls.clone())))
        .collect();
    let proxies = std::iter::once(proxy).chain(others).collect();
    Workers::start(proxies).map_err(|err| {
        StartError::Setup(format!(
            "cannot start the worker threads: {err}; lower listen.workers or raise the \
             process's thread limit"
        ))
    })
}

/// Binds the admin listener, unless `admin.address` is off. Any address is allowed:
/// the endpoints that reveal or change something answer loopback peers only.
async fn bind_admin(config: &Config) -> Result<Option<(TcpListener, SocketAddr)>, StartError> {
    let Some(address) = config.admin.address else {
        return Ok(None);
    };
    let bind_error = |source| StartError::Bind {
        address: format!("{address} (admin.address)"),
        option: "--admin",
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok(Some((listener, bound)))
}

/// The admin endpoints; `bound` is the admin listener's address, `listen` the proxy's.
fn admin_endpoints(
    config: &Config,
    bound: SocketAddr,
    listen: Option<SocketAddr>,
    credentials: &Credentials,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Arc<Admin> {
    let guard = GuardConfig::new(&config.listen, Some(bound), None, ClientLogins::Emulate);
    let info = StaticInfo {
        console_url: config.console.url.base(),
        project: config.console.project.clone(),
        auth_method: auth_method_name(config.auth.method),
        username: config.auth.username.clone(),
        listen_address: listen.map_or_else(
            || describe_address(&config.listen.address),
            |a| a.to_string(),
        ),
    };
    Arc::new(Admin::new(
        bound,
        guard,
        config.admin.enable_quit,
        info,
        credentials.clone(),
        Arc::clone(metrics),
        shutdown.clone(),
    ))
}

async fn stopped_future(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Waits for the shutdown to begin, then stops everything in order.
async fn shut_down_when_asked(running: Running) -> Drained {
    let reason = running.shutdown.begun().await;
    tracing::info!(
        reason,
        shutdown_delay_s = running.shutdown_delay.as_secs_f64(),
        "shutting down: readiness is now 503; still serving for listen.shutdown_delay"
    );
    tokio::time::sleep(running.shutdown_delay).await;

    tracing::info!("no longer accepting connections; letting requests in flight finish");
    let _ = running.stop_server.send(true);
    let drained = running.server.await.unwrap_or(Drained::TimedOut);
    // A drain cut short was announced by the server, with how many connections it cut.
    if drained == Drained::Complete {
        tracing::info!("all requests finished");
    }

    // The driver stops first, so no new token appears; the last one is logged out after
    // the drain, when no request can use it any more.
    running.credentials.shutdown();
    let _ = running.driver.await;
    if running.logout_on_exit {
        if let Err(error) = running.credentials.logout().await {
            tracing::warn!(%error, "logging the token out failed");
        }
    }

    let _ = running.stop_admin.send(true);
    if let Some(admin) = running.admin {
        let _ = admin.await;
    }
    tracing::info!("stopped");
    drained
}

/// The `run` command: serve until SIGTERM, SIGINT or `POST /quitquitquit`, then shut
/// down gracefully and exit 0. A second signal exits at once.
pub async fn run(config: Config) -> ExitCode {
    // Installed before anything starts, so that an early SIGTERM is a graceful shutdown
    // too, not the default disposition that kills the process.
    let mut signals = Signals::install();
    let handle = match start(&config).await {
        Ok(handle) => handle,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            eprintln!("pcce-proxy: {err}");
            return ExitCode::from(1);
        }
    };
    spawn_sighup(handle.credentials.clone());

    let shutdown = handle.shutdown().clone();
    let mut seen = 0;
    tokio::select! {
        name = signals.next() => {
            seen = 1;
            shutdown.begin(name);
        }
        _ = shutdown.begun() => {}
    }
    tokio::spawn(async move {
        loop {
            let name = signals.next().await;
            seen += 1;
            if seen >= 2 {
                tracing::warn!(signal = name, "second signal: exiting at once");
                crate::log_writer::flush();
                std::process::exit(1);
            }
            tracing::info!(
                signal = name,
                "already shutting down; a second signal exits at once"
            );
        }
    });

    handle.wait().await;
    ExitCode::SUCCESS
}

/// SIGTERM and SIGINT, as one stream.
struct Signals {
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "cannot handle SIGTERM and SIGINT");
                None
            }
        };
        Signals { streams }
    }

    /// The name of the next signal; never returns when the handlers are missing.
    async fn next(&mut self) -> &'static str {
        let Some((term, int)) = &mut self.streams else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
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
    let value = trim_line_end(content.expose());
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

fn log_start(config: &Config, addr: Option<SocketAddr>, admin: Option<SocketAddr>) {
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
    if config.listen.allowed_hosts.iter().any(|host| host == "*") {
        tracing::warn!(
            "listen.allowed_hosts contains \"*\": any Host is accepted, which turns off the \
             defence against DNS rebinding; a web page can then reach the proxy through a \
             name of its own; list the names clients use instead"
        );
    }
    tracing::info!(
        listen.address = %listen,
        listen.workers = config.listen.workers,
        console.url = %console.url.base(),
        console.project = console.project.as_deref().unwrap_or(""),
        console.trust = trust,
        auth.method = auth_method_name(config.auth.method),
        auth.username = %config.auth.username,
        admin.address = %admin.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        "pcce-proxy listening"
    );
}
