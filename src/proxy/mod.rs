//! The request path: guards, rewrite, credential, forward, retry on 401, response.
