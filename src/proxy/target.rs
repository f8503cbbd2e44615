//! Request targets: splitting, `..` detection, normalisation and classification.
//!
//! The proxy forwards the client's target byte for byte, but it decides which rule applies
//! (allowed path, client login endpoint) on a normalised copy: percent-decoded once, with
//! repeated slashes and `.` segments removed and ASCII letters lowercased. That copy is
//! what the Console's router sees after its own decoding, so `/api/v1//logout` and
//! `/api/v1/%6cogout` are recognised for what they are. A `..` segment is never resolved:
//! [`has_dot_dot`] finds it first and the request is refused, because resolving it would
//! let a target climb out of the Console URL's prefix.
//!
//! Backslashes: [`has_dot_dot`] treats `\` (raw or `%5C`) as a separator too, so `..\`
//! is refused in case a server between the proxy and the Console reads it as `../`.
//! [`normalize`] keeps `\` as an ordinary character, as the Console does, so that
//! `/api\x` is not mistaken for a path under `/api/`.

use percent_encoding::percent_decode;

/// Splits a request target at its first `?` into the path and the query.
///
/// `/p??limit=50` gives the query `?limit=50`; `/p?` gives `Some("")`; `/p` gives `None`.
pub fn split_target(path_and_query: &str) -> (&str, Option<&str>) {
    match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    }
}

/// Whether a path has a `..` segment, raw or once percent-decoded.
///
/// Segments are separated by `/`, `\`, `%2F` and `%5C` (either case), so `..%2F..`,
/// `%2e%2e` and `.%2E\` are all found. Pass the path only: the query is not inspected.
pub fn has_dot_dot(raw_path: &str) -> bool {
    // Decoding once never merges two raw segments, so checking the decoded bytes
    // also covers the raw ones.
    let mut dots = 0usize;
    let mut other = false;
    for byte in percent_decode(raw_path.as_bytes()) {
        match byte {
            b'/' | b'\\' => {
                if dots == 2 && !other {
                    return true;
                }
                dots = 0;
                other = false;
            }
            b'.' => dots += 1,
            _ => other = true,
        }
    }
    dots == 2 && !other
}

/// The copy of a path used for rule decisions: percent-decoded once (invalid escapes
/// kept as they are), repeated slashes collapsed, `.` segments removed, ASCII letters
/// lowercased. Always starts with `/`; a trailing slash (or trailing `/.`) is kept as `/`.
///
/// Call it only when [`has_dot_dot`] is false: `..` segments are kept, not resolved.
/// Bytes that do not form UTF-8 after decoding become U+FFFD.
pub fn normalize(raw_path: &str) -> String {
    let mut out = Vec::with_capacity(raw_path.len() + 1);
    out.push(b'/');
    let mut segment_start = 1;
    for byte in percent_decode(raw_path.as_bytes()) {
        if byte == b'/' {
            end_segment(&mut out, segment_start);
            segment_start = out.len();
        } else {
            out.push(byte.to_ascii_lowercase());
        }
    }
    if out[segment_start..] == *b"." {
        out.truncate(segment_start);
    }
    match String::from_utf8(out) {
        Ok(normalized) => normalized,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

/// Closes the segment that starts at `start`: an empty or `.` segment is dropped (the
/// slash before it stays and serves the next one), any other gets its slash.
fn end_segment(out: &mut Vec<u8>, start: usize) {
    let segment = &out[start..];
    if segment.is_empty() || segment == b"." {
        out.truncate(start);
    } else {
        out.push(b'/');
    }
}

/// A client's call to one of the Console's login or logout endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLoginKind {
    /// `POST /api/<v>/authenticate`: username and password for a token.
    Authenticate,
    /// `POST /api/<v>/authenticate-client`: a client certificate for a token.
    AuthenticateClient,
    /// `GET /api/<v>/authenticate/renew`: a token for a fresh one.
    Renew,
    /// `POST /api/<v>/logout`: invalidates a token.
    Logout,
}

/// Classifies a normalised path (see [`normalize`]) as a client login endpoint.
///
/// Matches `/api/<v>/authenticate`, `/api/<v>/authenticate-client`,
/// `/api/<v>/authenticate/renew` and `/api/<v>/logout`, each with or without a trailing
/// slash. `<v>` is `v` followed by digits, optionally a dot and more digits (`v1`,
/// `v34.02`): wider than the versions the Console knows, because treating an unknown
/// version as a login endpoint costs nothing, while missing one could let a client log
/// the proxy's shared token out.
pub fn client_login_kind(normalized: &str) -> Option<ClientLoginKind> {
    let rest = normalized.strip_prefix("/api/")?;
    let (version, endpoint) = rest.split_once('/')?;
    // Any version segment counts, not only `v1` or `v34.02`: treating an odd path as a
    // login costs nothing, missing one could let a client log the shared token out.
    if version.is_empty() {
        return None;
    }
    let endpoint = endpoint.strip_suffix('/').unwrap_or(endpoint);
    let mut segments = endpoint.split('/').map(lenient_segment);
    let kind = match (segments.next()?, segments.next()) {
        ("authenticate", None) => ClientLoginKind::Authenticate,
        ("authenticate-client", None) => ClientLoginKind::AuthenticateClient,
        ("authenticate", Some("renew")) => ClientLoginKind::Renew,
        ("logout", None) => ClientLoginKind::Logout,
        _ => return None,
    };
    segments.next().is_none().then_some(kind)
}

/// A segment as a lenient server in front of the Console might read it: matrix
/// parameters (`;x`) cut off, trailing white space, NUL and zero-width spaces removed.
fn lenient_segment(segment: &str) -> &str {
    let segment = segment.split(';').next().unwrap_or(segment);
    segment.trim_end_matches(|c: char| c.is_whitespace() || c == '\0' || c == '\u{200b}')
}

/// Whether a normalised path lies under one of the allowed prefixes, ignoring ASCII case.
///
/// A prefix ending in `/` matches any path that starts with it (`/api/` matches
/// `/api/v1` but not `/api`). A prefix without one matches itself and the paths below it
/// at a segment boundary (`/api` matches `/api` and `/api/v1`, not `/apix`).
pub fn is_allowed(normalized: &str, allowed_prefixes: &[String]) -> bool {
    allowed_prefixes
        .iter()
        .any(|prefix| matches_prefix(normalized, prefix))
}

fn matches_prefix(normalized: &str, prefix: &str) -> bool {
    let path = normalized.as_bytes();
    let prefix = prefix.as_bytes();
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(prefix) {
        return false;
    }
    prefix.ends_with(b"/") || matches!(path.get(prefix.len()), None | Some(b'/'))
}

/// Splits an authority (`host`, `host:port`, `[v6]:port`) into the host as written,
/// brackets included, and the port. An empty port (`host:`) means the default, as in
/// RFC 3986. User-info, a colon outside brackets, an unclosed bracket, or a port that is
/// not decimal digits below 65536 gives `None`.
pub(crate) fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.contains('@') {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')? + 1;
        let (host, after) = authority.split_at(end);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((_, port)) if port.contains(':') => return None,
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    match port {
        None | Some("") => Some((host, None)),
        Some(digits) => Some((host, Some(parse_port(digits)?))),
    }
}

/// A port written as ASCII digits; leading zeros are legal in a URL (`:08083`).
fn parse_port(digits: &str) -> Option<u16> {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_target_splits_at_the_first_question_mark() {
        assert_eq!(split_target("/p"), ("/p", None));
        assert_eq!(split_target("/p?"), ("/p", Some("")));
        assert_eq!(split_target("/p??limit=50"), ("/p", Some("?limit=50")));
        assert_eq!(split_target("/p?a=1?b=2"), ("/p", Some("a=1?b=2")));
        assert_eq!(split_target("/a%3Fb?c"), ("/a%3Fb", Some("c")));
        assert_eq!(split_target(""), ("", None));
    }

    #[test]
    fn raw_dot_dot_segments_are_found() {
        for path in ["..", "/..", "/../", "/api/../x", "/api/v1/..", "/a/..//b"] {
            assert!(has_dot_dot(path), "{path}");
        }
    }

    #[test]
    fn encoded_dot_dot_segments_are_found() {
        for path in [
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/%2E./x",
            "/.%2e",
            "/..%2F..",
            "/api%2f..%2fx",
            "/%2e%2e%2f",
            "/a/..%5Cb",
            "/a\\..\\b",
            "/a/..\\",
        ] {
            assert!(has_dot_dot(path), "{path}");
        }
    }

    #[test]
    fn dots_inside_names_and_double_encoding_are_not_dot_dot() {
        for path in [
            "/",
            "/api/v1/x..y",
            "/api/...",
            "/api/..a",
            "/api/a..",
            "/api/.",
            "/api/./x",
            "/%252e%252e/x",
            "/%2e%2",
            "/api/v34.02/images",
            "",
        ] {
            assert!(!has_dot_dot(path), "{path}");
        }
    }

    #[test]
    fn normalize_decodes_collapses_and_lowercases() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/api/v1//logout", "/api/v1/logout"),
            ("/api/./v1/./logout", "/api/v1/logout"),
            ("/api/v1/%6cogout", "/api/v1/logout"),
            ("/API/V1/LOGOUT", "/api/v1/logout"),
            ("/api%2Fv1%2flogout", "/api/v1/logout"),
            ("/api/v1/logout/", "/api/v1/logout/"),
            ("/api/v1/logout/.", "/api/v1/logout/"),
            ("/api/v1/logout//", "/api/v1/logout/"),
            ("/.", "/"),
            ("/a%20b+c", "/a b+c"),
            ("/caf%C3%A9", "/café"),
            ("/CAF%C3%89", "/cafÉ"),
            ("/bad%zz%4", "/bad%zz%4"),
            ("/x%FF", "/x\u{FFFD}"),
            ("/a\\b", "/a\\b"),
            ("api/v1", "/api/v1"),
            ("/%252e", "/%2e"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize(raw), expected, "{raw}");
        }
    }

    #[test]
    fn login_endpoints_are_classified_for_every_version() {
        use ClientLoginKind::*;
        let cases = [
            ("/api/v1/authenticate", Some(Authenticate)),
            ("/api/v1/authenticate/", Some(Authenticate)),
            ("/api/v34.02/authenticate", Some(Authenticate)),
            ("/api/v9.01/authenticate-client", Some(AuthenticateClient)),
            ("/api/v1/authenticate/renew", Some(Renew)),
            ("/api/v1/authenticate/renew/", Some(Renew)),
            ("/api/v1/logout", Some(Logout)),
            ("/api/v32.00/logout/", Some(Logout)),
            ("/api/v2/logout", Some(Logout)),
            ("/api/v1/logouts", None),
            ("/api/v1/logout/x", None),
            ("/api/v1/authenticate/renewx", None),
            ("/api/v1/authenticate-clients", None),
            ("/api/logout", None),
            ("/api/v/logout", Some(Logout)),
            ("/api/latest/logout", Some(Logout)),
            ("/api/v1.2.3/logout", Some(Logout)),
            ("/api/v1/logout;x", Some(Logout)),
            ("/api/v1/logout ", Some(Logout)),
            ("/api/v1/logout\0", Some(Logout)),
            ("/api/v1/logout\u{200b}", Some(Logout)),
            ("/api/v1/authenticate;a/renew;b", Some(Renew)),
            ("/apix/v1/logout", None),
            ("/us-1-123/api/v1/logout", None),
            ("/api/v1/images", None),
        ];
        for (path, expected) in cases {
            assert_eq!(client_login_kind(path), expected, "{path}");
        }
    }

    #[test]
    fn allowed_prefixes_match_at_their_boundary() {
        let slash = vec!["/api/".to_string()];
        assert!(is_allowed("/api/", &slash));
        assert!(is_allowed("/api/v1/images", &slash));
        assert!(!is_allowed("/api", &slash));
        assert!(!is_allowed("/apix/v1", &slash));
        assert!(!is_allowed("/", &slash));

        let bare = vec!["/api/v1/images".to_string()];
        assert!(is_allowed("/api/v1/images", &bare));
        assert!(is_allowed("/api/v1/images/", &bare));
        assert!(is_allowed("/api/v1/images/download", &bare));
        assert!(!is_allowed("/api/v1/imagesx", &bare));
        assert!(!is_allowed("/api/v1", &bare));
    }

    #[test]
    fn allowed_prefixes_ignore_case_and_any_one_suffices() {
        let prefixes = vec!["/API/V1/Images".to_string(), "/metrics/".to_string()];
        assert!(is_allowed("/api/v1/images", &prefixes));
        assert!(is_allowed("/metrics/x", &prefixes));
        assert!(!is_allowed("/api/v1/hosts", &prefixes));
        assert!(!is_allowed("/api/v1/images", &[]));
        assert!(is_allowed("/anything", &["/".to_string()]));
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        let cases = [
            ("localhost", Some(("localhost", None))),
            ("localhost:8083", Some(("localhost", Some(8083)))),
            ("localhost:", Some(("localhost", None))),
            ("host:08083", Some(("host", Some(8083)))),
            ("[::1]", Some(("[::1]", None))),
            ("[::1]:8083", Some(("[::1]", Some(8083)))),
            ("[::1]:", Some(("[::1]", None))),
            ("::1", None),
            ("[::1", None),
            ("[::1]8083", None),
            ("host:65536", None),
            ("host:+1", None),
            ("host:x", None),
            ("a:1:2", None),
            ("user@host", None),
            (":8083", None),
            ("", None),
        ];
        for (authority, expected) in cases {
            assert_eq!(split_authority(authority), expected, "{authority}");
        }
    }
}
