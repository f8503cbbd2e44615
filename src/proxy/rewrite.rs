//! Rewriting a request on its way to the Console, and a response on its way back.
//!
//! Everything here is pure and runs on every request. The rule throughout is to change
//! as little as possible: the client's path and query reach the Console byte for byte
//! behind the Console URL's prefix, with only the tenant parameter added or replaced;
//! only the headers that belong to one connection, or carry the client's credentials,
//! are dropped; and a `Location` is rewritten only when it points back into the Console.
//!
//! Query parameters are recognised the way the Console's Go server reads them: pieces
//! separated by `&`, the key being what comes before the first `=`, percent-decoded.
//! Keys are case-sensitive, so `Project=x` is not the tenant parameter while `%70roject=x`
//! is. A `+` can never be part of the word `project`, so whether it would decode to a
//! space does not matter here.

use std::net::Ipv6Addr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::target::{split_authority, split_target};
use crate::config::{ConsoleUrl, ProjectMode};

/// Everything but the unreserved characters of RFC 3986 (`A-Za-z0-9-._~`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Whether a byte can appear in an [`encode_project`] result.
fn is_encoded_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'%' | b'-' | b'.' | b'_' | b'~')
}

/// The query key the Console reads the tenant from.
const PROJECT_KEY: &[u8] = b"project";

/// Percent-encodes a tenant name for the `project` parameter: every byte but the
/// unreserved characters is encoded, so a space becomes `%20` and `&` becomes `%26`.
///
/// Do it once at start-up and pass the result to [`forward_path_and_query`].
pub fn encode_project(name: &str) -> String {
    utf8_percent_encode(name, NOT_UNRESERVED).to_string()
}

/// The path and query sent to the Console: `prefix` followed by the client's raw target,
/// both byte for byte, with the tenant parameter applied.
///
/// `project` is the tenant already encoded by [`encode_project`]. Nothing is added when
/// `add_project` is false (authentication endpoints) or `project` is `None`. Otherwise,
/// with [`ProjectMode::Add`], a target that names any `project` parameter (even `project=`
/// or a bare `project`) is left as it is; with [`ProjectMode::Replace`], every client
/// `project` parameter is removed, the other parameters keeping their bytes and order.
/// Ours goes last: `?project=x` when there is no query or an empty one, `project=x` when
/// the query ends in `&`, else `&project=x`.
pub fn forward_path_and_query(
    prefix: &str,
    raw: &str,
    project: Option<&str>,
    mode: ProjectMode,
    add_project: bool,
) -> String {
    let project = project.filter(|_| add_project);
    let extra = project.map_or(0, |p| p.len() + "&project=".len());
    let mut out = String::with_capacity(prefix.len() + raw.len() + extra);
    out.push_str(prefix);
    let Some(project) = project else {
        out.push_str(raw);
        return out;
    };
    debug_assert!(
        project.bytes().all(is_encoded_byte),
        "project must be encoded"
    );

    let (path, query) = split_target(raw);
    let query_start = match (mode, query) {
        (ProjectMode::Add, Some(query)) if names_project(query) => {
            out.push_str(raw);
            return out;
        }
        (ProjectMode::Replace, Some(query)) => {
            out.push_str(path);
            out.push('?');
            let start = out.len();
            push_without_project(&mut out, query);
            Some(start)
        }
        _ => {
            out.push_str(raw);
            query.map(|q| out.len() - q.len())
        }
    };
    push_project(&mut out, query_start, project);
    out
}

/// Appends our parameter after a query that starts at `query_start` in `out` (`None`
/// when the target has no `?`), with the separator the query needs.
fn push_project(out: &mut String, query_start: Option<usize>, project: &str) {
    match query_start {
        None => out.push('?'),
        Some(start) if out.len() == start || out.ends_with('&') => {}
        Some(_) => out.push('&'),
    }
    out.push_str("project=");
    out.push_str(project);
}

/// Copies the query's `&`-separated pieces except the `project` ones, joined by `&`.
/// Without a project piece the copy is byte for byte the query.
fn push_without_project(out: &mut String, query: &str) {
    let mut first = true;
    for piece in query.split('&').filter(|piece| !is_project_piece(piece)) {
        if !first {
            out.push('&');
        }
        out.push_str(piece);
        first = false;
    }
}

/// Whether any parameter of the query is `project`.
fn names_project(query: &str) -> bool {
    query.split('&').any(is_project_piece)
}

/// Whether one `key[=value]` piece is a `project` parameter: its key, percent-decoded
/// once, is exactly `project`.
fn is_project_piece(piece: &str) -> bool {
    let key = piece.split_once('=').map_or(piece, |(key, _)| key);
    // Every byte of "project" takes one to three raw bytes, so longer keys cannot match.
    key.len() >= PROJECT_KEY.len()
        && key.len() <= 3 * PROJECT_KEY.len()
        && percent_decode(key.as_bytes()).eq(PROJECT_KEY.iter().copied())
}

/// Hop-by-hop headers (RFC 9110, section 7.6.1), plus `Trailer` and `HTTP2-Settings`,
/// which also describe one connection only.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Request headers the Console must never see from the client: `Host` names the proxy,
/// and the credentials are replaced by the proxy's own.
static CLIENT_ONLY: [HeaderName; 4] = [
    header::HOST,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("x-redlock-auth"),
];

/// Removes from a client's request the hop-by-hop headers (and every header named in a
/// `Connection` value), `Host`, and the client's credentials (`Authorization`,
/// `Proxy-Authorization`, `x-redlock-auth`).
///
/// Call it before adding the proxy's own `Host` and credential, so that a client's
/// `Connection: authorization` cannot remove them.
pub fn strip_request_headers(headers: &mut HeaderMap) {
    strip_connection_named(headers);
    strip_listed(headers, |name| {
        HOP_BY_HOP.contains(name) || CLIENT_ONLY.contains(name)
    });
}

/// Removes from the Console's response the hop-by-hop headers and every header named in
/// a `Connection` value; every end-to-end header passes unchanged.
pub fn strip_response_headers(headers: &mut HeaderMap) {
    strip_connection_named(headers);
    strip_listed(headers, |name| HOP_BY_HOP.contains(name));
}

/// Removes every header whose name `listed` picks.
///
/// This runs twice per request. A message has a handful of distinct names and usually
/// none of the listed ones, so the names present are compared (cheap) instead of looking
/// each listed name up in the map (a hash and a probe each).
fn strip_listed(headers: &mut HeaderMap, listed: impl Fn(&HeaderName) -> bool) {
    while let Some(name) = headers.keys().find(|name| listed(name)).cloned() {
        headers.remove(&name);
    }
}

/// Removes the headers that `Connection` values name as connection options.
///
/// Options that are hop-by-hop headers anyway (`keep-alive`, as most servers send) and
/// options naming no header present (`close`) are skipped without parsing a name.
fn strip_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| {
            let hop_by_hop = HOP_BY_HOP
                .iter()
                .any(|name| name.as_str().as_bytes().eq_ignore_ascii_case(token));
            let present = std::str::from_utf8(token).is_ok_and(|t| headers.contains_key(t));
            !hop_by_hop && present
        })
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// The header carrying the request id to the Console and back in logs.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client `x-request-id` passed on.
const MAX_REQUEST_ID: usize = 128;

/// The client's `x-request-id`, when it is 1 to 128 characters of `[A-Za-z0-9._:-]`.
///
/// Only the first value counts. Otherwise the caller makes one with [`new_request_id`].
pub fn request_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(REQUEST_ID)?.as_bytes();
    let valid = (1..=MAX_REQUEST_ID).contains(&value.len())
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !valid {
        return None;
    }
    // Only ASCII was admitted, so the conversion always succeeds.
    std::str::from_utf8(value).ok()
}

/// A fresh request id: 16 random lowercase hex digits.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Rewrites a `Location` that points into the Console to a relative reference.
///
/// Applies when the value is an absolute `https://` URL without user-info, whose host
/// equals the Console's (ASCII case ignored; IPv6 in brackets, compared as addresses),
/// whose port equals the Console's (443 when none is written), and whose path starts with
/// the Console URL's prefix at a segment boundary. The result is the rest of the path
/// (at least `/`), then the query and fragment as they were: through the proxy it reaches
/// the same resource whatever address the client used. Anything else, including a rest
/// that would read as a network-path reference (`//host` or `/\host`), gives `None`
/// and the header is left as it is.
pub fn rewrite_location(value: &HeaderValue, console: &ConsoleUrl) -> Option<HeaderValue> {
    let location = value.as_bytes();
    let scheme = location.get(..b"https://".len())?;
    if !scheme.eq_ignore_ascii_case(b"https://") {
        return None;
    }
    let after_scheme = &location[b"https://".len()..];
    let authority_end = after_scheme
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(after_scheme.len());
    let (authority, rest) = after_scheme.split_at(authority_end);
    if !authority_is_console(authority, console) {
        return None;
    }
    let below = rest.strip_prefix(console.prefix.as_bytes())?;
    relative_reference(below)
}

/// Turns what follows the prefix into `/path?query#fragment`, refusing anything that is
/// not at a segment boundary or that a client would read as naming another host.
fn relative_reference(below: &[u8]) -> Option<HeaderValue> {
    // Browsers drop tabs and line breaks from URLs, so `/\t/host` would turn into the
    // network-path reference `//host`: such a value is left as the Console sent it.
    if below.iter().any(u8::is_ascii_control) {
        return None;
    }
    match below.first() {
        Some(b'/') => {
            if matches!(below.get(1), Some(b'/' | b'\\')) {
                return None;
            }
            HeaderValue::from_bytes(below).ok()
        }
        None | Some(b'?' | b'#') => {
            let mut relative = Vec::with_capacity(below.len() + 1);
            relative.push(b'/');
            relative.extend_from_slice(below);
            HeaderValue::from_bytes(&relative).ok()
        }
        Some(_) => None,
    }
}

/// Whether a URL's authority (`host`, `host:port`, `[v6]:port`) names the Console.
fn authority_is_console(authority: &[u8], console: &ConsoleUrl) -> bool {
    let Some((host, port)) = std::str::from_utf8(authority)
        .ok()
        .and_then(split_authority)
    else {
        return false;
    };
    port.unwrap_or(443) == console.port && same_host(host, &console.host)
}

/// Compares a URL's host with the Console's (which has no brackets): names and IPv4
/// addresses ignoring ASCII case, IPv6 addresses by value, so that two spellings of one
/// address match.
fn same_host(host: &str, console_host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => match (v6.parse::<Ipv6Addr>(), console_host.parse::<Ipv6Addr>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        },
        None => !console_host.contains(':') && host.eq_ignore_ascii_case(console_host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAAS: &str = "/us-1-123";

    fn add(prefix: &str, raw: &str) -> String {
        forward_path_and_query(prefix, raw, Some("team%20a"), ProjectMode::Add, true)
    }

    fn replace(prefix: &str, raw: &str) -> String {
        forward_path_and_query(prefix, raw, Some("team%20a"), ProjectMode::Replace, true)
    }

    #[test]
    fn project_names_are_encoded_except_unreserved_characters() {
        assert_eq!(encode_project("team a"), "team%20a");
        assert_eq!(encode_project("A-z.0_9~"), "A-z.0_9~");
        assert_eq!(encode_project("a&b=c+d/e?%"), "a%26b%3Dc%2Bd%2Fe%3F%25");
        assert_eq!(encode_project("café"), "caf%C3%A9");
        assert_eq!(encode_project(""), "");
    }

    #[test]
    fn path_and_query_pass_byte_for_byte_behind_the_prefix() {
        for raw in [
            "/api/v1/images",
            "/api/v1/a%2Fb",
            "/api/v1/a%20b+c",
            "/api//v1/./x",
            "/api/v1/caf%C3%A9",
            "/api/v1/x?a=1+2&b=%2F&c",
        ] {
            let out = forward_path_and_query(SAAS, raw, None, ProjectMode::Add, true);
            assert_eq!(out, format!("{SAAS}{raw}"));
            let out = forward_path_and_query("", raw, Some("p"), ProjectMode::Add, false);
            assert_eq!(out, raw);
        }
    }

    #[test]
    fn project_is_added_with_the_separator_the_query_needs() {
        let cases = [
            ("/p", "/p?project=team%20a"),
            ("/p?", "/p?project=team%20a"),
            ("/p?a=1", "/p?a=1&project=team%20a"),
            ("/p?a=1&", "/p?a=1&project=team%20a"),
            ("/p??limit=50", "/p??limit=50&project=team%20a"),
            ("/p?a=%2F+b&a=2", "/p?a=%2F+b&a=2&project=team%20a"),
            ("/p?Project=x", "/p?Project=x&project=team%20a"),
            ("/p?projects=x", "/p?projects=x&project=team%20a"),
            ("/p?a=project", "/p?a=project&project=team%20a"),
        ];
        for (raw, expected) in cases {
            assert_eq!(add("", raw), expected, "add {raw}");
            assert_eq!(replace("", raw), expected, "replace {raw}");
        }
        assert_eq!(add(SAAS, "/p?a"), "/us-1-123/p?a&project=team%20a");
    }

    #[test]
    fn add_mode_keeps_any_project_the_client_names() {
        for raw in [
            "/p?project=other",
            "/p?project=",
            "/p?project",
            "/p?a=1&project",
            "/p?%70roject=x",
            "/p?pro%6Aect=x",
            "/p?a=1&project=x&",
        ] {
            assert_eq!(add("", raw), raw, "{raw}");
        }
    }

    #[test]
    fn replace_mode_removes_every_client_project() {
        let cases = [
            ("/p?project=other", "/p?project=team%20a"),
            ("/p?project=", "/p?project=team%20a"),
            ("/p?project", "/p?project=team%20a"),
            ("/p?project=a&project=b", "/p?project=team%20a"),
            ("/p?a=1&project=x&b=2", "/p?a=1&b=2&project=team%20a"),
            ("/p?project=x&a=1", "/p?a=1&project=team%20a"),
            ("/p?a=1&project=x", "/p?a=1&project=team%20a"),
            ("/p?a=1&project=x&", "/p?a=1&project=team%20a"),
            ("/p?project=x&", "/p?project=team%20a"),
            ("/p?%70roject=x&Project=y", "/p?Project=y&project=team%20a"),
            ("/p??project=x", "/p??project=x&project=team%20a"),
            ("/p?a=%2F&&b+c=d", "/p?a=%2F&&b+c=d&project=team%20a"),
        ];
        for (raw, expected) in cases {
            assert_eq!(replace("", raw), expected, "{raw}");
        }
        assert_eq!(
            replace(SAAS, "/api/v1/x?project=y&limit=5"),
            "/us-1-123/api/v1/x?limit=5&project=team%20a"
        );
    }

    #[test]
    fn no_project_is_added_when_turned_off_or_unset() {
        let raw = "/api/v1/authenticate?project=x";
        for mode in [ProjectMode::Add, ProjectMode::Replace] {
            assert_eq!(forward_path_and_query("", raw, Some("p"), mode, false), raw);
            assert_eq!(
                forward_path_and_query(SAAS, raw, None, mode, true),
                "/us-1-123".to_owned() + raw
            );
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("test header name");
            map.append(
                name,
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn request_loses_hop_by_hop_host_and_client_credentials() {
        let mut map = headers(&[
            ("Host", "127.0.0.1:8083"),
            ("Authorization", "Bearer a"),
            ("Proxy-Authorization", "Basic b"),
            ("X-Redlock-Auth", "c"),
            ("Connection", "keep-alive, X-Custom-Hop"),
            ("Connection", "Upgrade"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "x"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAA"),
            ("x-custom-hop", "1"),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("Content-Length", "2"),
            ("x-request-id", "abc"),
        ]);
        strip_request_headers(&mut map);
        assert_eq!(
            names(&map),
            ["accept", "content-length", "content-type", "x-request-id"]
        );
    }

    #[test]
    fn response_loses_only_hop_by_hop_headers() {
        let mut map = headers(&[
            ("Connection", " close ,x-hop,,bad header"),
            ("x-hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Keep-Alive", "timeout=5"),
            ("Total-Count", "42"),
            ("Content-Disposition", "attachment"),
            ("Location", "/x"),
            ("Host", "kept.example"),
        ]);
        strip_response_headers(&mut map);
        assert_eq!(
            names(&map),
            ["content-disposition", "host", "location", "total-count"]
        );
    }

    #[test]
    fn client_request_ids_are_kept_only_when_safe_to_log() {
        let id = |value: &str| {
            let map = headers(&[("x-request-id", value)]);
            request_id(&map).map(str::to_owned)
        };
        assert_eq!(id("abc-DEF_1.2:3").as_deref(), Some("abc-DEF_1.2:3"));
        assert_eq!(id(&"a".repeat(128)), Some("a".repeat(128)));
        assert_eq!(id(&"a".repeat(129)), None);
        assert_eq!(id(""), None);
        assert_eq!(id("a b"), None);
        assert_eq!(id("a\"b"), None);
        assert_eq!(id("a/b"), None);
        assert_eq!(request_id(&HeaderMap::new()), None);

        let mut map = HeaderMap::new();
        map.insert(
            "x-request-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text"),
        );
        assert_eq!(request_id(&map), None);
    }

    #[test]
    fn new_request_ids_are_sixteen_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 16);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, b);
        let map = headers(&[("x-request-id", &a)]);
        assert_eq!(request_id(&map), Some(a.as_str()));
    }

    fn console(host: &str, port: u16, prefix: &str) -> ConsoleUrl {
        ConsoleUrl {
            host: host.to_owned(),
            port,
            explicit_port: port != 443,
            prefix: prefix.to_owned(),
        }
    }

    fn location(value: &str, console: &ConsoleUrl) -> Option<String> {
        let value = HeaderValue::from_str(value).expect("test location");
        let rewritten = rewrite_location(&value, console)?;
        Some(rewritten.to_str().expect("ascii").to_owned())
    }

    #[test]
    fn locations_into_the_console_become_relative() {
        let pcce = console("console.example", 8083, "");
        let cases = [
            (
                "https://console.example:8083/api/v1/x?a=1#f",
                "/api/v1/x?a=1#f",
            ),
            ("HTTPS://Console.Example:8083/api/v1/x", "/api/v1/x"),
            ("https://console.example:08083/a%2Fb", "/a%2Fb"),
            ("https://console.example:8083", "/"),
            ("https://console.example:8083?x", "/?x"),
            ("https://console.example:8083#top", "/#top"),
        ];
        for (value, expected) in cases {
            assert_eq!(location(value, &pcce).as_deref(), Some(expected), "{value}");
        }

        let saas = console("us-east1.cloud.twistlock.com", 443, SAAS);
        let cases = [
            (
                "https://us-east1.cloud.twistlock.com/us-1-123/api/v1/x",
                "/api/v1/x",
            ),
            (
                "https://us-east1.cloud.twistlock.com:443/us-1-123/api?q",
                "/api?q",
            ),
            ("https://us-east1.cloud.twistlock.com:/us-1-123/", "/"),
            ("https://us-east1.cloud.twistlock.com/us-1-123", "/"),
            ("https://us-east1.cloud.twistlock.com/us-1-123?a=b", "/?a=b"),
        ];
        for (value, expected) in cases {
            assert_eq!(location(value, &saas).as_deref(), Some(expected), "{value}");
        }
    }

    #[test]
    fn ipv6_console_locations_are_compared_by_address() {
        let v6 = console("fd00::1", 8083, "");
        assert_eq!(
            location("https://[fd00::1]:8083/x", &v6).as_deref(),
            Some("/x")
        );
        assert_eq!(
            location("https://[FD00:0::1]:8083/x", &v6).as_deref(),
            Some("/x")
        );
        assert_eq!(location("https://[fd00::2]:8083/x", &v6), None);
        assert_eq!(location("https://fd00::1:8083/x", &v6), None);
        let v4 = console("10.0.0.1", 8083, "");
        assert_eq!(location("https://[10.0.0.1]:8083/x", &v4), None);
    }

    #[test]
    fn other_locations_are_left_alone() {
        let saas = console("console.example", 443, SAAS);
        for value in [
            "/us-1-123/api/v1/x",
            "api/v1/x",
            "//console.example/us-1-123/x",
            "http://console.example/us-1-123/x",
            "https://other.example/us-1-123/x",
            "https://console.example.evil/us-1-123/x",
            "https://console.example:8443/us-1-123/x",
            "https://console.example:443x/us-1-123/x",
            "https://console.example:99999/us-1-123/x",
            "https://console.example:+443/us-1-123/x",
            "https://user@console.example/us-1-123/x",
            "https://console.example/us-1-1234/x",
            "https://console.example/US-1-123/x",
            "https://console.example/other/x",
            "https://console.example/us-1-123//evil.example/x",
            "https://console.example/us-1-123/\\evil.example",
            "https://console.example/us-1-123/\t/evil.example/x",
            "https://",
            "https:/",
            "",
            "https://[",
            "https://[::1",
            "ftp://console.example/us-1-123/x",
        ] {
            assert_eq!(location(value, &saas), None, "{value}");
        }
        let garbage =
            HeaderValue::from_bytes(b"https://console.example/us-1-123/\xff").expect("obs");
        assert!(rewrite_location(&garbage, &saas).is_some());
    }

    /// Query pieces that are not `project` parameters, without empty ones.
    fn other_pieces(query: &str) -> Vec<&str> {
        query
            .split('&')
            .filter(|p| !p.is_empty() && !is_project_piece(p))
            .collect()
    }

    /// Raw targets over the characters that matter to the rewrite, plus targets built
    /// from query pieces so that `project` keys, empty pieces and `&` at the end are common.
    fn target_strategy() -> impl Strategy<Value = String> {
        let piece = "((%70|%50|p|P)roject|[a-z%]{0,3})(=[a-z%+]{0,3})?";
        let structured = format!("/[a-z/]{{0,5}}(\\??\\?{piece}(&{{1,2}}{piece}){{0,4}}&?)?");
        prop_oneof![
            "/[a-fA-F0-9pjtz%/.?&=+~_-]{0,40}",
            proptest::string::string_regex(&structured).expect("valid regex"),
        ]
    }

    fn header_name() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "authorization",
            "proxy-authorization",
            "x-redlock-auth",
            "connection",
            "upgrade",
            "x-a",
            "accept",
        ])
    }

    /// Flips the case of each letter whose bit is set in `mask`.
    fn mixed_case(name: &str, mask: u64) -> String {
        let flip = |(i, c): (usize, char)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        };
        name.chars().enumerate().map(flip).collect()
    }

    const OURS: &str = "team%20a";
    const PREFIX: &str = "(/us-1-[0-9]{1,4})?";

    proptest! {
        #[test]
        fn add_mode_only_ever_appends_our_parameter(raw in target_strategy(), prefix in PREFIX) {
            let out = forward_path_and_query(&prefix, &raw, Some(OURS), ProjectMode::Add, true);
            let base = format!("{prefix}{raw}");
            let ours = ["?project=team%20a", "&project=team%20a", "project=team%20a"];
            let ok = out == base || ours.iter().any(|p| out == format!("{base}{p}"));
            prop_assert!(ok, "{out}");
            let (_, query) = split_target(&out);
            prop_assert!(query.is_some_and(names_project));
        }

        #[test]
        fn replace_mode_leaves_exactly_our_project(raw in target_strategy(), prefix in PREFIX) {
            let mode = ProjectMode::Replace;
            let out = forward_path_and_query(&prefix, &raw, Some(OURS), mode, true);
            let (path, query) = split_target(&raw);
            let (out_path, out_query) = split_target(&out);
            prop_assert_eq!(out_path, format!("{prefix}{path}"));
            let out_query = out_query.unwrap_or_default();
            let projects: Vec<&str> =
                out_query.split('&').filter(|p| is_project_piece(p)).collect();
            prop_assert_eq!(projects, vec!["project=team%20a"]);
            prop_assert!(out_query.ends_with("project=team%20a"));
            let query = query.unwrap_or_default();
            prop_assert!(!out_query.contains("&&") || query.contains("&&"));
            prop_assert_eq!(other_pieces(out_query), other_pieces(query));
        }

        #[test]
        fn stripped_requests_never_carry_client_credentials(
            names in proptest::collection::vec((header_name(), any::<u64>()), 0..8),
            listed in "[a-zA-Z, -]{0,30}",
        ) {
            let mut map = HeaderMap::new();
            for (name, case) in &names {
                let name = mixed_case(name, *case);
                let name = HeaderName::from_bytes(name.as_bytes()).expect("generated name");
                map.append(name, HeaderValue::from_static("v"));
            }
            let listed = HeaderValue::from_str(&listed).expect("generated value");
            map.append(header::CONNECTION, listed);
            strip_request_headers(&mut map);
            for name in CLIENT_ONLY.iter().chain(&HOP_BY_HOP) {
                prop_assert!(!map.contains_key(name));
            }
        }

        #[test]
        fn rewrite_location_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..60),
            prefix in "(/[a-z]{0,3})?",
        ) {
            let con = console("a", 443, &prefix);
            let mut value = b"https://a".to_vec();
            value.extend(bytes.iter().filter(|&&b| b >= 0x20 && b != 0x7f));
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                if let Some(out) = rewrite_location(&value, &con) {
                    prop_assert!(out.as_bytes().starts_with(b"/"));
                    prop_assert!(!matches!(out.as_bytes().get(1), Some(b'/' | b'\\')));
                }
            }
        }
    }
}
