//! Prometheus metrics, served as text on the admin endpoint's /metrics.
//!
//! Session-level values are updated through `TunnelState`'s methods (the single place that
//! records a state change, which calls the methods here), per-connection counters by the
//! connection task and the pump.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::routes::{ForwardState, ForwardStatus};
use super::target_health::TargetHealth;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabel {
    pub forward: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
}

/// The counters one forwarded connection updates.
#[derive(Clone, Debug, Default)]
pub struct ForwardMetrics {
    pub opened: Counter,
    pub rejected: Counter,
    pub failed: Counter,
    pub to_target: Counter,
    pub from_target: Counter,
    pub open: Gauge,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) connected: Gauge,
    pub(crate) connected_since: Gauge<f64, AtomicU64>,
    pub(crate) ready: Gauge,
    pub(crate) reconnects: Counter,
    pub(crate) errors: Family<ClassLabel, Counter>,
    pub(crate) last_error: Family<ClassLabel, Gauge>,
    pub(crate) handshake_seconds: Histogram,
    pub(crate) forward_granted: Family<ForwardLabel, Gauge>,
    /// 1 up, 0 down, -1 not known yet (not dialed).
    pub(crate) forward_target_up: Family<ForwardLabel, Gauge>,
    pub(crate) policy_open: Family<ForwardLabel, Gauge>,
    pub(crate) grant_expiry: Family<ForwardLabel, Gauge>,
    opened: Family<ForwardLabel, Counter>,
    rejected: Family<ForwardLabel, Counter>,
    failed: Family<ForwardLabel, Counter>,
    to_target: Family<ForwardLabel, Counter>,
    from_target: Family<ForwardLabel, Counter>,
    open: Family<ForwardLabel, Gauge>,
    refused: Family<ClassLabel, Counter>,
    /// Handed to the audit trail's writer (`crate::audit::Audit::start`).
    pub audit: crate::audit::Counters,
    /// Handed to each HTTP forward's gateway.
    pub gateway: crate::gateway::RequestMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agent");
        let build: Family<BuildLabel, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "Agent version", build);
        let m = Self {
            connected: Gauge::default(),
            connected_since: Gauge::default(),
            ready: Gauge::default(),
            reconnects: Counter::default(),
            errors: Family::default(),
            last_error: Family::default(),
            handshake_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            forward_granted: Family::default(),
            forward_target_up: Family::default(),
            policy_open: Family::default(),
            grant_expiry: Family::default(),
            opened: Family::default(),
            rejected: Family::default(),
            failed: Family::default(),
            to_target: Family::default(),
            from_target: Family::default(),
            open: Family::default(),
            refused: Family::default(),
            audit: crate::audit::Counters::default(),
            gateway: crate::gateway::RequestMetrics::default(),
            registry: Registry::default(),
        };
        m.gateway.register(&mut registry);
        registry.register(
            "connected",
            "1 while an authenticated SSH session is up",
            m.connected.clone(),
        );
        registry.register(
            "connected_since_seconds",
            "Unix time the current session came up (0 when disconnected)",
            m.connected_since.clone(),
        );
        registry.register(
            "ready",
            "1 when connected and every forward is granted",
            m.ready.clone(),
        );
        registry.register(
            "reconnects",
            "Sessions lost after having been established",
            m.reconnects.clone(),
        );
        registry.register(
            "connection_errors",
            "Failed connection attempts and lost sessions, by class",
            m.errors.clone(),
        );
        registry.register(
            "last_error",
            "1 for the class of the most recent error",
            m.last_error.clone(),
        );
        registry.register(
            "handshake_duration_seconds",
            "SSH banner, key exchange and authentication of each session (the dial before it not included)",
            m.handshake_seconds.clone(),
        );
        registry.register(
            "forward_granted",
            "1 while the server grants the forward",
            m.forward_granted.clone(),
        );
        registry.register(
            "forward_target_up",
            "1 while the forward's target answers (its last dial, by a vendor connection or a probe, succeeded), 0 while it is down, -1 before it was dialed",
            m.forward_target_up.clone(),
        );
        registry.register(
            "forward_open_by_policy",
            "1 while the customer's access policy (windows, grants, pause) lets the vendor reach the forward",
            m.policy_open.clone(),
        );
        registry.register(
            "forward_grant_expiry_seconds",
            "Unix time the forward's active grant ends (0: no grant)",
            m.grant_expiry.clone(),
        );
        registry.register(
            "forward_channels_opened",
            "Vendor connections served",
            m.opened.clone(),
        );
        registry.register(
            "forward_channels_rejected",
            "Vendor connections refused (target unreachable or connection limit)",
            m.rejected.clone(),
        );
        registry.register(
            "forward_channels_failed",
            "Vendor connections that ended in an error (target reset, buffer cap)",
            m.failed.clone(),
        );
        registry.register(
            "forward_bytes_to_target",
            "Bytes from the vendor written to the target",
            m.to_target.clone(),
        );
        registry.register(
            "forward_bytes_from_target",
            "Bytes from the target sent to the vendor",
            m.from_target.clone(),
        );
        registry.register(
            "forward_channels_open",
            "Vendor connections open now",
            m.open.clone(),
        );
        registry.register(
            "server_channels_refused",
            "Channels the server opened that no forward serves, by reason (their log lines are throttled; this counts all)",
            m.refused.clone(),
        );
        registry.register(
            "audit_records_written",
            "Audit trail records written to the file",
            m.audit.written.clone(),
        );
        registry.register(
            "audit_records_failed",
            "Audit trail records lost: the file could not be written or the writer fell behind",
            m.audit.failed.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts a channel the server opened that was refused before reaching a forward
    /// (`not_listed`, `bad_originator`, or the channel type, such as `direct-tcpip`).
    pub fn channel_refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ClassLabel {
                class: reason.to_string(),
            })
            .inc();
    }

    /// Handles to one forward's counters (created at zero on first use).
    pub fn forward(&self, name: &str) -> ForwardMetrics {
        let l = ForwardLabel {
            forward: name.to_string(),
        };
        ForwardMetrics {
            opened: self.opened.get_or_create(&l).clone(),
            rejected: self.rejected.get_or_create(&l).clone(),
            failed: self.failed.get_or_create(&l).clone(),
            to_target: self.to_target.get_or_create(&l).clone(),
            from_target: self.from_target.get_or_create(&l).clone(),
            open: self.open.get_or_create(&l).clone(),
        }
    }

    /// Brings the values derived from the tunnel's state up to date: whether a session is up
    /// and since when, readiness, and which forwards are granted.
    pub fn observe(&self, since: Option<SystemTime>, ready: bool, forwards: &[ForwardStatus]) {
        self.connected.set(i64::from(since.is_some()));
        self.ready.set(i64::from(ready));
        self.connected_since.set(
            since
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        for f in forwards {
            self.forward_granted
                .get_or_create(&ForwardLabel {
                    forward: f.forward.name.clone(),
                })
                .set(i64::from(f.state == ForwardState::Granted));
        }
    }

    /// Readiness, and each forward's target health, as /readyz reports them.
    pub fn observe_health(&self, ready: bool, forwards: &[ForwardStatus]) {
        self.ready.set(i64::from(ready));
        for f in forwards {
            let up = match f.target {
                TargetHealth::Up { .. } => 1,
                TargetHealth::Down { .. } => 0,
                TargetHealth::Unknown => -1,
            };
            let label = ForwardLabel {
                forward: f.forward.name.clone(),
            };
            self.forward_target_up.get_or_create(&label).set(up);
        }
    }

    /// A session came up after a handshake that took `handshake`.
    pub fn session_up(&self, handshake: Duration) {
        self.handshake_seconds.observe(handshake.as_secs_f64());
    }

    /// A failure of class `class`; it replaces the last error of class `previous`, if any.
    pub fn error(&self, class: &str, previous: Option<&str>) {
        self.errors
            .get_or_create(&ClassLabel {
                class: class.into(),
            })
            .inc();
        if let Some(old) = previous {
            self.last_error
                .get_or_create(&ClassLabel { class: old.into() })
                .set(0);
        }
        self.last_error
            .get_or_create(&ClassLabel {
                class: class.into(),
            })
            .set(1);
    }

    /// Forward `name` is no longer listed: its granted gauge goes.
    pub fn forget_forward(&self, name: &str) {
        self.forward_granted.remove(&ForwardLabel {
            forward: name.to_string(),
        });
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
