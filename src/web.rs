//! Small HTTP helpers for the status pages of both processes: one page layout (maud, so
//! every interpolated value is escaped at compile time), "how long ago", and whether a
//! request wants HTML or JSON.

use axum::http::{header, HeaderMap};
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// "12 s ago", "4 min ago", "3 h ago", "2 d ago" from unix ms `then` seen at `now`.
pub fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7_200 => format!("{} min ago", s / 60),
        7_200..172_800 => format!("{} h ago", s / 3_600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// HTML when `format=html`, or when no `format` is given and the client accepts HTML (a
/// browser); JSON otherwise (curl, scripts, tests).
pub fn wants_html(format: Option<&str>, headers: &HeaderMap) -> bool {
    match format {
        Some(f) => f.eq_ignore_ascii_case("html"),
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html")),
    }
}

/// A whole page: `title`, a meta refresh every 10 s, and the body.
pub fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="10";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (body)
                p.foot { "Refreshes every 10 s · JSON: add " code { "?format=json" } }
            }
        }
    }
    .into_string()
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:68em;padding:0 1em;color:#1d2733}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.3em .8em;border-bottom:1px solid #dde3ea;text-align:left;vertical-align:top}\
table.kv th{width:14em;color:#4a5968;font-weight:600}\
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}.warn{color:#9a6700;font-weight:600}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
button{font:inherit;padding:.15em .8em;cursor:pointer}code{font-size:.92em}.foot{color:#6b7885;font-size:.85em;margin-top:2em}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_its_title_and_keeps_its_body() {
        let p = page("<x>", html! { p { "a < b" } });
        assert!(p.starts_with("<!DOCTYPE html>"), "{p}");
        assert!(p.contains("<title>&lt;x&gt;</title>"), "{p}");
        assert!(p.contains("<p>a &lt; b</p>"), "{p}");
    }

    #[test]
    fn ago_picks_a_readable_unit() {
        assert_eq!(ago(61_000, 1_000), "60 s ago");
        assert_eq!(ago(600_000, 0), "10 min ago");
        assert_eq!(ago(3 * 3_600_000, 0), "3 h ago");
        assert_eq!(ago(5 * 86_400_000, 0), "5 d ago");
        assert_eq!(ago(0, 5_000), "0 s ago");
    }

    #[test]
    fn browsers_get_html_and_format_wins() {
        let mut h = HeaderMap::new();
        assert!(!wants_html(None, &h));
        h.insert(
            header::ACCEPT,
            "text/html,application/xhtml+xml".parse().unwrap(),
        );
        assert!(wants_html(None, &h));
        assert!(!wants_html(Some("json"), &h));
        assert!(wants_html(Some("HTML"), &HeaderMap::new()));
    }
}
