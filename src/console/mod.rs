//! Everything about reaching the Console: TLS trust, connections (direct or through an
//! egress proxy), and the proxy's own login calls.
//!
//! - [`tls`] decides what is trusted (system roots and `ca_file`, pins, or nothing) and
//!   builds the `rustls` configurations; its verifier's refusals name the certificate's
//!   fingerprint and the setting that would fix them.
//! - [`connect`] dials the configured Console (through the egress proxy when one
//!   applies); [`pool`] is the client that forwards requests over those connections,
//!   one per server worker.
//! - [`api_client`] is the client for logins, renewals and probes, with the same trust
//!   and egress, and never following redirects.
//! - [`session`] makes those calls and reads the Console's answers; [`login`] turns them
//!   into the password and certificate logins the token cache drives.
//!
//! Every failure to reach the Console is classified as a [`connect::ConnectErrorKind`],
//! which the request path maps to `console_unreachable` or `console_tls`.

pub mod api_client;
pub mod connect;
pub mod login;
pub mod pool;
pub mod session;
pub mod tls;
