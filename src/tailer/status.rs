//! The tailer's `/status`: what it shows ([`Snapshot`], also the JSON answer) and its HTML
//! page, a maud template (every value escaped). Ids, counts and positions only, never patient
//! data; the Retry buttons only for the local admin.

use maud::{html, Markup};
use serde::Serialize;

use crate::clock::now_ms;
use crate::tailer::dead::DeadSummary;
use crate::web::{ago, page};

/// The tailer's state as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// This facility.
    pub site_id: i64,
    /// The binlog stream is connected.
    pub connected: bool,
    /// Capture waits for space on the state disk (`state.min_free_mib`).
    pub capture_paused: bool,
    /// Free space of the state disk at the last check (MiB).
    pub state_free_mib: u64,
    /// `/readyz` would answer 200.
    pub ready: bool,
    /// `FILE:POS` of the checkpoint.
    pub checkpoint: Option<String>,
    /// Its MariaDB GTID.
    pub gtid: Option<String>,
    /// Seconds behind the source at the last commit or heartbeat.
    pub lag_seconds: i64,
    /// Unix ms of the last binlog event.
    pub last_event_ms: Option<u64>,
    /// Source transactions recorded since start.
    pub transactions: u64,
    /// Visit buffers not yet shipped.
    pub open_visits: usize,
    /// Visit versions waiting to ship.
    pub outbox_visits: usize,
    /// Their size.
    pub outbox_bytes: u64,
    /// How long the oldest has waited.
    pub outbox_oldest_age_seconds: Option<u64>,
    /// Dead letters.
    pub dead_letters: usize,
    /// Each of them, without patient data.
    pub dead: Vec<DeadSummary>,
    /// Unix ms of the last batch the receiver accepted.
    pub last_shipped_ms: Option<u64>,
    /// Ship attempts failed in a row.
    pub ship_failures: u64,
    /// Why the last ship attempt failed (absent after a success).
    pub last_ship_error: Option<String>,
}

/// The HTML page; `admin` (a loopback client) gets Retry buttons carrying `token`.
pub fn render(s: &Snapshot, admin: bool, token: &str) -> String {
    let now = now_ms();
    let source = match (s.connected, s.ready) {
        _ if s.capture_paused => html! {
            span.bad { "capture paused: the state disk has " (s.state_free_mib) " MiB free (state.min_free_mib)" }
        },
        (true, true) => html! { span.ok { "following the binlog" } },
        (true, false) => html! { span.bad { "connected, but the stream is silent" } },
        _ => html! { span.bad { "not connected to the source" } },
    };
    let body = html! {
        h1 { "emr-stream tailer · site " (s.site_id) }
        table.kv {
            tr { th { "Source" } td { (source) } }
            tr {
                th { "Checkpoint" }
                td {
                    code { (s.checkpoint.as_deref().unwrap_or("none yet")) }
                    @if let Some(g) = &s.gtid { " (GTID " code { (g) } ")" }
                }
            }
            tr { th { "Lag" } td #lag { (s.lag_seconds) " s" } }
            tr { th { "Open visits" } td { (s.open_visits) } }
            tr {
                th { "Outbox" }
                td #outbox {
                    (s.outbox_visits) " visits, " (s.outbox_bytes.div_ceil(1024)) " KiB"
                    @if let Some(a) = s.outbox_oldest_age_seconds { ", oldest " (a) " s" }
                }
            }
            tr {
                th { "Last shipment" }
                td #shipped {
                    @match s.last_shipped_ms {
                        Some(t) => (ago(now, t)),
                        None => "none since start",
                    }
                }
            }
            tr { th { "Ship failures in a row" } td { (s.ship_failures) } }
            @if let Some(e) = &s.last_ship_error {
                tr { th { "Last ship error" } td.bad #ship-error { (e) } }
            }
            tr { th { "Dead letters" } td #dead-count { (s.dead_letters) } }
        }
        @if !s.dead.is_empty() {
            h2 { "Dead letters" }
            table #dead {
                tr {
                    th { "Id" } th { "When" } th { "Status" } th { "Receiver's reason" }
                    th { "Version" } th { "Rows" } th {}
                }
                @for l in &s.dead {
                    tr {
                        td { (l.id) }
                        td { (l.at.as_deref().unwrap_or("")) }
                        td { (l.status) }
                        td { (l.reason) }
                        td { (l.version) }
                        td { (rows(l)) }
                        td { (retry(l.id, admin, token)) }
                    }
                }
            }
        }
    };
    page("emr-stream tailer", body)
}

/// "obs 3, encounter 1".
fn rows(l: &DeadSummary) -> String {
    l.rows
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Retry button of dead letter `id` for the local admin, a hint for anyone else.
fn retry(id: u64, admin: bool, token: &str) -> Markup {
    if admin {
        html! {
            form method="post" action="/dead/retry" {
                input type="hidden" name="token" value=(token);
                input type="hidden" name="id" value=(id);
                button id={ "retry-" (id) } { "Retry" }
            }
        }
    } else {
        html! { small { "retry from the facility machine" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_and_offers_retry_to_the_local_admin_only() {
        let s = Snapshot {
            site_id: 101,
            connected: true,
            capture_paused: false,
            state_free_mib: 1000,
            ready: true,
            checkpoint: Some("binlog.000001:4".into()),
            gtid: None,
            lag_seconds: 0,
            last_event_ms: None,
            transactions: 0,
            open_visits: 0,
            outbox_visits: 0,
            outbox_bytes: 0,
            outbox_oldest_age_seconds: None,
            dead_letters: 1,
            dead: vec![DeadSummary {
                id: 7,
                at: Some("2026-11-26T10:00:00+00:00".into()),
                status: 422,
                reason: "unknown table <script>".into(),
                version: 2,
                rows: [("obs".to_owned(), 3)].into_iter().collect(),
            }],
            last_shipped_ms: None,
            ship_failures: 0,
            last_ship_error: None,
        };
        let local = render(&s, true, "tok");
        assert!(
            local.contains("id=\"retry-7\"") && local.contains("value=\"tok\""),
            "{local}"
        );
        assert!(local.contains("unknown table &lt;script&gt;") && !local.contains("<script>"));
        assert!(local.contains("obs 3"));
        let remote = render(&s, false, "tok");
        assert!(!remote.contains("<button") && !remote.contains("tok"));
    }
}
