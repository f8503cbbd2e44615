//! The threads that serve client connections: one single-threaded runtime each.
//!
//! The accept loop hands every accepted connection to the worker with the fewest open
//! connections, and the connection lives on that worker until it closes. Each worker has
//! its own [`Proxy`], and so its own pool of Console connections, so a request, the
//! Console connection that carries it, and every task they wake stay on one thread: no
//! wake-up crosses threads and no pool lock is contended. This is how nginx's worker
//! processes are shaped, and it measured cheaper per request than one multi-threaded
//! runtime whose threads steal each other's tasks (see `docs/performance.md`).
//!
//! What the workers share is made for it: the token cache, the metrics, the connection
//! limit and the replay budget are thread-safe, and the login driver, the admin listener
//! and the accept loop run on the process's main runtime.
//!
//! A worker's thread lives until the server stops it: a task that panics is caught by
//! its runtime and ends alone.
//!
//! Known limit: a connection stays on the worker that took it, so a few long, busy
//! connections can load one worker more than another; new connections then go to the
//! other one. Moving a connection between threads would cost more than it saves for the
//! many short requests this proxy carries.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::proxy::service::Proxy;

/// The running workers. [`Workers::stop`] ends them after the drain; dropping this
/// stops them too, without waiting.
pub struct Workers {
    workers: Vec<Worker>,
}

/// One worker thread and what the accept loop needs to give it a connection.
struct Worker {
    handle: Handle,
    proxy: Proxy,
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    /// Completes (with an error) when the thread has dropped its runtime.
    gone: oneshot::Receiver<()>,
}

/// A connection given to a worker; it counts as open on that worker until dropped.
pub(super) struct Assigned {
    /// Where the connection's task must be spawned.
    pub(super) handle: Handle,
    /// The worker's own handler, with the worker's Console connection pool.
    pub(super) proxy: Proxy,
    /// Keeps the connection counted until the task that serves it ends.
    pub(super) counted: OpenConnection,
}

/// One open connection of a worker, uncounted on drop (also when its task is aborted).
pub(super) struct OpenConnection {
    open: Arc<AtomicUsize>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts one worker thread for each handler in `proxies`. Give each its own Console
    /// client ([`Proxy::with_client`]): a pool is meant to be used by one worker.
    ///
    /// # Errors
    ///
    /// Fails when the system refuses a thread or a runtime.
    pub fn start(proxies: Vec<Proxy>) -> io::Result<Self> {
        if proxies.is_empty() {
            return Err(io::Error::other("at least one worker is needed"));
        }
        let mut workers = Workers {
            workers: Vec::with_capacity(proxies.len()),
        };
        for (index, proxy) in proxies.into_iter().enumerate() {
            workers.workers.push(Worker::start(index, proxy)?);
        }
        Ok(workers)
    }

    /// Stops every worker and waits, until `deadline` at the latest, for their threads to
    /// drop what was left on them, so that nothing they log is lost at exit.
    pub(super) async fn stop(mut self, deadline: Instant) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        let all_gone = async {
            for worker in &mut self.workers {
                let _ = (&mut worker.gone).await;
            }
        };
        if tokio::time::timeout_at(deadline, all_gone).await.is_err() {
            tracing::debug!("worker threads still finishing at exit");
        }
    }

    /// Chooses the worker with the fewest open connections for a new one.
    pub(super) fn assign(&self) -> Assigned {
        let worker = self
            .workers
            .iter()
            .min_by_key(|worker| worker.open.load(Ordering::Relaxed))
            .expect("the server starts at least one worker");
        worker.open.fetch_add(1, Ordering::Relaxed);
        Assigned {
            handle: worker.handle.clone(),
            proxy: worker.proxy.clone(),
            counted: OpenConnection {
                open: worker.open.clone(),
            },
        }
    }
}

impl Worker {
    fn start(index: usize, proxy: Proxy) -> io::Result<Self> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (going, gone) = oneshot::channel::<()>();
        let (started, handle) = std::sync::mpsc::sync_channel(1);
        // The runtime is built, run and dropped on its own thread. Built here and moved
        // into a thread that could not be spawned, it would be dropped inside the main
        // runtime, which panics.
        thread::Builder::new()
            .name(format!("pcce-worker-{index}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = started.send(Err(err));
                        return;
                    }
                };
                let _ = started.send(Ok(runtime.handle().clone()));
                // Either a stop or the server's end (the sender dropped) ends the thread.
                // Dropping the runtime drops the tasks still on it (an HTTP/2 stream cut
                // off by the drain writes its access-log line then) and closes the pooled
                // Console connections.
                let _ = runtime.block_on(stopped);
                drop(runtime);
                drop(going);
            })?;
        let handle = handle
            .recv()
            .map_err(|_| io::Error::other("a worker thread ended before its runtime started"))??;
        Ok(Worker {
            handle,
            proxy,
            open: Arc::new(AtomicUsize::new(0)),
            stop: Some(stop),
            gone,
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn counts(workers: &Workers) -> Vec<usize> {
        let open = |worker: &Worker| worker.open.load(Ordering::Relaxed);
        workers.workers.iter().map(open).collect()
    }

    /// A handler for a Console that is never reached: these tests only place tasks.
    fn proxy() -> Proxy {
        use crate::config::{raw::RawConfig, validate::validate};
        use crate::console::tls;
        use crate::proxy::guard::GuardConfig;

        let text = "[console]\nurl = \"https://console.test:8083\"\n\
                    [auth]\nusername = \"u\"\npassword = \"p\"\n";
        let raw: RawConfig = toml::from_str(text).expect("test TOML is valid");
        let config = validate(raw, &[]).expect("valid configuration");
        let tls = tls::client_config(&config.console, tls::Alpn::Auto, None).expect("tls");
        let client = crate::proxy::service::ConsoleClient::new(&config.console, tls);
        let credentials = crate::auth::Credentials::from_config(&config).expect("credentials");
        let guard = GuardConfig::new(&config.listen, None, None, config.auth.client_logins);
        Proxy::new(&config, guard, client, credentials, None).expect("proxy")
    }

    fn idle_workers(count: usize) -> Workers {
        let proxies = (0..count).map(|_| proxy()).collect();
        Workers::start(proxies).expect("workers start")
    }

    #[test]
    fn new_connections_go_to_the_least_busy_worker_and_are_uncounted_when_done() {
        let workers = idle_workers(2);

        let first = workers.assign();
        let second = workers.assign();
        let third = workers.assign();
        assert_eq!(counts(&workers), [2, 1]);

        drop(first);
        drop(third);
        assert_eq!(counts(&workers), [0, 1]);
        let fourth = workers.assign();
        assert_eq!(counts(&workers), [1, 1]);
        drop((second, fourth));
        assert_eq!(counts(&workers), [0, 0]);
    }

    #[test]
    fn a_connection_task_runs_on_its_worker_thread() {
        let workers = idle_workers(1);
        let assigned = workers.assign();
        let (tx, rx) = std::sync::mpsc::channel();
        assigned.handle.spawn(async move {
            let _ = tx.send(thread::current().name().map(str::to_owned));
        });
        let name = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the worker runs the task");
        assert_eq!(name.as_deref(), Some("pcce-worker-0"));
    }

    #[test]
    fn a_panicking_connection_task_leaves_its_worker_serving() {
        let workers = idle_workers(1);
        let panicked = workers.assign();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let outcome = runtime.block_on(panicked.handle.spawn(async { panic!("on purpose") }));
        assert!(outcome.expect_err("the task panicked").is_panic());
        drop(panicked);

        let next = workers.assign();
        let (tx, rx) = std::sync::mpsc::channel();
        next.handle.spawn(async move {
            let _ = tx.send(());
        });
        let served = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert!(
            served.is_ok(),
            "the worker stopped running tasks after a panic"
        );
    }

    #[tokio::test]
    async fn stopping_waits_until_what_was_left_on_the_workers_is_dropped() {
        struct SaysWhenDropped(std::sync::mpsc::Sender<()>);
        impl Drop for SaysWhenDropped {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }

        let workers = idle_workers(2);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let left = SaysWhenDropped(tx.clone());
            workers.assign().handle.spawn(async move {
                let _left = left;
                std::future::pending::<()>().await;
            });
        }
        drop(tx);

        workers.stop(Instant::now() + Duration::from_secs(30)).await;
        assert_eq!(rx.try_iter().count(), 2, "tasks still alive after stop");
    }
}
