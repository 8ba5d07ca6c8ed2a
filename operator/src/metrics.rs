//! Operator metrics (names fixed by the contract) in the Prometheus text format.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub policy: String,
    pub phase: String,
}

/// All operator metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    nodes: Family<NodeLabels, Gauge>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Records whether this replica is the leader (read at scrape time).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 1 ms .. ~16 s: a reconcile is a few API round trips, more at 5,000 nodes.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let nodes = Family::<NodeLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "toa_operator_reconciles",
            "Reconciles by kind of object reconciled and result (ok|error)",
            reconciles.clone(),
        );
        registry.register(
            "toa_operator_reconcile_errors",
            "Failed reconciles by kind of object the failing request addressed and reason",
            errors.clone(),
        );
        registry.register(
            "toa_operator_reconcile_duration_seconds",
            "Duration of one reconcile",
            duration.clone(),
        );
        registry.register(
            "toa_operator_nodes",
            "ToaNodeStates by policy and reported phase",
            nodes.clone(),
        );
        registry.register(
            "toa_operator_leader",
            "1 while this replica holds the leader lease, 0 on a standby",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            nodes,
            leader,
        }
    }

    pub fn reconciled(&self, kind: &str, ok: bool, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn error(&self, kind: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Replaces the node gauge with `counts` ((policy, phase) -> nodes); series that are not in
    /// `counts` any more disappear instead of freezing at their last value.
    pub fn set_nodes<'a>(&self, counts: impl IntoIterator<Item = ((&'a str, &'a str), i64)>) {
        self.nodes.clear();
        for ((policy, phase), n) in counts {
            self.nodes
                .get_or_create(&NodeLabels {
                    policy: policy.to_string(),
                    phase: phase.to_string(),
                })
                .set(n);
        }
    }

    /// The exposition in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_contract_names() {
        let m = Metrics::new();
        m.reconciled("ToaPolicy", true, Duration::from_millis(3));
        m.reconciled("ToaPolicy", false, Duration::from_millis(3));
        m.error("ToaNodeState", "Conflict");
        m.set_nodes([(("edge", "Loaded"), 3), (("edge", "Failed"), 1)]);
        let text = m.encode().expect("encode");
        assert!(
            text.contains(r#"toa_operator_reconciles_total{kind="ToaPolicy",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"toa_operator_reconciles_total{kind="ToaPolicy",result="error"} 1"#)
        );
        assert!(text.contains(
            r#"toa_operator_reconcile_errors_total{kind="ToaNodeState",reason="Conflict"} 1"#
        ));
        assert!(text.contains("toa_operator_reconcile_duration_seconds_count 2"));
        assert!(text.contains(r#"toa_operator_nodes{policy="edge",phase="Loaded"} 3"#));
        // Stale series vanish.
        m.set_nodes([(("edge", "Loaded"), 4)]);
        let text = m.encode().expect("encode");
        assert!(text.contains(r#"toa_operator_nodes{policy="edge",phase="Loaded"} 4"#));
        assert!(!text.contains(r#"phase="Failed""#));
    }
}
