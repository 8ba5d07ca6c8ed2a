//! Stale nodes: Nodes whose kubelet stopped renewing its node Lease.
//!
//! Every kubelet renews a `coordination.k8s.io/v1` Lease named after its node
//! in the namespace `kube-node-lease` (every 10 s by default); the node
//! lifecycle controller calls a node unreachable when the Lease is older than
//! `--node-monitor-grace-period` (40 s by default). The operator reads the same
//! small objects instead of full Node status: a node whose Lease's
//! `renewTime` (or `acquireTime` when never renewed) is older than the grace
//! period is *stale*. A node without a Lease is never stale (nothing says it
//! is gone; a freshly registered kubelet creates its Lease within seconds).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;

/// The namespace kubelets keep their node Leases in.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// When a node Lease was last renewed (acquired, if never renewed).
fn last_renewal(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    spec.renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)
}

/// True when `lease` was last renewed more than `grace` before `now`. A Lease
/// that was never renewed or acquired counts as stale: it holds no sign of life.
pub fn lease_is_stale(lease: &Lease, grace: Duration, now: Timestamp) -> bool {
    let Some(renewed) = last_renewal(lease) else {
        return true;
    };
    let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let age_ms = now
        .as_millisecond()
        .saturating_sub(renewed.as_millisecond());
    age_ms > grace_secs.saturating_mul(1000)
}

/// Names of the nodes whose Lease is stale at `now`. `None` disables the check
/// (empty set).
pub fn stale_nodes(
    leases: &[Arc<Lease>],
    grace: Option<Duration>,
    now: Timestamp,
) -> BTreeSet<String> {
    let Some(grace) = grace else {
        return BTreeSet::new();
    };
    leases
        .iter()
        .filter(|l| {
            l.metadata
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == NODE_LEASE_NAMESPACE)
        })
        .filter(|l| lease_is_stale(l, grace, now))
        .filter_map(|l| l.metadata.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::{node_lease, ts};

    #[test]
    fn a_lease_older_than_the_grace_period_is_stale() {
        let grace = Some(Duration::from_secs(40));
        let leases = vec![
            Arc::new(node_lease("fresh", Some(100))),
            Arc::new(node_lease("edge", Some(60))),
            Arc::new(node_lease("old", Some(59))),
            Arc::new(node_lease("never-renewed", None)),
        ];
        let stale = stale_nodes(&leases, grace, ts(100));
        assert_eq!(
            stale.into_iter().collect::<Vec<_>>(),
            vec!["never-renewed".to_string(), "old".to_string()]
        );
    }

    #[test]
    fn acquire_time_counts_when_never_renewed() {
        let mut l = node_lease("n", None);
        if let Some(spec) = l.spec.as_mut() {
            spec.acquire_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                ts(95),
            ));
        }
        assert!(!lease_is_stale(&l, Duration::from_secs(10), ts(100)));
        assert!(lease_is_stale(&l, Duration::from_secs(10), ts(106)));
    }

    #[test]
    fn disabled_or_other_namespaces_report_nothing() {
        let old = Arc::new(node_lease("old", Some(0)));
        assert!(stale_nodes(std::slice::from_ref(&old), None, ts(1_000)).is_empty());
        let mut elsewhere = node_lease("leader", Some(0));
        elsewhere.metadata.namespace = Some("toa-system".into());
        assert!(stale_nodes(
            &[Arc::new(elsewhere)],
            Some(Duration::from_secs(1)),
            ts(1_000)
        )
        .is_empty());
    }
}
