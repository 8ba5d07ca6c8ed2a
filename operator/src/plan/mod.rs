//! The operator's decisions, as pure functions without I/O.
//!
//! One call per reconcile: [`plan`] takes everything the operator knows
//! (policies, nodes, node states) and the current time, and returns
//! everything it should write. The I/O layer diffs the [`Plan`] against its
//! caches and sends only the differences. Keeping this pure lets us test it
//! exhaustively (property tests up to 20,000 nodes) without an apiserver.
//!
//! Steps, each in its own module:
//! 1. [`selector`]: compile each policy's label selector.
//! 2. [`assign`]: give each Linux node to at most one live policy (highest
//!    priority, then oldest, then name) and count conflicts.
//! 3. [`lifecycle`]: nodes that left their policy: unload, keep or forget;
//!    finalizer decisions for policies being deleted.
//! 4. [`pacing`]: grant `reloadAllowed` so that at most `maxUnavailable`
//!    nodes of a policy reload at once.
//! 5. [`status`]: aggregate node states into each policy's status.
//!
//! Alongside: [`stale`] finds nodes whose kubelet stopped renewing its node
//! Lease; they are reported (status.staleNodes, condition NodesStale) and left
//! out of the rollout pacing (a powered-off node must not hold the rollout).

mod assign;
mod lifecycle;
mod node;
mod pacing;
pub mod selector;
pub mod stale;
mod status;

pub use status::{first_names, sort_conditions};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use toa_crds::{ToaNodeState, ToaNodeStateSpec, ToaPolicy, ToaPolicyStatus};

pub use node::{NodeMeta, NodeTaints};

/// Everything the operator knows at one instant (reflector store contents).
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    /// All ToaPolicies, including those being deleted.
    pub policies: Vec<Arc<ToaPolicy>>,
    /// All Nodes (metadata only).
    pub nodes: Vec<Arc<NodeMeta>>,
    /// All ToaNodeStates.
    pub node_states: Vec<Arc<ToaNodeState>>,
    /// The kubelets' node Leases (namespace kube-node-lease).
    pub node_leases: Vec<Arc<Lease>>,
    /// A node whose Lease is older than this is stale; `None`: no stale check.
    pub node_lease_grace: Option<Duration>,
}

/// A ToaNodeState the operator wants to exist, with this spec.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredNodeState {
    /// Spec to apply (server-side apply, field manager `toa-operator`).
    pub spec: ToaNodeStateSpec,
    /// UID of the Node, for the ownerReference (the Node owns its state).
    pub node_uid: String,
}

/// Why a policy's finalizer may be removed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalizerRelease {
    /// `lifecycle.onDelete: Keep`: modules stay loaded, nothing to wait for.
    Kept,
    /// Every node of the policy reports Unloaded (or was handed to another policy).
    AllUnloaded,
    /// `lifecycle.unloadTimeoutSeconds` passed with nodes still not unloaded.
    TimedOut {
        /// How many nodes were still not unloaded.
        remaining: usize,
        /// The first of them (at most 20), sorted by name, for the Event.
        nodes: Vec<String>,
    },
}

/// What the operator should make true, computed by [`plan`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// ToaNodeStates that must exist, by node name (= object name).
    pub node_states: BTreeMap<String, DesiredNodeState>,
    /// ToaNodeStates to delete, by name.
    pub deletions: BTreeSet<String>,
    /// Nodes that must carry `toa.dev/agent=true` (selected nodes, and
    /// deselected ones until their module is unloaded).
    pub agent_nodes: BTreeSet<String>,
    /// Subset of `agent_nodes` that does not carry the label yet.
    pub label_nodes: BTreeSet<String>,
    /// Nodes that carry the label but must lose it.
    pub unlabel_nodes: BTreeSet<String>,
    /// Full status of every policy, by policy name.
    pub policy_status: BTreeMap<String, ToaPolicyStatus>,
    /// Live policies that lack [`toa_crds::POLICY_FINALIZER`].
    pub finalizers_to_add: BTreeSet<String>,
    /// Policies being deleted whose finalizer can be removed now.
    pub finalizer_releases: BTreeMap<String, FinalizerRelease>,
    /// Reconcile again after this long even if nothing changes (the next
    /// unload deadline of a policy being deleted).
    pub requeue_after: Option<Duration>,
    /// Node count by policy and phase (from the node states; "Unknown" when
    /// the agent has not reported), for the `toa_operator_nodes` gauge.
    pub node_phases: BTreeMap<String, BTreeMap<String, u32>>,
}

/// Decide everything for one reconcile. Pure and deterministic: the result
/// does not depend on the order of the snapshot's vectors.
pub fn plan(snapshot: &ClusterSnapshot, now: Timestamp) -> Plan {
    let policies = assign::PolicyView::collect(&snapshot.policies);
    let mut table = assign::NodeTable::collect(&snapshot.nodes, &snapshot.node_states);
    let stale_names = stale::stale_nodes(&snapshot.node_leases, snapshot.node_lease_grace, now);
    for n in &mut table.nodes {
        n.stale = stale_names.contains(n.name);
    }
    let nodes = &table.nodes;

    let assignment = assign::assign(&policies, nodes);
    let leaving = lifecycle::leaving_nodes(&policies, &table, &assignment, now);
    let grants = pacing::grant_reloads(&policies, nodes, &assignment, &leaving);

    let mut out = Plan::default();
    // Nodes are in name order, so the maps below are bulk-built from
    // sorted input.
    let mut desired: Vec<(String, DesiredNodeState)> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let spec = if let Some(idx) = assignment.owner[n] {
            let policy = &policies[idx];
            ToaNodeStateSpec {
                node_name: node.name.to_string(),
                policy: policy.name.to_string(),
                desired_state: toa_crds::DesiredState::Loaded,
                module: policy.module.clone(),
                replace_foreign_module: policy.spec.lifecycle.replace_foreign_module,
                reload_allowed: grants[n],
                backend: policy.spec.backend,
            }
        } else if let Some(spec) = leaving.unloading.get(&n) {
            spec.clone()
        } else {
            if node.has_agent_label {
                out.unlabel_nodes.insert(node.name.to_string());
            }
            continue;
        };
        if !node.has_agent_label {
            out.label_nodes.insert(node.name.to_string());
        }
        desired.push((
            node.name.to_string(),
            DesiredNodeState {
                spec,
                node_uid: node.uid.to_string(),
            },
        ));
    }
    out.agent_nodes = desired.iter().map(|(n, _)| n.clone()).collect();
    out.node_states = desired.into_iter().collect();
    out.deletions = leaving.deletions.iter().map(|s| s.to_string()).collect();
    for p in &policies {
        if !p.deleting && !p.has_finalizer {
            out.finalizers_to_add.insert(p.name.to_string());
        }
    }
    out.requeue_after = leaving.next_deadline.map(|d| {
        let secs = d.as_second().saturating_sub(now.as_second()).max(1);
        Duration::from_secs(u64::try_from(secs).unwrap_or(1))
    });
    out.policy_status = status::aggregate(
        &policies,
        nodes,
        &assignment,
        &leaving,
        snapshot.node_lease_grace.is_some(),
        now,
    );
    out.finalizer_releases = leaving.releases;
    out.node_phases = status::phase_counts(snapshot.node_states.iter().map(|s| s.as_ref()));
    out
}
