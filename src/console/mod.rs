//! Everything about reaching the Console: TLS trust, connections (direct or through an
//! egress proxy), and the proxy's own login calls.
//!
//! - [`tls`] decides what is trusted (system roots and `ca_file`, pins, or nothing) and
//!   builds the `rustls` configurations; its verifier's refusals name the certificate's
//!   fingerprint and the setting that would fix them.
//! - [`connect`] dials the configured Console (through the egress proxy when one
//!   applies) and builds the pooled client that forwards requests.
//! - [`api_client`] is the client for logins, renewals and probes, with the same trust
//!   and egress, and never following redirects.
//! - [`logout`] logs the proxy's token out when it stops, if configured to.
//!
//! Every failure to reach the Console is classified as a [`connect::ConnectErrorKind`],
//! which the request path maps to `console_unreachable` or `console_tls`.

pub mod api_client;
pub mod connect;
pub mod login;
pub mod logout;
pub mod tls;
