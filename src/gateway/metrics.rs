//! The gateway's metrics, registered by the tunnel's `/metrics` registry: requests by forward
//! and outcome, and how long they took.

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

/// Cheap to clone: every clone counts into the same families.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<OutcomeLabels, Counter>,
    seconds: Family<ForwardLabels, Histogram, fn() -> Histogram>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency_buckets),
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

    pub fn request(&self, forward: &str, outcome: &str, took: Duration) {
        self.requests
            .get_or_create(&OutcomeLabels {
                forward: forward.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.seconds
            .get_or_create(&ForwardLabels {
                forward: forward.to_string(),
            })
            .observe(took.as_secs_f64());
    }
}
