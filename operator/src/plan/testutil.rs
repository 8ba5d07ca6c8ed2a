//! Builders for plan tests (unit, property and bench-like tests).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::NodeMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use toa_crds::{
    DesiredState, KernelInfo, ModuleSettings, NodePhase, NodeReason, OnDelete, ToaNodeState,
    ToaNodeStateSpec, ToaNodeStateStatus, ToaPolicy, ToaPolicySpec,
};

pub fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("test timestamp in range")
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Linux node: `kubernetes.io/os=linux` is added unless `pairs` sets that label.
pub fn node(name: &str, pairs: &[(&str, &str)]) -> NodeMeta {
    let mut n = raw_node(name, pairs);
    n.metadata
        .labels
        .get_or_insert_with(Default::default)
        .entry(toa_crds::OS_LABEL.to_string())
        .or_insert_with(|| "linux".to_string());
    n
}

/// A node with exactly the labels in `pairs`.
pub fn raw_node(name: &str, pairs: &[(&str, &str)]) -> NodeMeta {
    NodeMeta {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            uid: Some(format!("uid-{name}")),
            labels: Some(labels(pairs)),
            creation_timestamp: Some(Time(ts(1_000))),
            ..ObjectMeta::default()
        },
        spec: None,
    }
}

pub fn policy(name: &str, match_labels: &[(&str, &str)]) -> ToaPolicy {
    let mut p = ToaPolicy::new(
        name,
        ToaPolicySpec {
            node_selector: LabelSelector {
                match_labels: if match_labels.is_empty() {
                    None
                } else {
                    Some(labels(match_labels))
                },
                match_expressions: None,
            },
            ..ToaPolicySpec::default()
        },
    );
    p.metadata.generation = Some(1);
    p.metadata.creation_timestamp = Some(Time(ts(2_000)));
    p.metadata.finalizers = Some(vec![toa_crds::POLICY_FINALIZER.to_string()]);
    p
}

pub fn with_priority(mut p: ToaPolicy, priority: i32) -> ToaPolicy {
    p.spec.priority = priority;
    p
}

pub fn created_at(mut p: ToaPolicy, secs: i64) -> ToaPolicy {
    p.metadata.creation_timestamp = Some(Time(ts(secs)));
    p
}

pub fn on_delete(mut p: ToaPolicy, on_delete: OnDelete) -> ToaPolicy {
    p.spec.lifecycle.on_delete = on_delete;
    p
}

pub fn deleting(mut p: ToaPolicy, at_secs: i64) -> ToaPolicy {
    p.metadata.deletion_timestamp = Some(Time(ts(at_secs)));
    p
}

pub fn max_unavailable(mut p: ToaPolicy, n: i32) -> ToaPolicy {
    p.spec.rollout.max_unavailable = n;
    p
}

/// A node state as the operator would have written it for `policy` with the
/// default module settings, and an agent status in `phase`.
pub fn state(node: &str, policy: &str, phase: Option<NodePhase>) -> ToaNodeState {
    let mut s = ToaNodeState::new(
        node,
        ToaNodeStateSpec {
            node_name: node.to_string(),
            policy: policy.to_string(),
            desired_state: DesiredState::Loaded,
            module: ModuleSettings::default(),
            replace_foreign_module: false,
            reload_allowed: false,
            backend: Default::default(),
        },
    );
    s.metadata.generation = Some(1);
    s.status = phase.map(|p| ToaNodeStateStatus {
        observed_generation: Some(1),
        phase: Some(p),
        reason: (p == NodePhase::Failed).then_some(NodeReason::BuildFailed),
        message: (p == NodePhase::Failed).then(|| format!("{node}: build failed")),
        kernel: Some(KernelInfo {
            release: "6.1.0-56-amd64".to_string(),
            ..KernelInfo::default()
        }),
        ..ToaNodeStateStatus::default()
    });
    s
}

pub fn desired(mut s: ToaNodeState, d: DesiredState) -> ToaNodeState {
    s.spec.desired_state = d;
    s
}

pub fn reload(mut s: ToaNodeState, pending: bool, allowed: bool) -> ToaNodeState {
    s.spec.reload_allowed = allowed;
    if let Some(st) = s.status.as_mut() {
        st.reload_pending = pending;
    }
    s
}

pub fn kernel(mut s: ToaNodeState, release: &str) -> ToaNodeState {
    if let Some(st) = s.status.as_mut() {
        st.kernel = Some(KernelInfo {
            release: release.to_string(),
            ..KernelInfo::default()
        });
    }
    s
}

pub fn snapshot(
    policies: Vec<ToaPolicy>,
    nodes: Vec<NodeMeta>,
    states: Vec<ToaNodeState>,
) -> super::ClusterSnapshot {
    super::ClusterSnapshot {
        policies: policies.into_iter().map(Arc::new).collect(),
        nodes: nodes.into_iter().map(Arc::new).collect(),
        node_states: states.into_iter().map(Arc::new).collect(),
        ..super::ClusterSnapshot::default()
    }
}

/// A kubelet's node Lease in kube-node-lease, last renewed at `renewed_secs`.
pub fn node_lease(
    node: &str,
    renewed_secs: Option<i64>,
) -> k8s_openapi::api::coordination::v1::Lease {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some(super::stale::NODE_LEASE_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(40),
            renew_time: renewed_secs.map(|s| MicroTime(ts(s))),
            ..LeaseSpec::default()
        }),
    }
}

/// `snapshot` with node Leases and a grace period for stale nodes.
pub fn with_leases(
    mut s: super::ClusterSnapshot,
    leases: Vec<k8s_openapi::api::coordination::v1::Lease>,
    grace_secs: u64,
) -> super::ClusterSnapshot {
    s.node_leases = leases.into_iter().map(Arc::new).collect();
    s.node_lease_grace = Some(std::time::Duration::from_secs(grace_secs));
    s
}
