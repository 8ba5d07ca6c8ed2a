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

use super::assign::{Assignment, NodeView, PolicyView};
use super::FinalizerRelease;

/// Outcome for nodes that are not owned by any live policy.
#[derive(Debug, Default)]
pub(crate) struct Leaving<'a> {
    /// Node -> spec with desiredState Unloaded.
    pub unloading: BTreeMap<&'a str, ToaNodeStateSpec>,
    /// Per policy index: its leaving nodes not yet unloaded (sorted).
    pub unloading_by_policy: Vec<Vec<&'a str>>,
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
    nodes: &BTreeMap<&'a str, NodeView<'a>>,
    states: &BTreeMap<&'a str, &'a ToaNodeState>,
    assignment: &Assignment<'_>,
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

    // Nodes still waiting for their module to go, per policy.
    let mut waiting: Vec<Vec<(&'a str, &'a ToaNodeState)>> = vec![Vec::new(); policies.len()];
    for (&name, &state) in states {
        if !nodes.contains_key(name) {
            // The Node is gone (its ownerReference will collect the state
            // too; deleting it here also covers states created without one).
            out.deletions.insert(name);
            continue;
        }
        if assignment.owner.contains_key(name) {
            continue;
        }
        let Some(&idx) = by_name.get(state.spec.policy.as_str()) else {
            // Its policy is gone: nothing left to decide how to unload.
            out.deletions.insert(name);
            continue;
        };
        let policy = &policies[idx];
        if policy.spec.lifecycle.on_delete == OnDelete::Keep || is_unloaded(state) {
            out.deletions.insert(name);
            continue;
        }
        waiting[idx].push((name, state));
    }

    for (idx, nodes_waiting) in waiting.into_iter().enumerate() {
        if out.timed_out[idx] {
            // Gave up: forget these nodes (their modules stay loaded).
            out.deletions.extend(nodes_waiting.iter().map(|(n, _)| *n));
            continue;
        }
        for (name, state) in nodes_waiting {
            let spec = ToaNodeStateSpec {
                desired_state: DesiredState::Unloaded,
                reload_allowed: false,
                node_name: name.to_string(),
                ..state.spec.clone()
            };
            out.unloading.insert(name, spec);
            out.unloading_by_policy[idx].push(name);
        }
    }

    // Finalizers.
    for (idx, p) in policies.iter().enumerate() {
        if !p.deleting || !p.has_finalizer {
            continue;
        }
        let release = match p.spec.lifecycle.on_delete {
            OnDelete::Keep => Some(FinalizerRelease::Kept),
            OnDelete::Unload if out.timed_out[idx] => {
                let remaining: Vec<&str> = states
                    .iter()
                    .filter(|(n, s)| {
                        s.spec.policy == p.name
                            && nodes.contains_key(*n)
                            && !assignment.owner.contains_key(*n)
                            && !is_unloaded(s)
                    })
                    .map(|(n, _)| *n)
                    .collect();
                if remaining.is_empty() {
                    Some(FinalizerRelease::AllUnloaded)
                } else {
                    Some(FinalizerRelease::TimedOut {
                        remaining: remaining.len(),
                        nodes: remaining
                            .iter()
                            .take(toa_crds::policy::MAX_REPORTED_FAILURES)
                            .map(|n| n.to_string())
                            .collect(),
                    })
                }
            }
            OnDelete::Unload if out.unloading_by_policy[idx].is_empty() => {
                Some(FinalizerRelease::AllUnloaded)
            }
            OnDelete::Unload => {
                if let Some(d) = out.deadlines[idx] {
                    out.next_deadline = Some(out.next_deadline.map_or(d, |n: Timestamp| n.min(d)));
                }
                None
            }
        };
        if let Some(r) = release {
            out.releases.insert(p.name.to_string(), r);
        }
    }
    out
}
