//! What a stopped in-process proxy leaves behind: its worker threads and its Console
//! connections must go with it. One test alone in this binary, so the threads it counts
//! are its own.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// Threads of this process whose name starts with `pcce-worker`.
fn worker_threads() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc is mounted");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("pcce-worker"))
        .count()
}

/// Established TCP connections of this process's network namespace towards `port`.
fn connections_to(port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[2].ends_with(&port) && fields[3] == "01"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_proxies_leave_no_worker_threads_or_console_connections_behind() {
    let console = console().await;
    let files = Files::new();
    let port = console.addr().port();
    let env = [("PCCE_PROXY_LISTEN__WORKERS", "3")];
    let config = config_for(&console, &files, &[], &env);

    for _ in 0..5 {
        let proxy = start_proxy(&config).await;
        // A thread takes its name once it runs.
        assert!(eventually(WAIT, || worker_threads() == 3).await);
        for _ in 0..3 {
            assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
        }
        proxy.handle.stop().await;
    }

    let gone = eventually(WAIT, || worker_threads() == 0).await;
    assert!(gone, "{} worker threads left", worker_threads());
    let closed = eventually(WAIT, || connections_to(port) == 0).await;
    assert!(
        closed,
        "{} connections to the Console left",
        connections_to(port)
    );
}
