//! `ToaPolicy`: which nodes get the TOA module and with which settings.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::module::ModuleSettings;
use crate::node_state::BackendChoice;

/// Lowest accepted `spec.priority`.
pub const MIN_PRIORITY: i32 = 0;
/// Highest accepted `spec.priority`.
pub const MAX_PRIORITY: i32 = 1000;
/// Default `spec.lifecycle.unloadTimeoutSeconds`.
pub const DEFAULT_UNLOAD_TIMEOUT_SECONDS: i64 = 600;
/// At most this many entries in `status.failures`.
pub const MAX_REPORTED_FAILURES: usize = 20;

/// Desired TOA module on a set of Linux nodes.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "toa.dev",
    version = "v1alpha1",
    kind = "ToaPolicy",
    plural = "toapolicies",
    singular = "toapolicy",
    shortname = "toap",
    category = "toa",
    status = "ToaPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "ToaPolicy loads the TOA kernel module on the Linux nodes its nodeSelector matches.",
    printcolumn = r#"{"name": "Selected", "type": "integer", "jsonPath": ".status.selectedNodes"}"#,
    printcolumn = r#"{"name": "Loaded", "type": "integer", "jsonPath": ".status.loadedNodes"}"#,
    printcolumn = r#"{"name": "Failed", "type": "integer", "jsonPath": ".status.failedNodes"}"#,
    printcolumn = r#"{"name": "Conflicting", "type": "integer", "jsonPath": ".status.conflictingNodes"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Stale", "type": "integer", "priority": 1, "jsonPath": ".status.staleNodes"}"#,
    printcolumn = r#"{"name": "Backend", "type": "string", "priority": 1, "jsonPath": ".spec.backend"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ToaPolicySpec {
    /// Nodes this policy applies to. Empty selects every Linux node.
    #[serde(default)]
    pub node_selector: LabelSelector,
    /// When several policies select a node, the highest priority wins, then
    /// the oldest policy, then the name. 0..1000, default 0.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: i32,
    /// Module settings for the selected nodes.
    #[serde(default)]
    pub module: ModuleSettings,
    /// What happens when the policy or a node leaves.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// Pacing of disruptive module reloads.
    #[serde(default)]
    pub rollout: Rollout,
    /// Which TOA implementation serves the selected nodes: Module (default: the kernel
    /// module, built by the agent on each node), EBPF (eBPF programs on the root cgroup v2:
    /// no compiler, no kernel headers, no module signing; kernels >= 5.10), or Auto (each
    /// node's agent picks EBPF where the node can run it, Module otherwise, and reports which
    /// one and why in its ToaNodeState). Changing it switches each node's backend: a
    /// disruptive change paced like a reload by rollout.maxUnavailable.
    #[serde(default)]
    pub backend: BackendChoice,
}

/// What to do with the module when nodes leave the policy.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum OnDelete {
    /// Unload the module from nodes that leave (the policy is deleted or a
    /// node stops matching).
    #[default]
    Unload,
    /// Leave the module loaded and stop managing it.
    Keep,
}

impl std::fmt::Display for OnDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnDelete::Unload => "Unload",
            OnDelete::Keep => "Keep",
        })
    }
}

fn default_unload_timeout() -> i64 {
    DEFAULT_UNLOAD_TIMEOUT_SECONDS
}

/// Lifecycle settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Unload (default) or Keep the module when the policy is deleted or a
    /// node stops matching.
    #[serde(default)]
    pub on_delete: OnDelete,
    /// Replace another TOA module found loaded on a node (disruptive, paced by
    /// rollout.maxUnavailable). Default false: such nodes report ForeignModule.
    #[serde(default)]
    pub replace_foreign_module: bool,
    /// How long a deleted policy waits for its nodes to unload before its
    /// finalizer is released anyway. 0..86400, default 600.
    #[serde(default = "default_unload_timeout")]
    #[schemars(range(min = 0, max = 86400))]
    pub unload_timeout_seconds: i64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            on_delete: OnDelete::Unload,
            replace_foreign_module: false,
            unload_timeout_seconds: DEFAULT_UNLOAD_TIMEOUT_SECONDS,
        }
    }
}

fn default_max_unavailable() -> i32 {
    1
}

/// Rollout pacing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// At most this many nodes of the policy reload their module at once.
    /// >= 1, default 1.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1))]
    pub max_unavailable: i32,
}

impl Default for Rollout {
    fn default() -> Self {
        Self { max_unavailable: 1 }
    }
}

/// Observed state of a policy, aggregated from its nodes by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToaPolicyStatus {
    /// metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, Conflict, TrustWarning, Synced, AgentsAvailable and
    /// NodesStale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Nodes assigned to this policy.
    #[serde(default)]
    pub selected_nodes: i32,
    /// Assigned nodes whose module is Loaded.
    #[serde(default)]
    pub loaded_nodes: i32,
    /// Nodes of this policy (assigned, or leaving and not yet unloaded) in phase Failed.
    #[serde(default)]
    pub failed_nodes: i32,
    /// Nodes this policy selects that a higher-ranked policy holds.
    #[serde(default)]
    pub conflicting_nodes: i32,
    /// Nodes matching spec.nodeSelector that can never run the agent, so the policy does not
    /// hold them: no `kubernetes.io/os=linux` label (missing or another OS), or a virtual
    /// kubelet (label `type=virtual-kubelet` or taint `virtual-kubelet.io/provider`).
    #[serde(default)]
    pub excluded_nodes: i32,
    /// Assigned nodes whose node Lease (namespace kube-node-lease, renewed by the kubelet) was
    /// not renewed within the operator's `--node-lease-grace-seconds`: powered off or cut off
    /// from the apiserver. Their counts above show the phase they last reported; the NodesStale
    /// condition names them. They never hold back the rollout (see `rollout.maxUnavailable`).
    #[serde(default)]
    pub stale_nodes: i32,
    /// Kernel releases seen on the assigned nodes, sorted by release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<KernelCount>,
    /// Up to 20 failing nodes, sorted by node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub failures: Vec<NodeFailure>,
}

/// Number of nodes running one kernel release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KernelCount {
    /// `uname -r`.
    pub release: String,
    /// Node count.
    pub nodes: i32,
}

/// One failing node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeFailure {
    /// Node name.
    pub node: String,
    /// Machine-readable reason from the node's status (e.g. BuildFailed).
    pub reason: String,
    /// What went wrong and how to fix it.
    pub message: String,
}
