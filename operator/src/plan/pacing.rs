//! Pacing of disruptive module reloads.
//!
//! An agent asks for a reload with `status.reloadPending` (new module source,
//! or a foreign module to replace); the operator answers with
//! `spec.reloadAllowed`. Per policy, a node is *busy* while its module is
//! changing (phase Building, Loading or Unloading) or while it holds a grant
//! and still has its reload pending. New grants go to waiting nodes in name
//! order, only while busy nodes number fewer than `maxUnavailable`. A grant
//! stays until the agent clears `reloadPending`, so a reload is never cut off
//! halfway; a failed reload keeps its grant and so holds the rollout back.
//!
//! Stale nodes (their node Lease expired: powered off, cut off) are neither
//! busy nor granted: whatever they last reported, they cannot act now, and a
//! dead node must not hold its policy's rollout forever. A grant a stale node
//! already holds stays in its spec (its reload resumes when it comes back), but
//! it does not count against maxUnavailable meanwhile; so while a node is stale,
//! one more node than maxUnavailable may end up reloading when it returns.

use toa_crds::ToaNodeState;

use super::assign::{Assignment, NodeView, PolicyView};
use super::lifecycle::Leaving;

/// Facts about one node's reload, from its current ToaNodeState.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReloadState {
    /// The agent wants a reload.
    pub pending: bool,
    /// The current spec grants a reload for this same policy.
    pub granted: bool,
    /// The module is changing right now.
    pub transitioning: bool,
}

impl ReloadState {
    pub fn of(state: Option<&ToaNodeState>, policy: &str) -> Self {
        let Some(state) = state else {
            return Self::default();
        };
        let status = state.status.as_ref();
        Self {
            pending: status.is_some_and(|s| s.reload_pending),
            granted: state.spec.reload_allowed && state.spec.policy == policy,
            transitioning: status
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_transitioning()),
        }
    }

    /// Counts against maxUnavailable.
    pub fn busy(self) -> bool {
        self.transitioning || (self.granted && self.pending)
    }
}

/// Per node index: the new spec has `reloadAllowed: true`.
pub(crate) fn grant_reloads(
    policies: &[PolicyView<'_>],
    nodes: &[NodeView<'_>],
    assignment: &Assignment,
    leaving: &Leaving<'_>,
) -> Vec<bool> {
    let mut busy = vec![0usize; policies.len()];
    let mut waiting: Vec<Vec<usize>> = vec![Vec::new(); policies.len()];
    let mut grants = vec![false; nodes.len()];

    // Nodes are sorted by name, so `waiting` lists come out in name order.
    for (n, owner) in assignment.owner.iter().enumerate() {
        let Some(idx) = *owner else { continue };
        let r = ReloadState::of(nodes[n].state, policies[idx].name);
        if nodes[n].stale {
            grants[n] = r.granted && r.pending;
            continue;
        }
        if r.busy() {
            busy[idx] += 1;
        }
        if r.granted && r.pending {
            grants[n] = true;
        } else if r.pending {
            waiting[idx].push(n);
        }
    }
    // Unloading nodes that left a policy still disrupt its service.
    for (idx, members) in leaving.unloading_by_policy.iter().enumerate() {
        for n in members {
            if !nodes[*n].stale
                && ReloadState::of(nodes[*n].state, policies[idx].name).transitioning
            {
                busy[idx] += 1;
            }
        }
    }
    for (idx, candidates) in waiting.into_iter().enumerate() {
        let budget = policies[idx].max_unavailable().saturating_sub(busy[idx]);
        for n in candidates.into_iter().take(budget) {
            grants[n] = true;
        }
    }
    grants
}
