//! ToaPolicy.status from the node states.
//!
//! Counts: `selectedNodes` = nodes the policy owns; `loadedNodes` = owned
//! nodes whose agent reports Loaded for the current spec (same policy and
//! settings, latest generation observed); `failedNodes` = owned nodes, and
//! nodes still unloading after leaving it, whose phase is Failed;
//! `conflictingNodes` = nodes it matches that a higher-ranked policy owns;
//! `excludedNodes` = nodes it matches that can never run the agent (no
//! `kubernetes.io/os=linux` label, virtual kubelets).
//! `failures` lists the failed nodes by name, at most 20; `staleNodes` =
//! owned nodes whose node Lease expired (they are counted above as they last
//! reported, and named in the NodesStale condition).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use toa_crds::conditions::{new_condition, set_condition, types, PolicyReason};
use toa_crds::policy::MAX_REPORTED_FAILURES;
use toa_crds::{
    DesiredState, KernelCount, ModuleSettings, NodeFailure, NodePhase, OnDelete, ToaNodeState,
    ToaPolicyStatus,
};

use super::assign::{Assignment, NodeView, PolicyView};
use super::lifecycle::Leaving;
use super::pacing::ReloadState;

/// How many names a condition message lists before "and N more".
const NAMES_IN_MESSAGE: usize = 3;

/// True when the agent reports Loaded for exactly what this policy wants.
fn loaded_for(state: &ToaNodeState, policy: &PolicyView<'_>) -> bool {
    let Some(status) = state.status.as_ref() else {
        return false;
    };
    let current = match (status.observed_generation, state.metadata.generation) {
        (Some(seen), Some(gen)) => seen >= gen,
        _ => true,
    };
    status.phase == Some(NodePhase::Loaded)
        && current
        && state.spec.policy == policy.name
        && state.spec.desired_state == DesiredState::Loaded
        && state.spec.module == policy.module
        && backend_as_asked(state, policy)
}

/// The node runs the backend the policy asks for: the spec carries the policy's choice and the
/// agent reports that backend serving (for Auto: either one, the agent's pick). A node that
/// still serves the old backend while its switch waits for a grant is not done yet. A status
/// without a backend (agents before the eBPF backend) counts as the module.
fn backend_as_asked(state: &ToaNodeState, policy: &PolicyView<'_>) -> bool {
    let serving = state
        .status
        .as_ref()
        .and_then(|s| s.backend)
        .unwrap_or(toa_crds::Backend::Module);
    state.spec.backend == policy.spec.backend
        && policy.spec.backend.fixed().is_none_or(|b| b == serving)
}

fn failure_of(node: &str, state: &ToaNodeState) -> Option<NodeFailure> {
    let status = state.status.as_ref()?;
    if status.phase != Some(NodePhase::Failed) {
        return None;
    }
    Some(NodeFailure {
        node: node.to_string(),
        reason: status
            .reason
            .map_or_else(|| "Unknown".to_string(), |r| r.to_string()),
        message: status
            .message
            .clone()
            .unwrap_or_else(|| "the agent reported Failed without a message".to_string()),
    })
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The first [`NAMES_IN_MESSAGE`] of `items`, then "and N more" when there are others: the
/// list a condition message names.
pub fn first_names(items: impl ExactSizeIterator<Item = String>) -> Vec<String> {
    let total = items.len();
    let mut names: Vec<String> = items.take(NAMES_IN_MESSAGE).collect();
    if total > NAMES_IN_MESSAGE {
        names.push(format!("and {} more", total - NAMES_IN_MESSAGE));
    }
    names
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Per-policy tallies gathered from the node states.
#[derive(Default)]
struct Tally<'s> {
    selected: usize,
    loaded: usize,
    converging: usize,
    reloads_pending: usize,
    kernels: BTreeMap<&'s str, usize>,
    failures: Vec<NodeFailure>,
    /// Owned stale nodes, in name order.
    stale: Vec<&'s str>,
    /// Stale nodes are looked for (the operator has a node Lease grace period).
    stale_checked: bool,
}

pub(crate) fn aggregate<'s>(
    policies: &[PolicyView<'_>],
    nodes: &[NodeView<'s>],
    assignment: &Assignment,
    leaving: &Leaving<'_>,
    stale_checked: bool,
    now: Timestamp,
) -> BTreeMap<String, ToaPolicyStatus> {
    let mut tallies: Vec<Tally<'s>> = (0..policies.len())
        .map(|_| Tally {
            stale_checked,
            ..Tally::default()
        })
        .collect();
    for (node, owner) in nodes.iter().zip(&assignment.owner) {
        let Some(idx) = *owner else { continue };
        let t = &mut tallies[idx];
        let policy = &policies[idx];
        t.selected += 1;
        if node.stale {
            t.stale.push(node.name);
        }
        let Some(state) = node.state else {
            t.converging += 1;
            continue;
        };
        if let Some(k) = state.status.as_ref().and_then(|s| s.kernel.as_ref()) {
            *t.kernels.entry(k.release.as_str()).or_insert(0) += 1;
        }
        if ReloadState::of(Some(state), policy.name).pending {
            t.reloads_pending += 1;
        }
        if loaded_for(state, policy) {
            t.loaded += 1;
        } else if let Some(f) = failure_of(node.name, state) {
            t.failures.push(f);
        } else {
            t.converging += 1;
        }
    }
    for (idx, members) in leaving.unloading_by_policy.iter().enumerate() {
        for n in members {
            let node = &nodes[*n];
            if let Some(f) = node.state.and_then(|s| failure_of(node.name, s)) {
                tallies[idx].failures.push(f);
            }
        }
    }

    policies
        .iter()
        .zip(tallies)
        .enumerate()
        .map(|(idx, (p, mut t))| {
            t.failures.sort_by(|a, b| a.node.cmp(&b.node));
            let status = policy_status(p, idx, t, assignment, leaving, policies, now);
            (p.name.to_string(), status)
        })
        .collect()
}

/// TrustWarning: whom the module accepts TOA from, as the settings decide it.
pub(crate) fn trust_warning(m: &ModuleSettings) -> (bool, PolicyReason, String) {
    let n = m.trusted_sources.len();
    if n > 0 {
        let mut msg = format!(
            "TOA accepted only from {}",
            plural(n, "trusted network", "trusted networks")
        );
        if m.accept_from_any_source {
            msg.push_str(" (acceptFromAnySource is ignored while trustedSources lists networks)");
        }
        (false, PolicyReason::TrustedSourcesListed, msg)
    } else if m.accept_from_any_source {
        (
            true,
            PolicyReason::AcceptFromAnySource,
            "acceptFromAnySource: any host that can reach a port in scope can choose the client address applications see; list the balancer networks in spec.module.trustedSources instead".to_string(),
        )
    } else {
        (
            true,
            PolicyReason::NoTrustedSources,
            "spec.module.trustedSources is empty and acceptFromAnySource is false: the module ignores TOA options from every source; list the balancer networks (or the node addresses after kube-proxy SNAT) in trustedSources".to_string(),
        )
    }
}

fn policy_status(
    p: &PolicyView<'_>,
    idx: usize,
    t: Tally<'_>,
    assignment: &Assignment,
    leaving: &Leaving<'_>,
    policies: &[PolicyView<'_>],
    now: Timestamp,
) -> ToaPolicyStatus {
    let conflicts = &assignment.conflicts[idx];
    let conflicting: usize = conflicts.values().map(|n| *n as usize).sum();
    let excluded: usize = assignment.excluded[idx].values().map(|n| *n as usize).sum();
    // Said in the Ready message: these nodes match but will never be counted anywhere else.
    let excluded_note = if excluded == 0 {
        String::new()
    } else {
        let parts: Vec<String> = assignment.excluded[idx]
            .iter()
            .map(|(why, n)| format!("{n} {}", why.describe()))
            .collect();
        format!(
            "; {} matching spec.nodeSelector can never run the agent and {} excluded ({}): the agent needs kubernetes.io/os=linux and a real kubelet",
            plural(excluded, "node", "nodes"),
            if excluded == 1 { "is" } else { "are" },
            parts.join(", ")
        )
    };
    let unloading = leaving.unloading_by_policy[idx].len();
    let failed = t.failures.len();
    let gen = p.generation;
    let cond = |type_: &str, ok: bool, reason: PolicyReason, msg: String| {
        new_condition(type_, ok, reason, msg, gen, now)
    };
    let holders = conflicts
        .iter()
        .map(|(w, n)| format!("{} ({n})", policies[*w].name))
        .collect::<Vec<_>>()
        .join(", ");

    let ready_cond = |ok: bool, reason: PolicyReason, msg: String| {
        cond(types::READY, ok, reason, format!("{msg}{excluded_note}"))
    };
    let ready = if p.deleting {
        cond(
            types::READY,
            false,
            PolicyReason::Deleting,
            deleting_message(p, idx, leaving),
        )
    } else if let Err(e) = &p.selector {
        ready_cond(
            false,
            PolicyReason::InvalidSelector,
            format!("{e}: this policy selects no node until it is fixed"),
        )
    } else if t.selected == 0 && conflicting > 0 {
        ready_cond(
            false,
            PolicyReason::AllNodesConflicting,
            format!(
                "all {} matching spec.nodeSelector are held by higher-ranked policies: {holders}; raise spec.priority or narrow the other policies' nodeSelector",
                plural(conflicting, "Linux node", "Linux nodes")
            ),
        )
    } else if t.selected == 0 {
        ready_cond(
            false,
            PolicyReason::NoMatchingNodes,
            "no Linux node matches spec.nodeSelector".to_string(),
        )
    } else if t.loaded == t.selected {
        ready_cond(
            true,
            PolicyReason::AllNodesLoaded,
            format!(
                "module loaded on all {}",
                plural(t.selected, "node", "nodes")
            ),
        )
    } else {
        ready_cond(
            false,
            PolicyReason::NodesNotReady,
            format!(
                "module loaded on {} of {} nodes ({failed} failed, {} in progress)",
                t.loaded, t.selected, t.converging
            ),
        )
    };

    let mut progress = Vec::new();
    if t.converging > 0 {
        progress.push(format!(
            "{} converging",
            plural(t.converging, "node", "nodes")
        ));
    }
    if t.reloads_pending > 0 {
        progress.push(format!(
            "{} pending (maxUnavailable {})",
            plural(t.reloads_pending, "reload", "reloads"),
            p.max_unavailable()
        ));
    }
    if unloading > 0 {
        progress.push(format!("{} unloading", plural(unloading, "node", "nodes")));
    }
    let progressing = if progress.is_empty() {
        cond(
            types::PROGRESSING,
            false,
            PolicyReason::RolloutComplete,
            "every node is in its desired state".to_string(),
        )
    } else {
        cond(
            types::PROGRESSING,
            true,
            PolicyReason::RollingOut,
            progress.join("; "),
        )
    };

    let degraded = if p.deleting && leaving.timed_out[idx] {
        cond(
            types::DEGRADED,
            true,
            PolicyReason::UnloadTimedOut,
            deleting_message(p, idx, leaving),
        )
    } else if failed > 0 {
        let names = first_names(
            t.failures
                .iter()
                .map(|f| format!("{} ({})", f.node, f.reason)),
        );
        cond(
            types::DEGRADED,
            true,
            PolicyReason::NodesFailed,
            format!(
                "{} failed: {}; see status.failures and the nodes' ToaNodeState status",
                plural(failed, "node", "nodes"),
                names.join(", ")
            ),
        )
    } else {
        cond(
            types::DEGRADED,
            false,
            PolicyReason::NoFailures,
            "no node failed".to_string(),
        )
    };

    let conflict = if conflicting > 0 {
        cond(
            types::CONFLICT,
            true,
            PolicyReason::NodesClaimedElsewhere,
            format!(
                "{} selected by this policy {} held by higher-ranked policies: {holders}",
                plural(conflicting, "node", "nodes"),
                if conflicting == 1 { "is" } else { "are" }
            ),
        )
    } else {
        cond(
            types::CONFLICT,
            false,
            PolicyReason::NoConflicts,
            "no other policy holds a node this policy selects".to_string(),
        )
    };

    let (warn, reason, msg) = trust_warning(&p.module);
    let trust = cond(types::TRUST_WARNING, warn, reason, msg);

    let stale_count = t.stale.len();
    let nodes_stale = if !t.stale_checked {
        None
    } else if stale_count > 0 {
        let names = first_names(t.stale.iter().map(|n| n.to_string()));
        Some(cond(
            types::NODES_STALE,
            true,
            PolicyReason::NodeLeasesExpired,
            format!(
                "{} stopped renewing {} node Lease (kube-node-lease) for longer than the grace period: {}; {} powered off or cut off from the apiserver, so {} last reported state may be out of date. {} not hold back the rollout. Delete the Node object of a machine that is gone for good",
                plural(stale_count, "node", "nodes"),
                if stale_count == 1 { "its" } else { "their" },
                names.join(", "),
                if stale_count == 1 { "it is" } else { "they are" },
                if stale_count == 1 { "its" } else { "their" },
                if stale_count == 1 { "It does" } else { "They do" },
            ),
        ))
    } else {
        Some(cond(
            types::NODES_STALE,
            false,
            PolicyReason::NodeLeasesCurrent,
            "every node of this policy renews its node Lease".to_string(),
        ))
    };

    let mut conditions: Vec<Condition> = p
        .old_status
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in [ready, progressing, degraded, conflict, trust] {
        set_condition(&mut conditions, c);
    }
    match nodes_stale {
        Some(c) => set_condition(&mut conditions, c),
        // No grace period: no claim either way.
        None => conditions.retain(|c| c.type_ != types::NODES_STALE),
    }
    // Fixed order, only our own types: stable output for diffing. Synced and AgentsAvailable
    // are kept as they were: the controller sets them from what it observes outside the plan.
    sort_conditions(&mut conditions);

    let failed_nodes = count(failed);
    let mut failures = t.failures;
    failures.truncate(MAX_REPORTED_FAILURES);
    ToaPolicyStatus {
        observed_generation: gen,
        conditions,
        selected_nodes: count(t.selected),
        loaded_nodes: count(t.loaded),
        failed_nodes,
        conflicting_nodes: count(conflicting),
        excluded_nodes: count(excluded),
        stale_nodes: count(stale_count),
        kernels: t
            .kernels
            .into_iter()
            .map(|(release, n)| KernelCount {
                release: release.to_string(),
                nodes: count(n),
            })
            .collect(),
        failures,
    }
}

/// Keeps only the operator's condition types, in their fixed order.
pub fn sort_conditions(conditions: &mut Vec<Condition>) {
    let order = types::ALL;
    conditions.retain(|c| order.contains(&c.type_.as_str()));
    conditions.sort_by_key(|c| order.iter().position(|o| *o == c.type_));
}

fn deleting_message(p: &PolicyView<'_>, idx: usize, leaving: &Leaving<'_>) -> String {
    let waiting = leaving.unloading_by_policy[idx].len();
    let timeout = p.spec.lifecycle.unload_timeout_seconds;
    match p.spec.lifecycle.on_delete {
        OnDelete::Keep => {
            "policy is being deleted; lifecycle.onDelete is Keep, so modules stay loaded".to_string()
        }
        OnDelete::Unload if leaving.timed_out[idx] => format!(
            "policy is being deleted: nodes did not unload within lifecycle.unloadTimeoutSeconds ({timeout}s); their modules stay loaded, unmanaged"
        ),
        OnDelete::Unload if waiting == 0 => {
            "policy is being deleted: every node is unloaded".to_string()
        }
        OnDelete::Unload => format!(
            "policy is being deleted: waiting for {} to unload, at most until {} (lifecycle.unloadTimeoutSeconds {timeout}s)",
            plural(waiting, "node", "nodes"),
            leaving.deadlines[idx].map_or_else(|| "the timeout".to_string(), |d| d.to_string())
        ),
    }
}

/// Node count by policy and phase.
pub(crate) fn phase_counts<'a>(
    states: impl Iterator<Item = &'a ToaNodeState>,
) -> BTreeMap<String, BTreeMap<String, u32>> {
    // Count on borrowed keys, allocate once per (policy, phase) at the end.
    let mut counts: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for state in states {
        let phase = state.phase().map_or("Unknown", NodePhase::as_str);
        *counts
            .entry((state.spec.policy.as_str(), phase))
            .or_insert(0) += 1;
    }
    let mut out: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for ((policy, phase), n) in counts {
        out.entry(policy.to_string())
            .or_default()
            .insert(phase.to_string(), n);
    }
    out
}

#[cfg(test)]
mod trust_tests {
    use super::*;

    #[test]
    fn trust_warning_says_whom_the_module_trusts() {
        let none = ModuleSettings::default();
        let (warn, reason, msg) = trust_warning(&none);
        assert!(warn);
        assert_eq!(reason, PolicyReason::NoTrustedSources);
        assert!(
            msg.contains("ignores TOA options from every source"),
            "{msg}"
        );

        let any = ModuleSettings {
            accept_from_any_source: true,
            ..ModuleSettings::default()
        };
        let (warn, reason, msg) = trust_warning(&any);
        assert!(warn);
        assert_eq!(reason, PolicyReason::AcceptFromAnySource);
        assert!(msg.contains("trustedSources instead"), "{msg}");

        let listed = ModuleSettings {
            trusted_sources: vec!["10.0.0.0/8".into()],
            accept_from_any_source: true,
            ..ModuleSettings::default()
        };
        let (warn, reason, msg) = trust_warning(&listed);
        assert!(!warn);
        assert_eq!(reason, PolicyReason::TrustedSourcesListed);
        assert!(
            msg.contains("1 trusted network") && msg.contains("ignored"),
            "{msg}"
        );
    }
}
