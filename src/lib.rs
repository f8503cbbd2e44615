//! pcce-proxy: a local authenticating reverse proxy for the Prisma Cloud Compute Console.
//!
//! Clients speak plain, credential-free HTTP to the proxy; the proxy guards the listener,
//! rewrites each request (tenant parameter, credential, hop-by-hop headers) and forwards it
//! over verified TLS to the Console, streaming bodies both ways.
//!
//! The modules follow one request's path and the things it needs:
//!
//! - [`cli`] and [`config`]: the command line and the layered, validated configuration.
//! - [`secret`]: a string type that never prints itself, and where passwords come from.
//! - [`console`]: reaching the Console: TLS trust, connections, the proxy's own logins.
//! - [`token`]: the cached credential, its expiry rules and the single login driver.
//! - [`auth`]: the credential requests carry, whichever method: a token or Basic.
//! - [`proxy`]: the request path: guards, rewrite, forward, retry on 401, errors.
//! - [`server`]: listeners, the worker threads that serve connections, connection limits
//!   and graceful shutdown.
//! - [`admin`]: the admin listener: health, readiness, metrics, status, quit.
//! - [`metrics`]: the Prometheus metrics and the request path's hooks into them.
//! - [`shutdown`]: the switch that signals and `/quitquitquit` share.
//! - [`telemetry`]: logging set-up and line formats; [`log_writer`]: its buffered,
//!   ordered stderr output.
//! - [`commands`]: the `run`, `demo`, `check`, `token` and `health` commands.
//! - [`sim`]: a simulated Console, used by `demo` and the tests; it depends on nothing else
//!   in the crate, so it cannot bend to fit the proxy.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod log_writer;
pub mod metrics;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod sim;
pub mod telemetry;
pub mod token;
