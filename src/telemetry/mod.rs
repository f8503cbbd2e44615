//! Logging: one `tracing` subscriber writing to stderr, as text or as JSON lines.
//!
//! Stdout is kept for a command's own output (`pcce-proxy token` prints only the token).
//! The proxy's own events carry data in fields; no module ever logs a header map, a
//! request or a credential whole.
//!
//! The libraries are another matter: at `trace`, rustls dumps whole handshake messages
//! (session tickets and resumption identities included) and h2 traces every frame and
//! stream it handles. None of that is needed to run the proxy, and a credential proxy
//! cannot vouch for what a library version prints, so events from other crates are
//! capped at `debug` whatever level is asked for; only `pcce_proxy` targets go to
//! `trace`. Records of the `log` crate (rustls, reqwest) arrive as events under their
//! module path and are capped alike.

mod format;

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use format::{LineFormat, Shape};

use crate::config::LogFormat;
use crate::log_writer::{self, BufferedStderr};

/// The most verbose level other crates may log at.
const DEPENDENCY_CAP: Level = Level::DEBUG;

/// Installs the global subscriber. `level` is a filter directive such as `info` or
/// `pcce_proxy=debug`; it was validated with the configuration. Calling it twice (as
/// tests may) leaves the first subscriber in place.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = filter.and(filter_fn(within_cap));
    // Colours only for a person at a terminal; a file or a log pipeline gets plain text.
    let ansi = std::io::stderr().is_terminal();
    let shape = match format {
        LogFormat::Text => Shape::Text,
        LogFormat::Json => Shape::Json,
    };
    let layer = fmt::layer()
        .with_writer(BufferedStderr)
        .with_ansi(ansi && shape == Shape::Text)
        .event_format(LineFormat::new(shape));
    let installed = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
    if installed.is_ok() {
        log_writer::flush_on_panic();
    }
}

/// Whether an event or span may be logged at all: the proxy's own at any level, other
/// crates' up to [`DEPENDENCY_CAP`].
fn within_cap(metadata: &Metadata<'_>) -> bool {
    is_own(metadata.target()) || *metadata.level() <= DEPENDENCY_CAP
}

fn is_own(target: &str) -> bool {
    target == "pcce_proxy" || target.starts_with("pcce_proxy::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxy_itself_logs_at_trace() {
        assert!(is_own("pcce_proxy"));
        assert!(is_own("pcce_proxy::proxy::service"));
        for other in [
            "h2::codec",
            "rustls::client::hs",
            "hyper_util",
            "pcce_proxyx",
        ] {
            assert!(!is_own(other), "{other}");
        }
        assert!(Level::TRACE > DEPENDENCY_CAP && Level::INFO <= DEPENDENCY_CAP);
    }
}
