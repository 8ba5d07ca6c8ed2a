//! Which policy owns which node.
//!
//! Every node that can run the agent goes to at most one live policy: the matching policy with
//! the highest priority, then the oldest creationTimestamp, then the smallest
//! name. Policies being deleted own nothing (their nodes are either handed to
//! the next matching policy, or leave). Each losing policy counts, per winner,
//! how many of its matching nodes it lost, and how many matching nodes can
//! never run the agent (see [`Exclusion`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use toa_crds::{ModuleSettings, ToaNodeState, ToaPolicy, ToaPolicySpec, ToaPolicyStatus};

use super::selector::{Selector, SelectorError};
use super::NodeMeta;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// What the plan needs from one ToaPolicy.
#[derive(Debug)]
pub(crate) struct PolicyView<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub deleting: bool,
    pub deletion_time: Option<Timestamp>,
    pub has_finalizer: bool,
    pub spec: &'a ToaPolicySpec,
    /// Normalized module settings (what nodes get).
    pub module: ModuleSettings,
    pub selector: Result<Selector, SelectorError>,
    pub old_status: Option<&'a ToaPolicyStatus>,
}

impl<'a> PolicyView<'a> {
    /// Views sorted by rank: the winner of a conflict comes first.
    pub fn collect(policies: &'a [Arc<ToaPolicy>]) -> Vec<PolicyView<'a>> {
        let mut ranked: Vec<(&'a ToaPolicy, Option<Timestamp>)> = policies
            .iter()
            .filter(|p| p.metadata.name.is_some())
            .map(|p| {
                let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                (p.as_ref(), created)
            })
            .collect();
        // Unknown creation times sort last: a policy the apiserver has not
        // stamped yet is never older than one it has.
        ranked.sort_by(|(a, ca), (b, cb)| {
            b.spec
                .priority
                .cmp(&a.spec.priority)
                .then_with(|| match (ca, cb) {
                    (Some(x), Some(y)) => x.cmp(y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                })
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        ranked
            .into_iter()
            .map(|(p, _)| {
                let deletion_time = p.metadata.deletion_timestamp.as_ref().map(|t| t.0);
                PolicyView {
                    name: p.metadata.name.as_deref().unwrap_or_default(),
                    generation: p.metadata.generation,
                    deleting: deletion_time.is_some(),
                    deletion_time,
                    has_finalizer: p
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == toa_crds::POLICY_FINALIZER),
                    spec: &p.spec,
                    module: p.spec.module.normalized(),
                    selector: Selector::compile(&p.spec.node_selector),
                    old_status: p.status.as_ref(),
                }
            })
            .collect()
    }

    /// `rollout.maxUnavailable`, at least 1 whatever the object says.
    pub fn max_unavailable(&self) -> usize {
        usize::try_from(self.spec.rollout.max_unavailable.max(1)).unwrap_or(1)
    }
}

/// Why a node can never run the agent, so no policy holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Exclusion {
    /// No `kubernetes.io/os` label: the agent DaemonSet requires `kubernetes.io/os=linux`
    /// (as every DaemonSet for Linux must), so no agent pod would ever land there.
    NoOsLabel,
    /// `kubernetes.io/os` is not `linux`.
    NotLinux,
    /// A virtual kubelet (label `type=virtual-kubelet` or taint `virtual-kubelet.io/provider`):
    /// no kernel of its own to load a module into.
    VirtualKubelet,
}

impl Exclusion {
    /// Why, in a condition message.
    pub fn describe(self) -> &'static str {
        match self {
            Exclusion::NoOsLabel => "without the kubernetes.io/os label",
            Exclusion::NotLinux => "not Linux",
            Exclusion::VirtualKubelet => "virtual kubelets",
        }
    }

    /// Whether `node` can run the agent (`None`) or why not.
    pub fn of(node: &NodeMeta, labels: &BTreeMap<String, String>) -> Option<Exclusion> {
        let (vk_key, vk_value) = toa_crds::VIRTUAL_KUBELET_LABEL;
        let virtual_taint = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == toa_crds::VIRTUAL_KUBELET_TAINT));
        if labels.get(vk_key).map(String::as_str) == Some(vk_value) || virtual_taint {
            return Some(Exclusion::VirtualKubelet);
        }
        match labels.get(toa_crds::OS_LABEL).map(String::as_str) {
            Some("linux") => None,
            Some(_) => Some(Exclusion::NotLinux),
            None => Some(Exclusion::NoOsLabel),
        }
    }
}

/// What the plan needs from one Node, joined with its ToaNodeState.
#[derive(Debug)]
pub(crate) struct NodeView<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Why the node can never run the agent; `None` for a node that can.
    pub excluded: Option<Exclusion>,
    pub has_agent_label: bool,
    /// The node's Lease expired (see [`super::stale`]); set by the planner, false until then.
    pub stale: bool,
    /// The ToaNodeState named after this node, if any.
    pub state: Option<&'a ToaNodeState>,
}

/// Nodes sorted by name, each joined with its state, plus the names of
/// states whose node does not exist. Later steps address nodes by index in
/// this vector, so no step looks a node or a state up by name again (name
/// lookups dominated the cost at 5,000 nodes).
#[derive(Debug, Default)]
pub(crate) struct NodeTable<'a> {
    pub nodes: Vec<NodeView<'a>>,
    pub orphan_states: Vec<&'a str>,
}

impl<'a> NodeTable<'a> {
    pub fn collect(nodes: &'a [Arc<NodeMeta>], states: &'a [Arc<ToaNodeState>]) -> Self {
        let mut views: Vec<NodeView<'a>> = nodes
            .iter()
            .filter_map(|n| {
                let name = n.metadata.name.as_deref()?;
                let labels = n.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
                Some(NodeView {
                    name,
                    uid: n.metadata.uid.as_deref().unwrap_or_default(),
                    labels,
                    excluded: Exclusion::of(n, labels),
                    has_agent_label: labels.get(toa_crds::AGENT_LABEL).map(String::as_str)
                        == Some(toa_crds::AGENT_LABEL_VALUE),
                    stale: false,
                    state: None,
                })
            })
            .collect();
        views.sort_unstable_by(|a, b| a.name.cmp(b.name));
        // The apiserver guarantees unique names; keep the first if a caller
        // passes duplicates, so the output stays well defined.
        views.dedup_by(|b, a| a.name == b.name);

        let mut named: Vec<(&'a str, &'a ToaNodeState)> = states
            .iter()
            .filter_map(|s| s.metadata.name.as_deref().map(|n| (n, s.as_ref())))
            .collect();
        named.sort_unstable_by(|a, b| a.0.cmp(b.0));
        named.dedup_by(|b, a| a.0 == b.0);

        // Merge join of two sorted lists.
        let mut orphan_states = Vec::new();
        let mut i = 0;
        for (name, state) in named {
            while i < views.len() && views[i].name < name {
                i += 1;
            }
            match views.get_mut(i) {
                Some(v) if v.name == name => v.state = Some(state),
                _ => orphan_states.push(name),
            }
        }
        Self {
            nodes: views,
            orphan_states,
        }
    }
}

/// Result of the assignment.
#[derive(Debug, Default)]
pub(crate) struct Assignment {
    /// Per node index: index of the owning policy (in rank order).
    pub owner: Vec<Option<usize>>,
    /// Per policy index: winner index -> nodes this policy matched but lost.
    pub conflicts: Vec<BTreeMap<usize, u32>>,
    /// Per policy index: matching nodes that can never run the agent, by why.
    pub excluded: Vec<BTreeMap<Exclusion, u32>>,
}

/// Assign every node that can run the agent to its best-ranked matching live
/// policy; count, per live policy, the matching nodes that cannot.
pub(crate) fn assign(policies: &[PolicyView<'_>], nodes: &[NodeView<'_>]) -> Assignment {
    let candidates: Vec<(usize, &Selector)> = policies
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.deleting)
        .filter_map(|(i, p)| p.selector.as_ref().ok().map(|s| (i, s)))
        .collect();
    let mut out = Assignment {
        owner: vec![None; nodes.len()],
        conflicts: vec![BTreeMap::new(); policies.len()],
        excluded: vec![BTreeMap::new(); policies.len()],
    };
    for (n, node) in nodes.iter().enumerate() {
        if let Some(why) = node.excluded {
            for (idx, sel) in &candidates {
                if sel.matches(node.labels) {
                    *out.excluded[*idx].entry(why).or_insert(0) += 1;
                }
            }
            continue;
        }
        let mut winner = None;
        for (idx, sel) in &candidates {
            if !sel.matches(node.labels) {
                continue;
            }
            match winner {
                None => winner = Some(*idx),
                Some(w) => *out.conflicts[*idx].entry(w).or_insert(0) += 1,
            }
        }
        out.owner[n] = winner;
    }
    out
}
