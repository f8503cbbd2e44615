//! Logging: one `tracing` subscriber writing to stderr, as text or as JSON lines.
//!
//! Stdout is kept for a command's own output (`pcce-proxy token` prints only the token).
//! Events carry data in fields; no module ever logs a header map, a request or a
//! credential whole, so nothing here needs to filter secrets out.

use std::io::IsTerminal;

use tracing_subscriber::fmt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is a filter directive such as `info` or
/// `pcce_proxy=debug`; it was validated with the configuration. Calling it twice (as
/// tests may) leaves the first subscriber in place.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal; a file or a log pipeline gets plain text.
    let ansi = std::io::stderr().is_terminal();
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
