//! Nodes that left their policy, and the finalizer of policies being deleted.
//!
//! A node leaves when its ToaNodeState names a policy that no longer owns it
//! (deselected, policy deleted, node no longer Linux). With `onDelete:
//! Unload` the node keeps its state with `desiredState: Unloaded` (and its
//! agent label) until the agent reports Unloaded; then the state goes. With
//! `Keep`, or when the policy is gone, the state goes at once and the module
//! stays loaded, unmanaged. A policy being deleted keeps its finalizer until
//! its leaving nodes are unloaded or `unloadTimeoutSeconds` has passed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use toa_crds::{DesiredState, NodePhase, OnDelete, ToaNodeState, ToaNodeStateSpec};

use super::assign::{Assignment, NodeTable, PolicyView};
use super::FinalizerRelease;

/// Outcome for nodes that are not owned by any live policy.
#[derive(Debug, Default)]
pub(crate) struct Leaving<'a> {
    /// Node index -> spec with desiredState Unloaded.
    pub unloading: BTreeMap<usize, ToaNodeStateSpec>,
    /// Per policy index: indices of its leaving nodes not yet unloaded (by name).
    pub unloading_by_policy: Vec<Vec<usize>>,
    /// ToaNodeStates to delete.
    pub deletions: BTreeSet<&'a str>,
    /// Finalizers to release, by policy name.
    pub releases: BTreeMap<String, FinalizerRelease>,
    /// Per policy index: the unload deadline, when it is being deleted with
    /// onDelete Unload.
    pub deadlines: Vec<Option<Timestamp>>,
    /// Per policy index: the deadline has passed.
    pub timed_out: Vec<bool>,
    /// Earliest deadline still ahead.
    pub next_deadline: Option<Timestamp>,
}

/// True when the node has nothing loaded on behalf of the operator: the agent
/// never reported (so never loaded), or it reports Unloaded.
pub(crate) fn is_unloaded(state: &ToaNodeState) -> bool {
    match &state.status {
        None => true,
        Some(s) => s.phase == Some(NodePhase::Unloaded) || s.phase.is_none(),
    }
}

fn deadline(policy: &PolicyView<'_>) -> Option<Timestamp> {
    let started = policy.deletion_time?;
    let timeout = SignedDuration::from_secs(policy.spec.lifecycle.unload_timeout_seconds.max(0));
    Some(started.saturating_add(timeout).unwrap_or(started))
}

pub(crate) fn leaving_nodes<'a>(
    policies: &[PolicyView<'_>],
    table: &NodeTable<'a>,
    assignment: &Assignment,
    now: Timestamp,
) -> Leaving<'a> {
    let by_name: BTreeMap<&str, usize> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name, i))
        .collect();
    let mut out = Leaving {
        unloading_by_policy: vec![Vec::new(); policies.len()],
        deadlines: vec![None; policies.len()],
        timed_out: vec![false; policies.len()],
        ..Leaving::default()
    };
    for (i, p) in policies.iter().enumerate() {
        if p.deleting && p.spec.lifecycle.on_delete == OnDelete::Unload {
            let d = deadline(p);
            out.deadlines[i] = d;
            out.timed_out[i] = d.is_some_and(|d| now >= d);
        }
    }
    // The Node is gone (its ownerReference will collect the state too;
    // deleting it here also covers states created without one).
    out.deletions.extend(table.orphan_states.iter().copied());

    // Nodes still waiting for their module to go, per policy.
    let mut waiting: Vec<Vec<usize>> = vec![Vec::new(); policies.len()];
    for (n, node) in table.nodes.iter().enumerate() {
        let Some(state) = node.state else { continue };
        if assignment.owner[n].is_some() {
            continue;
        }
        let Some(&idx) = by_name.get(state.spec.policy.as_str()) else {
            // Its policy is gone: nothing left to decide how to unload.
            out.deletions.insert(node.name);
            continue;
        };
        if policies[idx].spec.lifecycle.on_delete == OnDelete::Keep || is_unloaded(state) {
            out.deletions.insert(node.name);
            continue;
        }
        waiting[idx].push(n);
    }

    for (idx, nodes_waiting) in waiting.into_iter().enumerate() {
        let policy = &policies[idx];
        if policy.deleting && policy.has_finalizer {
            let release = match policy.spec.lifecycle.on_delete {
                OnDelete::Keep => Some(FinalizerRelease::Kept),
                OnDelete::Unload if out.timed_out[idx] && !nodes_waiting.is_empty() => {
                    Some(FinalizerRelease::TimedOut {
                        remaining: nodes_waiting.len(),
                        nodes: nodes_waiting
                            .iter()
                            .take(toa_crds::policy::MAX_REPORTED_FAILURES)
                            .map(|n| table.nodes[*n].name.to_string())
                            .collect(),
                    })
                }
                OnDelete::Unload if nodes_waiting.is_empty() => Some(FinalizerRelease::AllUnloaded),
                OnDelete::Unload => {
                    if let Some(d) = out.deadlines[idx] {
                        out.next_deadline =
                            Some(out.next_deadline.map_or(d, |n: Timestamp| n.min(d)));
                    }
                    None
                }
            };
            if let Some(r) = release {
                out.releases.insert(policy.name.to_string(), r);
            }
        }
        // Gave up: forget these nodes (their modules stay loaded), but only once the finalizer
        // is released. Until then they stay unloading, so that every pass sees the same
        // timed-out nodes: a pass that releases nothing (housekeeping) and deleted them would
        // leave the releasing pass nothing waiting, and it would report "every node unloaded"
        // instead of the timeout naming them.
        if out.timed_out[idx] && !policy.has_finalizer {
            out.deletions
                .extend(nodes_waiting.iter().map(|n| table.nodes[*n].name));
            continue;
        }
        for n in nodes_waiting {
            let node = &table.nodes[n];
            let Some(state) = node.state else { continue };
            let spec = ToaNodeStateSpec {
                desired_state: DesiredState::Unloaded,
                reload_allowed: false,
                node_name: node.name.to_string(),
                ..state.spec.clone()
            };
            out.unloading.insert(n, spec);
            out.unloading_by_policy[idx].push(n);
        }
    }
    out
}
