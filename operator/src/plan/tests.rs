//! Scenario tests of `plan`.

use toa_crds::conditions::{find_condition, types};
use toa_crds::{Backend, BackendChoice, DesiredState, NodePhase, OnDelete};

use super::testutil::*;
use super::{plan, FinalizerRelease, Plan};

const NOW: i64 = 10_000;

fn run(s: &super::ClusterSnapshot) -> Plan {
    plan(s, ts(NOW))
}

fn cond<'a>(p: &'a Plan, policy: &str, type_: &str) -> (&'a str, &'a str, &'a str) {
    let c = find_condition(&p.policy_status[policy].conditions, type_)
        .unwrap_or_else(|| panic!("{policy} has no {type_} condition"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn names(v: &[&str]) -> std::collections::BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn nodes_that_cannot_run_the_agent_are_excluded_and_counted() {
    // The agent DaemonSet requires kubernetes.io/os=linux: a node without the label would be
    // selected and never get an agent. Virtual kubelets have no kernel to load into.
    let mut tainted = node("vk-taint", &[]);
    // Decoded as the Node watch decodes it: the taint survives the slim decoding.
    tainted.spec = serde_json::from_value(serde_json::json!({
        "podCIDR": "10.0.0.0/24",
        "taints": [{"key": "virtual-kubelet.io/provider", "value": "azure",
                    "effect": "NoSchedule"}],
    }))
    .expect("spec");
    let s = snapshot(
        vec![policy("all", &[]), policy("other", &[("zone", "x")])],
        vec![
            node("a", &[]),
            raw_node("no-os", &[]),
            node("w", &[("kubernetes.io/os", "windows")]),
            node("vk-label", &[("type", "virtual-kubelet")]),
            tainted,
        ],
        vec![],
    );
    let p = run(&s);
    assert_eq!(p.node_states.keys().cloned().collect::<Vec<_>>(), ["a"]);
    assert_eq!(p.label_nodes, names(&["a"]));
    let st = &p.policy_status["all"];
    assert_eq!((st.selected_nodes, st.excluded_nodes), (1, 4));
    let (_, _, msg) = cond(&p, "all", types::READY);
    assert!(
        msg.contains("4 nodes matching spec.nodeSelector can never run the agent")
            && msg.contains("1 without the kubernetes.io/os label")
            && msg.contains("1 not Linux")
            && msg.contains("2 virtual kubelets"),
        "{msg}"
    );
    // A policy that matches none of them counts none.
    assert_eq!(p.policy_status["other"].excluded_nodes, 0);
    assert!(!cond(&p, "other", types::READY).2.contains("never run"));
}

#[test]
fn selects_linux_nodes_and_labels_them() {
    let s = snapshot(
        vec![policy("all", &[])],
        vec![
            node("a", &[]),
            node("b", &[("kubernetes.io/os", "linux")]),
            node("w", &[("kubernetes.io/os", "windows")]),
        ],
        vec![],
    );
    let p = run(&s);
    assert_eq!(
        p.node_states.keys().cloned().collect::<Vec<_>>(),
        ["a", "b"]
    );
    let a = &p.node_states["a"];
    assert_eq!(a.node_uid, "uid-a");
    assert_eq!(a.spec.policy, "all");
    assert_eq!(a.spec.node_name, "a");
    assert_eq!(a.spec.desired_state, DesiredState::Loaded);
    assert!(!a.spec.reload_allowed);
    assert_eq!(p.agent_nodes, names(&["a", "b"]));
    assert_eq!(p.label_nodes, names(&["a", "b"]));
    assert!(p.unlabel_nodes.is_empty());
    let st = &p.policy_status["all"];
    assert_eq!(
        (st.selected_nodes, st.loaded_nodes, st.failed_nodes),
        (2, 0, 0)
    );
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(cond(&p, "all", types::READY).1, "NodesNotReady");
    assert_eq!(
        cond(&p, "all", types::PROGRESSING),
        ("True", "RollingOut", "2 nodes converging")
    );
}

#[test]
fn ready_when_every_node_reports_loaded_for_the_current_spec() {
    let mut stale = state("b", "all", Some(NodePhase::Loaded));
    stale.metadata.generation = Some(2); // agent saw generation 1 only
    let s = snapshot(
        vec![policy("all", &[])],
        vec![
            node("a", &[("toa.dev/agent", "true")]),
            node("b", &[("toa.dev/agent", "true")]),
        ],
        vec![state("a", "all", Some(NodePhase::Loaded)), stale.clone()],
    );
    let p = run(&s);
    assert_eq!(p.policy_status["all"].loaded_nodes, 1);
    assert_eq!(cond(&p, "all", types::READY).0, "False");
    assert!(p.label_nodes.is_empty());

    let mut fresh = stale;
    fresh.metadata.generation = Some(1);
    let s = snapshot(
        vec![policy("all", &[])],
        vec![node("a", &[]), node("b", &[])],
        vec![state("a", "all", Some(NodePhase::Loaded)), fresh],
    );
    let p = run(&s);
    assert_eq!(p.policy_status["all"].loaded_nodes, 2);
    assert_eq!(
        cond(&p, "all", types::READY),
        ("True", "AllNodesLoaded", "module loaded on all 2 nodes")
    );
    assert_eq!(cond(&p, "all", types::PROGRESSING).1, "RolloutComplete");
    assert_eq!(cond(&p, "all", types::DEGRADED).1, "NoFailures");
    assert_eq!(cond(&p, "all", types::CONFLICT).1, "NoConflicts");
    assert_eq!(p.policy_status["all"].kernels.len(), 1);
    assert_eq!(p.policy_status["all"].kernels[0].nodes, 2);
}

#[test]
fn settings_changed_means_not_loaded_yet() {
    let mut pol = policy("all", &[]);
    pol.spec.module.ipv4_option_kinds = vec![254, 200];
    let s = snapshot(
        vec![pol],
        vec![node("a", &[])],
        vec![state("a", "all", Some(NodePhase::Loaded))],
    );
    let p = run(&s);
    assert_eq!(
        p.node_states["a"].spec.module.ipv4_option_kinds,
        vec![200, 254]
    );
    assert_eq!(p.policy_status["all"].loaded_nodes, 0);
}

#[test]
fn conflicts_go_to_priority_then_age_then_name() {
    let s = snapshot(
        vec![
            with_priority(policy("low", &[]), 0),
            with_priority(policy("high", &[("role", "edge")]), 10),
            created_at(policy("young", &[("zone", "a")]), 5_000),
            created_at(policy("old", &[("zone", "a")]), 100),
            created_at(policy("b-same", &[("rack", "1")]), 100),
            created_at(policy("a-same", &[("rack", "1")]), 100),
        ],
        vec![
            node("e1", &[("role", "edge"), ("zone", "a")]),
            node("e2", &[("role", "edge")]),
            node("z1", &[("zone", "a")]),
            node("r1", &[("rack", "1")]),
            node("plain", &[]),
        ],
        vec![],
    );
    let p = run(&s);
    let owner = |n: &str| p.node_states[n].spec.policy.clone();
    assert_eq!(owner("e1"), "high");
    assert_eq!(owner("e2"), "high");
    assert_eq!(owner("z1"), "old");
    assert_eq!(owner("r1"), "a-same");
    assert_eq!(owner("plain"), "low");
    let st = &p.policy_status;
    assert_eq!(st["low"].conflicting_nodes, 4);
    assert_eq!(st["young"].conflicting_nodes, 2);
    assert_eq!(st["b-same"].conflicting_nodes, 1);
    assert_eq!(st["high"].conflicting_nodes, 0);
    let (status, reason, msg) = cond(&p, "low", types::CONFLICT);
    assert_eq!((status, reason), ("True", "NodesClaimedElsewhere"));
    assert_eq!(
        msg,
        "4 nodes selected by this policy are held by higher-ranked policies: high (2), a-same (1), old (1)"
    );
    assert_eq!(cond(&p, "low", types::READY).1, "NodesNotReady");
    let (status, reason, msg) = cond(&p, "young", types::READY);
    assert_eq!((status, reason), ("False", "AllNodesConflicting"));
    assert!(msg.starts_with("all 2 Linux nodes matching spec.nodeSelector are held by higher-ranked policies: high (1), old (1)"), "{msg}");
    assert_eq!(cond(&p, "b-same", types::READY).1, "AllNodesConflicting");
}

#[test]
fn no_matching_node_and_invalid_selector_are_not_ready() {
    let mut bad = policy("bad", &[]);
    bad.spec.node_selector.match_expressions = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
            key: "zone".into(),
            operator: "In".into(),
            values: None,
        },
    ]);
    let s = snapshot(
        vec![policy("none", &[("gpu", "yes")]), bad],
        vec![
            node("a", &[]),
            node("w", &[("gpu", "yes"), ("kubernetes.io/os", "windows")]),
        ],
        vec![],
    );
    let p = run(&s);
    assert!(p.node_states.is_empty());
    assert_eq!(
        cond(&p, "none", types::READY),
        (
            "False",
            "NoMatchingNodes",
            "no Linux node matches spec.nodeSelector; 1 node matching spec.nodeSelector can never run the agent and is excluded (1 not Linux): the agent needs kubernetes.io/os=linux and a real kubelet"
        )
    );
    assert_eq!(p.policy_status["none"].excluded_nodes, 1);
    let (status, reason, msg) = cond(&p, "bad", types::READY);
    assert_eq!((status, reason), ("False", "InvalidSelector"));
    assert!(
        msg.contains("matchExpressions[0]: operator In needs at least one value"),
        "{msg}"
    );
}

#[test]
fn deselected_node_unloads_then_its_state_goes() {
    let pol = policy("edge", &[("role", "edge")]);
    let nodes = vec![node("a", &[("toa.dev/agent", "true")])];
    // Still loaded: desired Unloaded, keeps the agent label.
    let s = snapshot(
        vec![pol.clone()],
        nodes.clone(),
        vec![state("a", "edge", Some(NodePhase::Loaded))],
    );
    let p = run(&s);
    assert_eq!(
        p.node_states["a"].spec.desired_state,
        DesiredState::Unloaded
    );
    assert_eq!(p.node_states["a"].spec.policy, "edge");
    assert!(p.agent_nodes.contains("a"));
    assert!(p.unlabel_nodes.is_empty() && p.deletions.is_empty());
    assert_eq!(cond(&p, "edge", types::PROGRESSING).2, "1 node unloading");
    // Failed unload is reported on the policy.
    let mut failed = desired(
        state("a", "edge", Some(NodePhase::Failed)),
        DesiredState::Unloaded,
    );
    failed.status.as_mut().expect("status").reason = Some(toa_crds::NodeReason::ModuleBusy);
    let p = run(&snapshot(vec![pol.clone()], nodes.clone(), vec![failed]));
    assert_eq!(p.policy_status["edge"].failed_nodes, 1);
    assert_eq!(p.policy_status["edge"].failures[0].reason, "ModuleBusy");
    // Unloaded: the state is deleted and the label removed.
    let s = snapshot(
        vec![pol],
        nodes,
        vec![desired(
            state("a", "edge", Some(NodePhase::Unloaded)),
            DesiredState::Unloaded,
        )],
    );
    let p = run(&s);
    assert!(p.node_states.is_empty());
    assert_eq!(p.deletions, names(&["a"]));
    assert_eq!(p.unlabel_nodes, names(&["a"]));
}

#[test]
fn keep_policy_forgets_deselected_nodes_at_once() {
    let pol = on_delete(policy("edge", &[("role", "edge")]), OnDelete::Keep);
    let s = snapshot(
        vec![pol],
        vec![node("a", &[("toa.dev/agent", "true")])],
        vec![state("a", "edge", Some(NodePhase::Loaded))],
    );
    let p = run(&s);
    assert!(p.node_states.is_empty());
    assert_eq!(p.deletions, names(&["a"]));
    assert_eq!(p.unlabel_nodes, names(&["a"]));
}

#[test]
fn node_moving_between_policies_is_not_unloaded() {
    let s = snapshot(
        vec![
            policy("old", &[("role", "old")]),
            policy("new", &[("role", "new")]),
        ],
        vec![node("a", &[("role", "new")])],
        vec![state("a", "old", Some(NodePhase::Loaded))],
    );
    let p = run(&s);
    assert_eq!(p.node_states["a"].spec.policy, "new");
    assert_eq!(p.node_states["a"].spec.desired_state, DesiredState::Loaded);
    assert!(p.deletions.is_empty());
    assert_eq!(
        p.policy_status["new"].loaded_nodes, 0,
        "loaded for the old policy only"
    );
}

#[test]
fn states_of_missing_nodes_and_policies_are_deleted() {
    let s = snapshot(
        vec![policy("p", &[("role", "x")])],
        vec![node("here", &[])],
        vec![
            state("gone", "p", Some(NodePhase::Loaded)),
            state("here", "deleted-policy", Some(NodePhase::Loaded)),
        ],
    );
    let p = run(&s);
    assert_eq!(p.deletions, names(&["gone", "here"]));
    assert!(p.node_states.is_empty());
}

#[test]
fn deleting_unload_policy_waits_then_releases() {
    // Deleted at NOW-100 with the default 600 s timeout.
    let pol = deleting(policy("p", &[]), NOW - 100);
    let nodes = vec![
        node("a", &[("toa.dev/agent", "true")]),
        node("b", &[("toa.dev/agent", "true")]),
    ];
    let s = snapshot(
        vec![pol.clone()],
        nodes.clone(),
        vec![
            state("a", "p", Some(NodePhase::Loaded)),
            state("b", "p", Some(NodePhase::Unloaded)),
        ],
    );
    let p = run(&s);
    assert!(p.finalizer_releases.is_empty());
    assert_eq!(
        p.node_states["a"].spec.desired_state,
        DesiredState::Unloaded
    );
    assert_eq!(p.deletions, names(&["b"]));
    assert_eq!(p.requeue_after, Some(std::time::Duration::from_secs(500)));
    let (status, reason, msg) = cond(&p, "p", types::READY);
    assert_eq!((status, reason), ("False", "Deleting"));
    assert!(msg.contains("waiting for 1 node to unload"), "{msg}");
    assert!(p.finalizers_to_add.is_empty());

    // All unloaded: release.
    let s = snapshot(
        vec![pol.clone()],
        nodes.clone(),
        vec![state("a", "p", Some(NodePhase::Unloaded))],
    );
    let p = run(&s);
    assert_eq!(p.finalizer_releases["p"], FinalizerRelease::AllUnloaded);
    assert_eq!(p.requeue_after, None);

    // Timeout passed: release anyway, forget the node, report it.
    let s = snapshot(
        vec![deleting(policy("p", &[]), NOW - 601)],
        nodes,
        vec![state("a", "p", Some(NodePhase::Failed))],
    );
    let p = run(&s);
    assert_eq!(
        p.finalizer_releases["p"],
        FinalizerRelease::TimedOut {
            remaining: 1,
            nodes: vec!["a".to_string()]
        }
    );
    // The state stays until the finalizer is released: a pass that releases nothing (the
    // housekeeping one) must not delete it, or the releasing pass would find nothing waiting
    // and report every node unloaded.
    assert!(p.deletions.is_empty(), "{:?}", p.deletions);
    assert_eq!(
        p.node_states["a"].spec.desired_state,
        toa_crds::DesiredState::Unloaded
    );
    assert_eq!(cond(&p, "p", types::DEGRADED).1, "UnloadTimedOut");
    let again = run(&s);
    assert_eq!(again.finalizer_releases, p.finalizer_releases);
    // Released (the policy is gone): now the state is forgotten.
    let s = snapshot(
        vec![],
        s.nodes.iter().map(|n| (**n).clone()).collect(),
        vec![state("a", "p", Some(NodePhase::Failed))],
    );
    assert_eq!(run(&s).deletions, names(&["a"]));
}

#[test]
fn deleting_keep_policy_releases_at_once_and_hands_nodes_over() {
    let s = snapshot(
        vec![
            with_priority(
                on_delete(deleting(policy("keep", &[]), NOW), OnDelete::Keep),
                5,
            ),
            policy("fallback", &[("role", "web")]),
        ],
        vec![node("a", &[("role", "web")]), node("b", &[])],
        vec![
            state("a", "keep", Some(NodePhase::Loaded)),
            state("b", "keep", Some(NodePhase::Loaded)),
        ],
    );
    let p = run(&s);
    assert_eq!(p.finalizer_releases["keep"], FinalizerRelease::Kept);
    assert_eq!(p.node_states["a"].spec.policy, "fallback");
    assert_eq!(p.deletions, names(&["b"]));
    assert_eq!(p.policy_status["keep"].selected_nodes, 0);
    assert_eq!(cond(&p, "keep", types::READY).1, "Deleting");
}

#[test]
fn finalizer_added_to_live_policies_only() {
    let mut bare = policy("bare", &[]);
    bare.metadata.finalizers = None;
    let mut gone = deleting(policy("gone", &[]), NOW);
    gone.metadata.finalizers = None;
    let p = run(&snapshot(
        vec![bare, gone, policy("has", &[])],
        vec![],
        vec![],
    ));
    assert_eq!(p.finalizers_to_add, names(&["bare"]));
    assert!(p.finalizer_releases.is_empty());
}

#[test]
fn reloads_are_paced_by_max_unavailable() {
    let pol = max_unavailable(policy("p", &[]), 2);
    let nodes: Vec<_> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| node(n, &[]))
        .collect();
    let pending = |n: &str| reload(state(n, "p", Some(NodePhase::Loaded)), true, false);
    let p = run(&snapshot(
        vec![pol.clone()],
        nodes.clone(),
        ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| pending(n))
            .collect(),
    ));
    let granted: Vec<_> = p
        .node_states
        .iter()
        .filter(|(_, d)| d.spec.reload_allowed)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(granted, ["a", "b"]);
    assert!(cond(&p, "p", types::PROGRESSING)
        .2
        .contains("5 reloads pending (maxUnavailable 2)"));

    // a reloading with its grant, b done (grant revoked), c building: nothing new.
    let states = vec![
        reload(state("a", "p", Some(NodePhase::Loading)), true, true),
        reload(state("b", "p", Some(NodePhase::Loaded)), false, true),
        state("c", "p", Some(NodePhase::Building)),
        pending("d"),
        pending("e"),
    ];
    let p = run(&snapshot(vec![pol.clone()], nodes.clone(), states));
    let granted: Vec<_> = p
        .node_states
        .iter()
        .filter(|(_, d)| d.spec.reload_allowed)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(granted, ["a"]);

    // One slot free: the first waiting node by name gets it.
    let states = vec![
        reload(state("a", "p", Some(NodePhase::Failed)), true, true),
        state("b", "p", Some(NodePhase::Loaded)),
        pending("c"),
        pending("d"),
    ];
    let p = run(&snapshot(vec![pol.clone()], nodes.clone(), states));
    let granted: Vec<_> = p
        .node_states
        .iter()
        .filter(|(_, d)| d.spec.reload_allowed)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(granted, ["a", "c"]);

    // maxUnavailable lowered below the running reloads: grants kept, none added.
    let states = vec![
        reload(state("a", "p", Some(NodePhase::Loading)), true, true),
        reload(state("b", "p", Some(NodePhase::Loading)), true, true),
        pending("c"),
    ];
    let p = run(&snapshot(
        vec![max_unavailable(policy("p", &[]), 1)],
        nodes,
        states,
    ));
    let granted: Vec<_> = p
        .node_states
        .iter()
        .filter(|(_, d)| d.spec.reload_allowed)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(granted, ["a", "b"]);
}

#[test]
fn the_policy_backend_reaches_every_node_state() {
    for choice in [
        BackendChoice::Module,
        BackendChoice::Ebpf,
        BackendChoice::Auto,
    ] {
        let mut pol = policy("p", &[]);
        pol.spec.backend = choice;
        let p = run(&snapshot(
            vec![pol],
            vec![node("a", &[]), node("b", &[])],
            vec![],
        ));
        for n in ["a", "b"] {
            assert_eq!(p.node_states[n].spec.backend, choice, "{n}");
        }
    }
}

/// A node serving `serving`, as its agent reports it, for a spec that asks `asked`.
fn serving(
    mut s: toa_crds::ToaNodeState,
    asked: BackendChoice,
    serving: Backend,
) -> toa_crds::ToaNodeState {
    s.spec.backend = asked;
    if let Some(st) = s.status.as_mut() {
        st.backend = Some(serving);
    }
    s
}

#[test]
fn a_backend_switch_is_paced_like_a_reload() {
    // Four nodes run the module; the policy now asks for EBPF. Each agent keeps the module
    // serving and asks with reloadPending (node-agent reconcile: leave_module).
    let mut pol = max_unavailable(policy("p", &[]), 2);
    pol.spec.backend = BackendChoice::Ebpf;
    let nodes: Vec<_> = ["a", "b", "c", "d"].iter().map(|n| node(n, &[])).collect();
    let asking = |n: &str| {
        serving(
            reload(state(n, "p", Some(NodePhase::Loaded)), true, false),
            BackendChoice::Ebpf,
            Backend::Module,
        )
    };
    let p = run(&snapshot(
        vec![pol.clone()],
        nodes.clone(),
        ["a", "b", "c", "d"].iter().map(|n| asking(n)).collect(),
    ));
    assert_eq!(granted(&p), ["a", "b"]);
    assert_eq!(p.policy_status["p"].loaded_nodes, 0);
    assert!(
        cond(&p, "p", types::PROGRESSING)
            .2
            .contains("4 reloads pending (maxUnavailable 2)"),
        "{:?}",
        cond(&p, "p", types::PROGRESSING)
    );

    // a switched (serves EBPF, asks no more), b is switching (Unloading with its grant):
    // one slot is free, c gets it; a counts as loaded, the others do not.
    let states = vec![
        serving(
            state("a", "p", Some(NodePhase::Loaded)),
            BackendChoice::Ebpf,
            Backend::Ebpf,
        ),
        serving(
            reload(state("b", "p", Some(NodePhase::Unloading)), true, true),
            BackendChoice::Ebpf,
            Backend::Module,
        ),
        asking("c"),
        asking("d"),
    ];
    let p = run(&snapshot(vec![pol.clone()], nodes.clone(), states));
    assert_eq!(granted(&p), ["b", "c"]);
    assert_eq!(p.policy_status["p"].loaded_nodes, 1);

    // The agents' report before they saw the new spec (spec still Module, serving Module): not
    // loaded for a policy that asks EBPF, and no grant while nobody asks.
    let states: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            serving(
                state(n, "p", Some(NodePhase::Loaded)),
                BackendChoice::Module,
                Backend::Module,
            )
        })
        .collect();
    let p = run(&snapshot(vec![pol], nodes, states));
    assert!(granted(&p).is_empty());
    assert_eq!(p.policy_status["p"].loaded_nodes, 0);
    assert!(p
        .node_states
        .values()
        .all(|d| d.spec.backend == BackendChoice::Ebpf));
}

#[test]
fn auto_counts_either_backend_as_loaded() {
    let mut pol = policy("p", &[]);
    pol.spec.backend = BackendChoice::Auto;
    let states = vec![
        serving(
            state("a", "p", Some(NodePhase::Loaded)),
            BackendChoice::Auto,
            Backend::Ebpf,
        ),
        serving(
            state("b", "p", Some(NodePhase::Loaded)),
            BackendChoice::Auto,
            Backend::Module,
        ),
    ];
    let p = run(&snapshot(
        vec![pol],
        vec![node("a", &[]), node("b", &[])],
        states,
    ));
    assert_eq!(p.policy_status["p"].loaded_nodes, 2);
    assert_eq!(cond(&p, "p", types::READY).0, "True");
}

#[test]
fn failures_are_capped_sorted_and_counted() {
    let nodes: Vec<_> = (0..25).map(|i| node(&format!("n{i:02}"), &[])).collect();
    let states: Vec<_> = (0..25)
        .rev()
        .map(|i| state(&format!("n{i:02}"), "p", Some(NodePhase::Failed)))
        .collect();
    let p = run(&snapshot(vec![policy("p", &[])], nodes, states));
    let st = &p.policy_status["p"];
    assert_eq!(st.failed_nodes, 25);
    assert_eq!(st.failures.len(), 20);
    assert_eq!(st.failures[0].node, "n00");
    assert_eq!(st.failures[19].node, "n19");
    assert_eq!(st.failures[0].reason, "BuildFailed");
    assert_eq!(st.failures[0].message, "n00: build failed");
    let (status, reason, msg) = cond(&p, "p", types::DEGRADED);
    assert_eq!((status, reason), ("True", "NodesFailed"));
    assert!(
        msg.starts_with(
            "25 nodes failed: n00 (BuildFailed), n01 (BuildFailed), n02 (BuildFailed), and 22 more"
        ),
        "{msg}"
    );
}

#[test]
fn kernels_are_counted_by_release() {
    let states = vec![
        kernel(
            state("a", "p", Some(NodePhase::Loaded)),
            "6.12.117+deb12-amd64",
        ),
        kernel(state("b", "p", Some(NodePhase::Loaded)), "6.1.0-56-amd64"),
        kernel(state("c", "p", Some(NodePhase::Failed)), "6.1.0-56-amd64"),
    ];
    let p = run(&snapshot(
        vec![policy("p", &[])],
        vec![node("a", &[]), node("b", &[]), node("c", &[])],
        states,
    ));
    let k: Vec<_> = p.policy_status["p"]
        .kernels
        .iter()
        .map(|k| (k.release.as_str(), k.nodes))
        .collect();
    assert_eq!(k, [("6.1.0-56-amd64", 2), ("6.12.117+deb12-amd64", 1)]);
    assert_eq!(p.node_phases["p"]["Loaded"], 2);
    assert_eq!(p.node_phases["p"]["Failed"], 1);
}

#[test]
fn condition_transition_time_survives_replanning() {
    let s = snapshot(vec![policy("p", &[])], vec![node("a", &[])], vec![]);
    let first = plan(&s, ts(100));
    let mut pol = policy("p", &[]);
    pol.status = Some(first.policy_status["p"].clone());
    let s2 = snapshot(vec![pol], vec![node("a", &[]), node("b", &[])], vec![]);
    let second = plan(&s2, ts(200));
    let ready = find_condition(&second.policy_status["p"].conditions, types::READY).expect("ready");
    assert_eq!(ready.last_transition_time.0, ts(100));
    assert_eq!(
        ready.message,
        "module loaded on 0 of 2 nodes (0 failed, 2 in progress)"
    );
}

#[test]
fn unlabels_nodes_that_need_no_agent() {
    let s = snapshot(
        vec![policy("p", &[("role", "x")])],
        vec![
            node("x", &[("role", "x"), ("toa.dev/agent", "true")]),
            node("y", &[("toa.dev/agent", "true")]),
        ],
        vec![],
    );
    let p = run(&s);
    assert!(p.label_nodes.is_empty());
    assert_eq!(p.unlabel_nodes, names(&["y"]));
    assert_eq!(p.agent_nodes, names(&["x"]));
}

fn granted(p: &Plan) -> Vec<&str> {
    p.node_states
        .iter()
        .filter(|(_, d)| d.spec.reload_allowed)
        .map(|(n, _)| n.as_str())
        .collect()
}

#[test]
fn nodes_whose_lease_expired_are_reported_stale() {
    let nodes: Vec<_> = ["a", "b", "c"].iter().map(|n| node(n, &[])).collect();
    let states: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| state(n, "p", Some(NodePhase::Loaded)))
        .collect();
    // a renewed 5 s ago, b 41 s ago (grace 40 s), c has no Lease (not judged).
    let leases = vec![
        node_lease("a", Some(NOW - 5)),
        node_lease("b", Some(NOW - 41)),
    ];
    let p = run(&with_leases(
        snapshot(vec![policy("p", &[])], nodes.clone(), states.clone()),
        leases,
        40,
    ));
    let st = &p.policy_status["p"];
    assert_eq!(st.stale_nodes, 1);
    // Counted as last reported: the stale node still counts as loaded.
    assert_eq!((st.selected_nodes, st.loaded_nodes), (3, 3));
    let (status, reason, msg) = cond(&p, "p", types::NODES_STALE);
    assert_eq!((status, reason), ("True", "NodeLeasesExpired"));
    assert!(
        msg.starts_with("1 node stopped renewing its node Lease"),
        "{msg}"
    );
    assert!(msg.contains(": b;"), "{msg}");

    // b renews again: stale cleared.
    let p = run(&with_leases(
        snapshot(vec![policy("p", &[])], nodes.clone(), states.clone()),
        vec![node_lease("a", Some(NOW - 5)), node_lease("b", Some(NOW))],
        40,
    ));
    assert_eq!(p.policy_status["p"].stale_nodes, 0);
    assert_eq!(
        cond(&p, "p", types::NODES_STALE).0,
        "False",
        "{:?}",
        p.policy_status["p"].conditions
    );

    // No grace period (check off): no NodesStale condition at all, even an old one is dropped.
    let mut old = policy("p", &[]);
    old.status = Some(p.policy_status["p"].clone());
    let p = run(&snapshot(vec![old], nodes, states));
    assert!(find_condition(&p.policy_status["p"].conditions, types::NODES_STALE).is_none());
    assert_eq!(p.policy_status["p"].stale_nodes, 0);
}

#[test]
fn stale_message_names_three_nodes_then_counts() {
    let names_ = ["a", "b", "c", "d", "e"];
    let nodes: Vec<_> = names_.iter().map(|n| node(n, &[])).collect();
    let leases: Vec<_> = names_.iter().map(|n| node_lease(n, Some(0))).collect();
    let p = run(&with_leases(
        snapshot(vec![policy("p", &[])], nodes, vec![]),
        leases,
        40,
    ));
    let (_, _, msg) = cond(&p, "p", types::NODES_STALE);
    assert!(
        msg.starts_with("5 nodes stopped renewing their node Lease"),
        "{msg}"
    );
    assert!(msg.contains("a, b, c, and 2 more"), "{msg}");
}

#[test]
fn stale_nodes_do_not_hold_the_rollout() {
    let pol = max_unavailable(policy("p", &[]), 1);
    let nodes: Vec<_> = ["a", "b", "c"].iter().map(|n| node(n, &[])).collect();
    // a was granted its reload and then powered off mid-way (phase Loading, pending);
    // b is stuck Building on a dead machine; c waits for a reload.
    let states = vec![
        reload(state("a", "p", Some(NodePhase::Loading)), true, true),
        state("b", "p", Some(NodePhase::Building)),
        reload(state("c", "p", Some(NodePhase::Loaded)), true, false),
    ];
    let fresh = |n: &str| node_lease(n, Some(NOW));
    let dead = |n: &str| node_lease(n, Some(NOW - 600));

    // Everyone alive: a's grant and b's build use the budget, c waits.
    let p = run(&with_leases(
        snapshot(vec![pol.clone()], nodes.clone(), states.clone()),
        vec![fresh("a"), fresh("b"), fresh("c")],
        40,
    ));
    assert_eq!(granted(&p), ["a"]);

    // a and b stale: they no longer count against maxUnavailable; c gets the slot, a keeps
    // its grant for when it returns, and a stale waiting node gets no new grant.
    let p = run(&with_leases(
        snapshot(vec![pol.clone()], nodes.clone(), states.clone()),
        vec![dead("a"), dead("b"), fresh("c")],
        40,
    ));
    assert_eq!(granted(&p), ["a", "c"]);
    assert_eq!(p.policy_status["p"].stale_nodes, 2);

    let p = run(&with_leases(
        snapshot(
            vec![pol],
            nodes,
            vec![
                state("a", "p", Some(NodePhase::Loaded)),
                state("b", "p", Some(NodePhase::Loaded)),
                reload(state("c", "p", Some(NodePhase::Loaded)), true, false),
            ],
        ),
        vec![fresh("a"), fresh("b"), dead("c")],
        40,
    ));
    assert!(granted(&p).is_empty(), "{:?}", granted(&p));
}
