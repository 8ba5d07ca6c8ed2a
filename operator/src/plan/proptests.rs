//! Property tests of `plan` on random clusters, up to 20,000 nodes.
//!
//! The oracle re-derives each fact from the inputs in the simplest way
//! (brute force), independent of the plan's own data structures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
use proptest::prelude::*;
use toa_crds::{
    Backend, BackendChoice, DesiredState, NodePhase, OnDelete, ToaNodeState, ToaPolicy,
};

use super::selector::Selector;
use super::testutil::*;
use super::{plan, ClusterSnapshot, NodeMeta, Plan};

const NOW: i64 = 100_000;
const POLICY_NAMES: [&str; 6] = ["alpha", "beta", "gamma", "delta", "eps", "zeta"];
const KEYS: [&str; 3] = ["role", "zone", "tier"];
const VALUES: [&str; 3] = ["a", "b", "c"];

fn arb_policy(name: &'static str) -> impl Strategy<Value = ToaPolicy> {
    (
        0..3i32,                                      // priority
        0..3i64,                                      // creation time bucket
        proptest::option::of((0..3usize, 0..3usize)), // matchLabels
        proptest::option::of((
            0..3usize,
            0..4usize,
            proptest::collection::vec(0..3usize, 0..3),
        )),
        prop_oneof![Just(OnDelete::Unload), Just(OnDelete::Keep)],
        1..4i32,                          // maxUnavailable
        proptest::option::of(0..1200i64), // deleted this many seconds ago
        any::<bool>(),                    // has finalizer
        arb_backend_choice(),
    )
        .prop_map(
            move |(prio, created, ml, expr, od, mu, del, fin, backend)| {
                let mut p = policy(name, &[]);
                p.spec.backend = backend;
                p.spec.priority = prio;
                p.metadata.creation_timestamp = Some(Time(ts(1_000 + created)));
                if let Some((k, v)) = ml {
                    p.spec.node_selector.match_labels = Some(labels(&[(KEYS[k], VALUES[v])]));
                }
                if let Some((k, op, vals)) = expr {
                    let op = ["In", "NotIn", "Exists", "DoesNotExist"][op];
                    let values: Vec<String> = vals.iter().map(|v| VALUES[*v].to_string()).collect();
                    // Sometimes invalid on purpose (In without values, Exists with values).
                    p.spec.node_selector.match_expressions = Some(vec![LabelSelectorRequirement {
                        key: KEYS[k].to_string(),
                        operator: op.to_string(),
                        values: if values.is_empty() {
                            None
                        } else {
                            Some(values)
                        },
                    }]);
                }
                p.spec.lifecycle.on_delete = od;
                p.spec.rollout.max_unavailable = mu;
                if let Some(ago) = del {
                    p.metadata.deletion_timestamp = Some(Time(ts(NOW - ago)));
                }
                if !fin {
                    p.metadata.finalizers = None;
                }
                p
            },
        )
}

fn arb_backend_choice() -> impl Strategy<Value = BackendChoice> {
    prop_oneof![
        Just(BackendChoice::Module),
        Just(BackendChoice::Ebpf),
        Just(BackendChoice::Auto)
    ]
}

fn arb_node(i: usize) -> impl Strategy<Value = NodeMeta> {
    (
        proptest::collection::vec(proptest::option::of(0..3usize), 3),
        prop_oneof![8 => Just(Some("linux")), 1 => Just(None), 1 => Just(Some("windows"))],
        any::<bool>(),
        proptest::bool::weighted(0.05),
    )
        .prop_map(move |(vals, os, agent, virtual_kubelet)| {
            let mut pairs: Vec<(&str, &str)> = vals
                .iter()
                .enumerate()
                .filter_map(|(k, v)| v.map(|v| (KEYS[k], VALUES[v])))
                .collect();
            if let Some(os) = os {
                pairs.push(("kubernetes.io/os", os));
            }
            if agent {
                pairs.push(("toa.dev/agent", "true"));
            }
            if virtual_kubelet {
                pairs.push(("type", "virtual-kubelet"));
            }
            raw_node(&format!("node-{i:05}"), &pairs)
        })
}

fn arb_state(i: usize) -> impl Strategy<Value = ToaNodeState> {
    (
        0..7usize, // policy (6 = unknown policy)
        proptest::option::of(0..7usize),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        arb_backend_choice(),
        proptest::option::of(prop_oneof![Just(Backend::Module), Just(Backend::Ebpf)]),
    )
        .prop_map(
            move |(pol, phase, pending, allowed, unload, asked, serving)| {
                let pol = POLICY_NAMES.get(pol).copied().unwrap_or("removed");
                let phase = phase.map(|p| NodePhase::ALL[p]);
                let mut s = reload(state(&format!("node-{i:05}"), pol, phase), pending, allowed);
                s.spec.backend = asked;
                if let Some(st) = s.status.as_mut() {
                    st.backend = serving;
                }
                if unload {
                    s.spec.desired_state = DesiredState::Unloaded;
                }
                s
            },
        )
}

/// A random cluster: up to 6 policies, `max_nodes` nodes, states for a random
/// subset of them plus a few for nodes that do not exist.
fn arb_cluster(max_nodes: usize) -> impl Strategy<Value = ClusterSnapshot> {
    let policies = (1..=6usize).prop_flat_map(|n| {
        POLICY_NAMES[..n]
            .iter()
            .map(|name| arb_policy(name))
            .collect::<Vec<_>>()
    });
    let nodes = (0..=max_nodes).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>());
    (policies, nodes).prop_flat_map(move |(policies, nodes)| {
        let n = nodes.len();
        // States for node indices 0..n+5 (the last ones have no node), present with p = 0.6.
        let states = (0..n + 5)
            .map(|i| proptest::option::weighted(0.6, arb_state(i)))
            .collect::<Vec<_>>();
        (Just(policies), Just(nodes), states)
            .prop_map(|(p, n, s)| snapshot(p, n, s.into_iter().flatten().collect()))
    })
}

/// The live policies whose selector matches a node that can never run the agent.
fn oracle_excluded_by<'a>(policies: &'a [Arc<ToaPolicy>], node: &NodeMeta) -> Vec<&'a ToaPolicy> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let runs_agent = labels.get("kubernetes.io/os").map(String::as_str) == Some("linux")
        && labels.get("type").map(String::as_str) != Some("virtual-kubelet");
    if runs_agent {
        return vec![];
    }
    policies
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| Selector::compile(&p.spec.node_selector).is_ok_and(|s| s.matches(&labels)))
        .collect()
}

/// The winner for a node, by brute force.
fn oracle_owner<'a>(
    policies: &'a [Arc<ToaPolicy>],
    node: &NodeMeta,
) -> (Option<&'a ToaPolicy>, Vec<&'a ToaPolicy>) {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    // Only nodes that can run the agent: labelled Linux, not a virtual kubelet.
    if labels.get("kubernetes.io/os").map(String::as_str) != Some("linux")
        || labels.get("type").map(String::as_str) == Some("virtual-kubelet")
    {
        return (None, vec![]);
    }
    let mut matching: Vec<&ToaPolicy> = policies
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| Selector::compile(&p.spec.node_selector).is_ok_and(|s| s.matches(&labels)))
        .collect();
    matching.sort_by_key(|p| {
        (
            -p.spec.priority,
            p.metadata.creation_timestamp.clone(),
            p.metadata.name.clone(),
        )
    });
    let mut it = matching.into_iter();
    let winner = it.next();
    (winner, it.collect())
}

fn check(s: &ClusterSnapshot, out: &Plan) -> Result<(), TestCaseError> {
    let states: BTreeMap<&str, &ToaNodeState> = s
        .node_states
        .iter()
        .map(|st| (st.metadata.name.as_deref().unwrap_or_default(), st.as_ref()))
        .collect();
    let node_names: BTreeSet<&str> = s
        .nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut selected: BTreeMap<String, i32> = BTreeMap::new();
    let mut conflicting: BTreeMap<String, i32> = BTreeMap::new();
    let mut excluded: BTreeMap<String, i32> = BTreeMap::new();

    // Ownership: exactly the oracle's winner, desired Loaded.
    for node in &s.nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        for p in oracle_excluded_by(&s.policies, node) {
            *excluded
                .entry(p.metadata.name.clone().unwrap_or_default())
                .or_default() += 1;
        }
        let (winner, losers) = oracle_owner(&s.policies, node);
        for l in losers {
            *conflicting
                .entry(l.metadata.name.clone().unwrap_or_default())
                .or_default() += 1;
        }
        match winner {
            Some(w) => {
                let wname = w.metadata.name.clone().unwrap_or_default();
                let d = out.node_states.get(name);
                prop_assert!(d.is_some(), "{name} should be owned by {wname}");
                let d = d.map(|d| &d.spec);
                prop_assert_eq!(d.map(|d| d.policy.as_str()), Some(wname.as_str()));
                prop_assert_eq!(d.map(|d| d.desired_state), Some(DesiredState::Loaded));
                prop_assert_eq!(
                    d.map(|d| d.module.clone()),
                    Some(w.spec.module.normalized())
                );
                // The policy's backend choice reaches the node unchanged (Auto included: the
                // agent resolves it).
                prop_assert_eq!(d.map(|d| d.backend), Some(w.spec.backend));
                *selected.entry(wname).or_default() += 1;
            }
            None => {
                if let Some(d) = out.node_states.get(name) {
                    prop_assert_eq!(
                        d.spec.desired_state,
                        DesiredState::Unloaded,
                        "{} has no owner",
                        name
                    );
                    // Only kept while the old policy exists, says Unload and the module is not gone.
                    let st = states.get(name);
                    prop_assert!(
                        st.is_some(),
                        "{name}: Unloaded spec without an existing state"
                    );
                    let pol = s
                        .policies
                        .iter()
                        .find(|p| Some(&d.spec.policy) == p.metadata.name.as_ref());
                    prop_assert!(
                        pol.is_some_and(|p| p.spec.lifecycle.on_delete == OnDelete::Unload)
                    );
                    prop_assert!(st.is_some_and(|st| !super::lifecycle::is_unloaded(st)));
                }
            }
        }
    }
    // Nothing for nodes that do not exist; deletions and desired states are disjoint.
    for name in out.node_states.keys() {
        prop_assert!(
            node_names.contains(name.as_str()),
            "state for missing node {name}"
        );
        prop_assert!(!out.deletions.contains(name));
    }
    for name in &out.deletions {
        prop_assert!(
            states.contains_key(name.as_str()),
            "deleting a state that does not exist: {name}"
        );
    }
    // Every existing state is either kept (desired) or deleted.
    for name in states.keys() {
        prop_assert!(
            out.node_states.contains_key(*name) || out.deletions.contains(*name),
            "{name} neither kept nor deleted"
        );
    }
    // Labels.
    let desired: BTreeSet<String> = out.node_states.keys().cloned().collect();
    prop_assert_eq!(&out.agent_nodes, &desired);
    prop_assert!(out.label_nodes.is_subset(&out.agent_nodes));
    prop_assert!(out.unlabel_nodes.is_disjoint(&out.agent_nodes));

    // Pacing: per policy, nodes disrupted after the plan never exceed
    // max(maxUnavailable, nodes already disrupted before it).
    for p in &s.policies {
        let pname = p.metadata.name.clone().unwrap_or_default();
        let mut before = 0usize;
        let mut after = 0usize;
        for (name, d) in &out.node_states {
            if d.spec.policy != pname {
                continue;
            }
            let st = states.get(name.as_str());
            let status = st.and_then(|st| st.status.as_ref());
            let pending = status.is_some_and(|s| s.reload_pending);
            let moving = status
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_transitioning());
            let old_grant = st.is_some_and(|st| st.spec.reload_allowed && st.spec.policy == pname);
            if moving || (old_grant && pending) {
                before += 1;
            }
            if moving || (d.spec.reload_allowed && pending) {
                after += 1;
            }
            // A grant is only ever given to a node that asked for it.
            prop_assert!(
                !d.spec.reload_allowed || pending,
                "{name}: grant without reloadPending"
            );
        }
        let max = usize::try_from(p.spec.rollout.max_unavailable).unwrap_or(1);
        prop_assert!(
            after <= max.max(before),
            "{pname}: {after} disrupted > max({max}, {before})"
        );
    }

    // Status counts match the node states.
    for p in &s.policies {
        let pname = p.metadata.name.clone().unwrap_or_default();
        let st = &out.policy_status[&pname];
        prop_assert_eq!(
            st.selected_nodes,
            selected.get(&pname).copied().unwrap_or(0),
            "{} selected",
            &pname
        );
        prop_assert_eq!(
            st.conflicting_nodes,
            conflicting.get(&pname).copied().unwrap_or(0),
            "{} conflicting",
            &pname
        );
        prop_assert_eq!(
            st.excluded_nodes,
            excluded.get(&pname).copied().unwrap_or(0),
            "{} excluded",
            &pname
        );
        let mine: Vec<(&String, &ToaNodeState)> = out
            .node_states
            .iter()
            .filter(|(_, d)| d.spec.policy == pname)
            .filter_map(|(n, _)| states.get(n.as_str()).map(|st| (n, *st)))
            .collect();
        let failed = mine
            .iter()
            .filter(|(_, st)| st.phase() == Some(NodePhase::Failed))
            .count();
        prop_assert_eq!(st.failed_nodes as usize, failed, "{} failed", &pname);
        prop_assert_eq!(st.failures.len(), failed.min(20));
        prop_assert!(st.failures.windows(2).all(|w| w[0].node < w[1].node));
        prop_assert!(st.loaded_nodes <= st.selected_nodes);
        let loaded_phase = mine
            .iter()
            .filter(|(n, st)| {
                out.node_states[n.as_str()].spec.desired_state == DesiredState::Loaded
                    && st.phase() == Some(NodePhase::Loaded)
            })
            .count();
        prop_assert!(st.loaded_nodes as usize <= loaded_phase);
        // A node serving another backend than the policy asks for is not loaded (its switch
        // is still to come, paced like a reload).
        let serving_asked = mine
            .iter()
            .filter(|(_, st)| {
                let serving = st
                    .status
                    .as_ref()
                    .and_then(|s| s.backend)
                    .unwrap_or(Backend::Module);
                st.phase() == Some(NodePhase::Loaded)
                    && match p.spec.backend {
                        BackendChoice::Module => serving == Backend::Module,
                        BackendChoice::Ebpf => serving == Backend::Ebpf,
                        BackendChoice::Auto => true,
                    }
            })
            .count();
        prop_assert!(
            st.loaded_nodes as usize <= serving_asked,
            "{}: {} loaded but {} serve the asked backend",
            &pname,
            st.loaded_nodes,
            serving_asked
        );
        let kernel_total: i32 = st.kernels.iter().map(|k| k.nodes).sum();
        prop_assert!(kernel_total <= st.selected_nodes);
        let ready = toa_crds::conditions::is_condition_true(&st.conditions, "Ready");
        prop_assert_eq!(
            ready,
            st.selected_nodes > 0
                && st.loaded_nodes == st.selected_nodes
                && p.metadata.deletion_timestamp.is_none()
        );
        // Ready, Progressing, Degraded, Conflict, TrustWarning.
        prop_assert_eq!(st.conditions.len(), 5);
    }
    Ok(())
}

fn shuffled(s: &ClusterSnapshot, seed: u64) -> ClusterSnapshot {
    // A deterministic permutation (no RNG dependency): sort by a keyed hash.
    fn permute<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
        let mut idx: Vec<(u64, usize)> = (0..v.len())
            .map(|i| {
                (
                    (i as u64 ^ seed)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .rotate_left(17),
                    i,
                )
            })
            .collect();
        idx.sort_unstable();
        idx.into_iter().map(|(_, i)| v[i].clone()).collect()
    }
    ClusterSnapshot {
        policies: permute(&s.policies, seed),
        nodes: permute(&s.nodes, seed.wrapping_add(1)),
        node_states: permute(&s.node_states, seed.wrapping_add(2)),
        node_leases: permute(&s.node_leases, seed.wrapping_add(3)),
        node_lease_grace: s.node_lease_grace,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn plan_invariants_hold(s in arb_cluster(60)) {
        let out = plan(&s, ts(NOW));
        check(&s, &out)?;
    }

    #[test]
    fn plan_is_deterministic_under_reordering(s in arb_cluster(60), seed in any::<u64>()) {
        let a = plan(&s, ts(NOW));
        let b = plan(&shuffled(&s, seed), ts(NOW));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn replanning_own_output_is_stable(s in arb_cluster(40)) {
        // Feeding the plan's own statuses back in (as the apiserver would
        // after the status write) yields the identical plan: no write loop.
        let first = plan(&s, ts(NOW));
        let mut s2 = s.clone();
        s2.policies = s.policies.iter().map(|p| {
            let mut p = (**p).clone();
            p.status = first.policy_status.get(p.metadata.name.as_deref().unwrap_or_default()).cloned();
            Arc::new(p)
        }).collect();
        let second = plan(&s2, ts(NOW));
        prop_assert_eq!(first, second);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

    #[test]
    fn plan_invariants_hold_at_20000_nodes(s in arb_cluster_exact(20_000)) {
        let out = plan(&s, ts(NOW));
        check(&s, &out)?;
        let again = plan(&shuffled(&s, 7), ts(NOW));
        prop_assert_eq!(out, again);
    }
}

/// Exactly `n` nodes (large clusters: keeps generation cheap).
fn arb_cluster_exact(n: usize) -> impl Strategy<Value = ClusterSnapshot> {
    let policies = (1..=6usize).prop_flat_map(|k| {
        POLICY_NAMES[..k]
            .iter()
            .map(|name| arb_policy(name))
            .collect::<Vec<_>>()
    });
    (policies, any::<u64>()).prop_map(move |(policies, seed)| {
        // Node labels and states from a cheap deterministic generator seeded by proptest.
        let mut x = seed | 1;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut nodes = Vec::with_capacity(n);
        let mut states = Vec::new();
        for i in 0..n {
            let mut pairs: Vec<(&str, &str)> = Vec::new();
            for k in KEYS {
                let v = next(4);
                if v < 3 {
                    pairs.push((k, VALUES[v as usize]));
                }
            }
            if next(10) == 0 {
                pairs.push(("kubernetes.io/os", "windows"));
            }
            nodes.push(node(&format!("node-{i:05}"), &pairs));
            if next(10) < 6 {
                let pol = POLICY_NAMES[next(6) as usize];
                let phase = NodePhase::ALL[next(7) as usize];
                states.push(reload(
                    state(&format!("node-{i:05}"), pol, Some(phase)),
                    next(4) == 0,
                    next(4) == 0,
                ));
            }
        }
        snapshot(policies, nodes, states)
    })
}
