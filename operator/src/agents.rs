//! Whether the agent pods of a policy's nodes can run: the `AgentsAvailable` condition.
//!
//! Agents that never start never report, and without this the policy would only show nodes
//! "in progress" forever. Two causes are told apart:
//! - the DaemonSet controller cannot create agent pods at all (Pod Security admission, a
//!   policy engine, a quota): it records `FailedCreate` Events on the DaemonSet; the newest
//!   one is the cause while it is newer than the newest `SuccessfulCreate` and the DaemonSet
//!   still misses pods;
//! - a selected node whose agent pod does not exist or is not Running, and whose agent never
//!   reported, for longer than the start timeout (unschedulable, image pull failing, crash
//!   loop).
//!
//! Pure functions over the reflector stores' contents, so they are tested without an API.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use toa_crds::conditions::{new_condition, types, PolicyReason};
use toa_crds::ToaNodeState;

use crate::plan::first_names;

/// Default of `--agent-start-timeout`: how long a selected node may be without a running agent
/// pod (and without any report from its agent) before the policy says so. Long enough for an
/// image pull and a first module build to start.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);

/// Event reasons the DaemonSet controller records on the DaemonSet.
const FAILED_CREATE: &str = "FailedCreate";
const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";

/// When an Event last happened (series, lastTimestamp, eventTime, creation: whichever is set).
fn last_seen(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The DaemonSet controller's current refusal to create agent pods, if any: the message of the
/// newest FailedCreate Event, when it is newer than every SuccessfulCreate and the DaemonSet
/// has fewer pods than nodes that need one.
pub fn create_refusal(daemonset: Option<&DaemonSet>, events: &[&Event]) -> Option<String> {
    let newest = |reason: &str| {
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| last_seen(e).map(|t| (t, *e)))
            .max_by_key(|(t, _)| *t)
    };
    let (failed_at, failed) = newest(FAILED_CREATE)?;
    if newest(SUCCESSFUL_CREATE).is_some_and(|(t, _)| t > failed_at) {
        return None;
    }
    let missing = daemonset
        .and_then(|d| d.status.as_ref())
        .is_none_or(|s| s.current_number_scheduled < s.desired_number_scheduled);
    missing.then(|| {
        failed
            .message
            .clone()
            .unwrap_or_else(|| "FailedCreate without a message".to_string())
    })
}

/// The node an agent pod is for: `spec.nodeName` once bound, else the DaemonSet controller's
/// node affinity (`matchFields metadata.name`), which is all a pending pod carries.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref() {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first())
        .map(String::as_str)
}

/// Agent pods by node name (the newest when there are several).
pub fn pods_by_node<'a>(pods: impl Iterator<Item = &'a Pod>) -> BTreeMap<&'a str, &'a Pod> {
    let mut out: BTreeMap<&str, &Pod> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = pod_node(pod) else { continue };
        let newer = out.get(node).is_none_or(|old| {
            pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
                > old.metadata.creation_timestamp.as_ref().map(|t| t.0)
        });
        if newer {
            out.insert(node, pod);
        }
    }
    out
}

/// Why a pod is not running, in a few words (phase, and the scheduler's or a container's
/// reason).
fn pod_problem(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let unschedulable = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or("Unschedulable"),
                c.message.as_deref().unwrap_or_default()
            )
        });
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    match unschedulable.or(waiting) {
        Some(why) => format!("pod {name} {phase}, {why}"),
        None => format!("pod {name} {phase}"),
    }
}

/// One node of the policy, as this module needs it.
pub struct NodeAgent<'a> {
    pub node: &'a str,
    /// The node's ToaNodeState (None right after selection, before it is written).
    pub state: Option<&'a ToaNodeState>,
}

/// The `AgentsAvailable` condition of a policy over `nodes` (the ones it wants Loaded), and when
/// to look again (the earliest moment a waiting node would pass the timeout).
pub fn agents_condition(
    nodes: &[NodeAgent<'_>],
    pods: &BTreeMap<&str, &Pod>,
    refusal: Option<&str>,
    timeout: Duration,
    generation: Option<i64>,
    now: Timestamp,
) -> (Condition, Option<Duration>) {
    let mut without_agent = 0usize;
    let mut late: Vec<String> = Vec::new();
    let mut recheck: Option<Duration> = None;
    for n in nodes {
        // An agent that reported runs (or ran): its ToaNodeState tells the rest.
        let Some(state) = n.state else { continue };
        if state.status.is_some() {
            continue;
        }
        let pod = pods.get(n.node);
        let running = pod
            .is_some_and(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        if running {
            continue;
        }
        without_agent += 1;
        let since = pod
            .and_then(|p| p.metadata.creation_timestamp.as_ref())
            .or(state.metadata.creation_timestamp.as_ref())
            .map(|t| t.0);
        let Some(since) = since else { continue };
        let waited = now.duration_since(since);
        let waited = Duration::try_from(waited).unwrap_or_default();
        if waited >= timeout {
            late.push(match pod {
                Some(p) => format!("{} ({})", n.node, pod_problem(p)),
                None => format!("{} (no agent pod)", n.node),
            });
        } else {
            let left = timeout - waited + Duration::from_secs(1);
            recheck = Some(recheck.map_or(left, |r| r.min(left)));
        }
    }
    let cond = |ok, reason, msg: String| {
        new_condition(types::AGENTS_AVAILABLE, ok, reason, msg, generation, now)
    };
    let condition = if let (Some(why), true) = (refusal, without_agent > 0) {
        cond(
            false,
            PolicyReason::AgentPodsRefused,
            format!(
                "the DaemonSet controller cannot create agent pods ({without_agent} of this policy's nodes have no running agent): {why}; see `kubectl get events -n NAMESPACE --field-selector involvedObject.kind=DaemonSet` and docs/troubleshooting.md#agent-pods-refused"
            ),
        )
    } else if !late.is_empty() {
        let count = late.len();
        let names = first_names(late.into_iter());
        cond(
            false,
            PolicyReason::AgentPodsNotRunning,
            format!(
                "{count} node(s) without a running agent pod for more than {}s: {}",
                timeout.as_secs(),
                names.join(", ")
            ),
        )
    } else {
        cond(
            true,
            PolicyReason::AgentsRunning,
            "every node's agent runs or is starting".to_string(),
        )
    };
    (condition, recheck)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn event(reason: &str, at: &str, msg: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("e-{reason}-{at}"), "namespace": "toa-system"},
            "involvedObject": {"kind": "DaemonSet", "name": "toa-node-agent"},
            "reason": reason, "message": msg, "type": "Warning", "lastTimestamp": at,
        }))
        .expect("event")
    }

    fn ds(desired: i32, current: i32) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "toa-node-agent"},
            "status": {"desiredNumberScheduled": desired, "currentNumberScheduled": current,
                       "numberMisscheduled": 0, "numberReady": 0},
        }))
        .expect("ds")
    }

    fn pending_pod(name: &str, node: &str, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available"}]},
        }))
        .expect("pod")
    }

    fn state(node: &str, created: &str, reported: bool) -> ToaNodeState {
        let mut v = json!({
            "apiVersion": "toa.dev/v1alpha1", "kind": "ToaNodeState",
            "metadata": {"name": node, "creationTimestamp": created},
            "spec": {"nodeName": node, "policy": "p", "desiredState": "Loaded"},
        });
        if reported {
            v["status"] = json!({"phase": "Building"});
        }
        serde_json::from_value(v).expect("state")
    }

    /// A node of the policy with its ToaNodeState.
    fn with_state<'a>(node: &'a str, state: &'a ToaNodeState) -> NodeAgent<'a> {
        NodeAgent {
            node,
            state: Some(state),
        }
    }

    #[test]
    fn failed_create_is_the_cause_until_a_later_success() {
        let denied = "pods \"toa-node-agent-x\" is forbidden: violates PodSecurity \"restricted:latest\": privileged";
        let f = event("FailedCreate", "2026-11-26T01:00:10Z", denied);
        let old_ok = event("SuccessfulCreate", "2026-11-26T01:00:00Z", "Created pod");
        let new_ok = event("SuccessfulCreate", "2026-11-26T01:00:20Z", "Created pod");
        assert_eq!(
            create_refusal(Some(&ds(3, 1)), &[&old_ok, &f]).as_deref(),
            Some(denied)
        );
        assert_eq!(
            create_refusal(Some(&ds(3, 1)), &[&old_ok, &f, &new_ok]),
            None
        );
        // Every pod exists: an old refusal is history.
        assert_eq!(create_refusal(Some(&ds(3, 3)), &[&f]), None);
        assert_eq!(create_refusal(Some(&ds(3, 1)), &[&old_ok]), None);
    }

    #[test]
    fn refused_pods_are_reported_on_policies_with_nodes_lacking_an_agent() {
        let now = ts("2026-11-26T01:00:30Z");
        let s1 = state("n1", "2026-11-26T01:00:00Z", false);
        let nodes = [with_state("n1", &s1)];
        let (c, _) = agents_condition(
            &nodes,
            &BTreeMap::new(),
            Some("violates PodSecurity"),
            DEFAULT_START_TIMEOUT,
            Some(2),
            now,
        );
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "AgentPodsRefused")
        );
        assert!(c.message.contains("violates PodSecurity"), "{}", c.message);
        assert_eq!(c.observed_generation, Some(2));
        // A policy whose agents all reported is not concerned.
        let s2 = state("n2", "2026-11-26T01:00:00Z", true);
        let nodes = [with_state("n2", &s2)];
        let (c, _) = agents_condition(
            &nodes,
            &BTreeMap::new(),
            Some("x"),
            DEFAULT_START_TIMEOUT,
            None,
            now,
        );
        assert_eq!(c.status, "True");
    }

    #[test]
    fn a_pod_not_running_past_the_timeout_is_named() {
        let timeout = Duration::from_secs(60);
        let s1 = state("n1", "2026-11-26T01:00:00Z", false);
        let s2 = state("n2", "2026-11-26T01:00:00Z", false);
        let s3 = state("n3", "2026-11-26T01:00:50Z", false);
        let p1 = pending_pod("agent-1", "n1", "2026-11-26T01:00:05Z");
        let pods = pods_by_node([&p1].into_iter());
        assert_eq!(
            pods.get("n1").and_then(|p| p.metadata.name.as_deref()),
            Some("agent-1")
        );
        let nodes = [
            with_state("n1", &s1),
            with_state("n2", &s2),
            with_state("n3", &s3),
            NodeAgent {
                node: "n4",
                state: None,
            },
        ];
        // Before the timeout: fine, look again when the first one would be late.
        let (c, recheck) = agents_condition(
            &nodes,
            &pods,
            None,
            timeout,
            None,
            ts("2026-11-26T01:00:30Z"),
        );
        assert_eq!(c.status, "True");
        assert_eq!(recheck, Some(Duration::from_secs(31)));
        // After it: n1 (pending pod, with the scheduler's reason) and n2 (no pod); n3 is young.
        let (c, recheck) = agents_condition(
            &nodes,
            &pods,
            None,
            timeout,
            None,
            ts("2026-11-26T01:01:20Z"),
        );
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "AgentPodsNotRunning")
        );
        assert!(
            c.message
                .starts_with("2 node(s) without a running agent pod for more than 60s")
                && c.message
                    .contains("n1 (pod agent-1 Pending, Unschedulable: 0/3 nodes are available)")
                && c.message.contains("n2 (no agent pod)")
                && !c.message.contains("n3"),
            "{}",
            c.message
        );
        assert_eq!(recheck, Some(Duration::from_secs(31)));
    }
}
