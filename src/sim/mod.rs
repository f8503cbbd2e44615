//! A simulated Console, used by `pcce-proxy demo` and by the tests.
