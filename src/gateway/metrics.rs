//! The gateway's metrics, registered by the tunnel's `/metrics` registry: requests by forward
//! and outcome, and how long they took; and each forward's requests served and refused, which
//! `agent status` shows.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    forward: String,
    /// `allowed`, or the refusal's class (`no_rule`, `token_wrong`, `upstream_timeout`...).
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    forward: String,
}

fn latency_buckets() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The outcome of a request that was not refused: an HTTP forward's request the upstream
/// answered, a CONNECT forward's tunnel opened. Any other outcome is a refusal's class.
pub const ALLOWED: &str = "allowed";

/// Cheap to clone: every clone counts into the same families. The tunnel keeps one for the
/// agent's life and hands it to every gateway it makes (a reload that changes a forward's
/// settings makes a new gateway), so the counts run from the agent's start.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<OutcomeLabels, Counter>,
    seconds: Family<ForwardLabels, Histogram, fn() -> Histogram>,
    /// Per forward, what [`RequestMetrics::counts`] reads (not exported: `http_requests`
    /// already says it by outcome).
    served: Family<ForwardLabels, Counter>,
    refused: Family<ForwardLabels, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency_buckets),
            served: Family::default(),
            refused: Family::default(),
        }
    }
}

impl RequestMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "Requests through HTTP forwards, by forward and outcome",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's head to the end of its answer, by forward",
            self.seconds.clone(),
        );
    }

    /// One request of `forward`, [`ALLOWED`] or refused with the class `outcome`, done after
    /// `took`.
    pub fn request(&self, forward: &str, outcome: &str, took: Duration) {
        self.requests
            .get_or_create(&OutcomeLabels {
                forward: forward.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        let labels = ForwardLabels {
            forward: forward.to_string(),
        };
        self.seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let count = if outcome == ALLOWED {
            &self.served
        } else {
            &self.refused
        };
        count.get_or_create(&labels).inc();
    }

    /// `forward`'s requests served and refused so far (both 0 before its first).
    pub fn counts(&self, forward: &str) -> (u64, u64) {
        let labels = ForwardLabels {
            forward: forward.to_string(),
        };
        let read =
            |family: &Family<ForwardLabels, Counter>| family.get(&labels).map_or(0, |c| c.get());
        (read(&self.served), read(&self.refused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_per_forward_and_shared_by_clones() {
        let m = RequestMetrics::default();
        assert_eq!(m.counts("gitlab"), (0, 0));
        let clone = m.clone();
        m.request("gitlab", ALLOWED, Duration::ZERO);
        clone.request("gitlab", ALLOWED, Duration::ZERO);
        m.request("gitlab", "no_rule", Duration::ZERO);
        m.request("jira", "token_wrong", Duration::ZERO);
        assert_eq!(m.counts("gitlab"), (2, 1));
        assert_eq!(clone.counts("jira"), (0, 1));
        assert_eq!(m.counts("other"), (0, 0));
    }
}
