//! Reading a raw query string the way the Console's HTTP framework does: pairs split on
//! `&`, key and value split on the first `=`, `+` read as a space, then percent-decoded
//! (invalid UTF-8 replaced). Empty pairs, as in `a=1&&b=2`, are skipped.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The decoded `(key, value)` pairs of `query`, in order.
pub(super) fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// The first value of `key` in `query`, if any.
pub(super) fn first(query: Option<&str>, key: &str) -> Option<String> {
    pairs(query?)
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// Every `project` value named in `query`.
pub(super) fn projects(query: Option<&str>) -> Vec<String> {
    query
        .map(pairs)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| (k == "project").then_some(v))
        .collect()
}

fn decode(raw: &str) -> String {
    let spaced: Cow<'_, str> = if raw.contains('+') {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_decoded_with_plus_as_space() {
        let got = pairs("x=1+2&&y=%20&%70roject=Central+Console&flag");
        let want = [
            ("x", "1 2"),
            ("y", " "),
            ("project", "Central Console"),
            ("flag", ""),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn projects_lists_every_project_value() {
        let got = projects(Some("project=a&limit=5&project=b%2Bc"));
        assert_eq!(got, vec!["a".to_string(), "b+c".to_string()]);
        assert!(projects(None).is_empty());
        assert_eq!(
            first(Some("limit=5&limit=6"), "limit").as_deref(),
            Some("5")
        );
    }
}
