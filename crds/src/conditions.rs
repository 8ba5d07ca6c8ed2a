//! metav1.Condition helpers and the condition vocabulary of ToaPolicy.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types on ToaPolicy.status.
pub mod types {
    /// Every assigned node has the module loaded.
    pub const READY: &str = "Ready";
    /// Nodes are still building, loading, reloading or unloading.
    pub const PROGRESSING: &str = "Progressing";
    /// Some nodes failed.
    pub const DEGRADED: &str = "Degraded";
    /// Nodes this policy selects are held by a higher-ranked policy.
    pub const CONFLICT: &str = "Conflict";
    /// True when the module trusts TOA from every source
    /// (`acceptFromAnySource`) or from none (no `trustedSources`).
    pub const TRUST_WARNING: &str = "TrustWarning";
    /// False when the API server refused (or failed) a write the operator makes for this
    /// policy: its nodes' ToaNodeStates or `toa.dev/agent` labels, or the agent DaemonSet.
    pub const SYNCED: &str = "Synced";
    /// False when agent pods cannot run for this policy's nodes: the DaemonSet controller
    /// cannot create them (FailedCreate), or a node's pod stays unscheduled or not running.
    pub const AGENTS_AVAILABLE: &str = "AgentsAvailable";
    /// Every type, in the order the operator writes them.
    pub const ALL: [&str; 8] = [
        READY,
        PROGRESSING,
        DEGRADED,
        CONFLICT,
        TRUST_WARNING,
        SYNCED,
        AGENTS_AVAILABLE,
        NODES_STALE,
    ];
    /// True when assigned nodes stopped renewing their node Lease (kube-node-lease) for longer
    /// than the operator's grace period.
    pub const NODES_STALE: &str = "NodesStale";
}

/// Condition status strings.
pub mod status {
    /// "True".
    pub const TRUE: &str = "True";
    /// "False".
    pub const FALSE: &str = "False";
    /// "Unknown".
    pub const UNKNOWN: &str = "Unknown";
}

/// Reasons the operator puts on ToaPolicy conditions (CamelCase, as
/// metav1.Condition requires).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyReason {
    /// Ready=True.
    AllNodesLoaded,
    /// Ready=False: some assigned nodes are not Loaded yet.
    NodesNotReady,
    /// Ready=False: no Linux node matches the selector.
    NoMatchingNodes,
    /// Ready=False: every matching node is held by another policy.
    AllNodesConflicting,
    /// Ready=False: the selector cannot be evaluated.
    InvalidSelector,
    /// Ready=False / Progressing=True: the policy is being deleted.
    Deleting,
    /// Progressing=True.
    RollingOut,
    /// Progressing=False.
    RolloutComplete,
    /// Degraded=True.
    NodesFailed,
    /// Degraded=True: the deletion's unload timeout passed.
    UnloadTimedOut,
    /// Degraded=False.
    NoFailures,
    /// Conflict=True.
    NodesClaimedElsewhere,
    /// Conflict=False.
    NoConflicts,
    /// TrustWarning=True: acceptFromAnySource with no trustedSources.
    AcceptFromAnySource,
    /// TrustWarning=True: neither trustedSources nor acceptFromAnySource.
    NoTrustedSources,
    /// TrustWarning=False.
    TrustedSourcesListed,
    /// Synced=True: every write for the policy was accepted.
    WritesApplied,
    /// Synced=False: a write for the policy failed; the message has the API server's answer.
    WriteFailed,
    /// AgentsAvailable=True.
    AgentsRunning,
    /// AgentsAvailable=False: the DaemonSet controller cannot create agent pods.
    AgentPodsRefused,
    /// AgentsAvailable=False: selected nodes have no running agent pod past the timeout.
    AgentPodsNotRunning,
    /// NodesStale=True: node Leases not renewed within the grace period.
    NodeLeasesExpired,
    /// NodesStale=False.
    NodeLeasesCurrent,
}

impl PolicyReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyReason::AllNodesLoaded => "AllNodesLoaded",
            PolicyReason::NodesNotReady => "NodesNotReady",
            PolicyReason::NoMatchingNodes => "NoMatchingNodes",
            PolicyReason::AllNodesConflicting => "AllNodesConflicting",
            PolicyReason::InvalidSelector => "InvalidSelector",
            PolicyReason::Deleting => "Deleting",
            PolicyReason::RollingOut => "RollingOut",
            PolicyReason::RolloutComplete => "RolloutComplete",
            PolicyReason::NodesFailed => "NodesFailed",
            PolicyReason::UnloadTimedOut => "UnloadTimedOut",
            PolicyReason::NoFailures => "NoFailures",
            PolicyReason::NodesClaimedElsewhere => "NodesClaimedElsewhere",
            PolicyReason::NoConflicts => "NoConflicts",
            PolicyReason::AcceptFromAnySource => "AcceptFromAnySource",
            PolicyReason::NoTrustedSources => "NoTrustedSources",
            PolicyReason::TrustedSourcesListed => "TrustedSourcesListed",
            PolicyReason::WritesApplied => "WritesApplied",
            PolicyReason::WriteFailed => "WriteFailed",
            PolicyReason::AgentsRunning => "AgentsRunning",
            PolicyReason::AgentPodsRefused => "AgentPodsRefused",
            PolicyReason::AgentPodsNotRunning => "AgentPodsNotRunning",
            PolicyReason::NodeLeasesExpired => "NodeLeasesExpired",
            PolicyReason::NodeLeasesCurrent => "NodeLeasesCurrent",
        }
    }
}

impl fmt::Display for PolicyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Build a condition. `last_transition_time` is `now`; use [`set_condition`]
/// to keep the old time when the status did not change.
pub fn new_condition(
    type_: &str,
    is_true: bool,
    reason: PolicyReason,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if is_true { status::TRUE } else { status::FALSE }.to_string(),
        reason: reason.as_str().to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(now),
    }
}

/// Insert or replace the condition of `cond.type_`. The previous
/// lastTransitionTime is kept when the status value is unchanged, so the
/// time says when the status last flipped (metav1.Condition semantics).
pub fn set_condition(conditions: &mut Vec<Condition>, mut cond: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        Some(existing) => {
            if existing.status == cond.status {
                cond.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = cond;
        }
        None => conditions.push(cond),
    }
}

/// The condition of the given type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition exists with status "True".
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == status::TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid test timestamp")
    }

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            new_condition(
                types::READY,
                false,
                PolicyReason::NodesNotReady,
                "0/1",
                Some(1),
                ts(10),
            ),
        );
        set_condition(
            &mut conds,
            new_condition(
                types::READY,
                false,
                PolicyReason::NodesNotReady,
                "0/2",
                Some(2),
                ts(20),
            ),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Time(ts(10)));
        assert_eq!(conds[0].message, "0/2");
        assert_eq!(conds[0].observed_generation, Some(2));
        set_condition(
            &mut conds,
            new_condition(
                types::READY,
                true,
                PolicyReason::AllNodesLoaded,
                "2/2",
                Some(2),
                ts(30),
            ),
        );
        assert_eq!(conds[0].last_transition_time, Time(ts(30)));
        assert!(is_condition_true(&conds, types::READY));
        assert!(!is_condition_true(&conds, types::DEGRADED));
        assert_eq!(
            find_condition(&conds, types::READY).map(|c| c.reason.as_str()),
            Some("AllNodesLoaded")
        );
    }
}
