//! The request path: guards, rewrite, credential, forward, retry on 401, response.

pub mod guard;
pub mod rewrite;
pub mod target;
