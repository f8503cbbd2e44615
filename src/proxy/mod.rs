//! The request path: guards, rewrite, credential, forward, retry on 401, response.
//!
//! [`service`] runs the steps in order; [`guard`], [`target`] and [`rewrite`] are the
//! pure decisions and transformations it applies; [`emulate`] answers clients' own login
//! calls; [`body`] streams (and, for a replay, records) bodies; [`error`] renders every
//! answer the proxy gives on its own.

pub mod body;
pub mod emulate;
pub mod error;
pub mod guard;
pub mod rewrite;
pub mod service;
pub mod target;
