//! What the receiver's answer means for the batch (DESIGN.md, "Durability contract").

/// The class of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: stored.
    Stored,
    /// 409: the receiver already had it.
    Duplicate,
    /// 408/425/429/5xx or no answer: try again later.
    Retry(String),
    /// Other 4xx: will never succeed as is.
    Rejected {
        /// HTTP status.
        status: u16,
        /// The receiver's `error` text.
        reason: String,
        /// The visit the receiver's JSON pointer names (`/visits/N/...`), if any.
        visit_index: Option<usize>,
    },
}

/// Classifies an HTTP answer with its body.
pub fn classify(status: u16, body: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Stored,
        409 => Outcome::Duplicate,
        408 | 425 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
        // A refused token is the site's configuration, not the visits' fault: dead-lettering
        // would empty the whole outbox. Keep the queue and retry (loudly) until it is fixed.
        401 | 403 => Outcome::Retry(format!(
            "HTTP {status}: the receiver refused this site's token; check ship.token"
        )),
        _ => {
            let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
            let reason = parsed
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(|v| v.as_str())
                .unwrap_or("no reason given")
                .chars()
                .take(500)
                .collect();
            let visit_index = parsed
                .as_ref()
                .and_then(|v| v.get("pointer"))
                .and_then(|v| v.as_str())
                .and_then(|p| p.strip_prefix("/visits/"))
                .and_then(|rest| rest.split('/').next())
                .and_then(|n| n.parse().ok());
            Outcome::Rejected {
                status,
                reason,
                visit_index,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_classes() {
        assert_eq!(classify(200, ""), Outcome::Stored);
        assert_eq!(classify(409, ""), Outcome::Duplicate);
        for s in [408, 425, 429, 500, 502, 503] {
            assert!(matches!(classify(s, ""), Outcome::Retry(_)), "{s}");
        }
        assert_eq!(
            classify(
                422,
                r#"{"error":"unknown table","pointer":"/visits/3/rows/0/table"}"#
            ),
            Outcome::Rejected {
                status: 422,
                reason: "unknown table".into(),
                visit_index: Some(3)
            }
        );
        assert!(matches!(classify(401, "x"), Outcome::Retry(_)));
        assert!(matches!(
            classify(413, "x"),
            Outcome::Rejected {
                status: 413,
                visit_index: None,
                ..
            }
        ));
    }
}
