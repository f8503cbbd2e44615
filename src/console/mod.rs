//! Everything about reaching the Console: TLS trust, connections (direct or through an
//! egress proxy), and the proxy's own login calls.
