//! `toa.dev/v1alpha1`: the API of toa-operator.
//!
//! The Rust types here are the source of truth. `cargo run -p toa-crds --bin
//! crdgen` writes the CRD YAML beside this crate; a test fails when the
//! checked-in YAML drifts from the types.

pub mod conditions;
pub mod module;
pub mod node_state;
pub mod policy;
pub mod schema;
mod yaml;

pub use module::{ModuleSettings, PortRange, SettingsError};
pub use node_state::{
    Backend, BackendChoice, BuildInfo, DesiredState, KernelInfo, ModuleInfo, ModuleSource,
    NodePhase, NodeReason, SelfTestInfo, SelfTestResult, ToaNodeState, ToaNodeStateSpec,
    ToaNodeStateStatus,
};
pub use policy::{
    KernelCount, Lifecycle, NodeFailure, OnDelete, Rollout, ToaPolicy, ToaPolicySpec,
    ToaPolicyStatus,
};
pub use yaml::{crd_files, CrdFile, YamlError};

/// API group.
pub const GROUP: &str = "toa.dev";
/// API version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of both kinds.
pub const API_VERSION: &str = "toa.dev/v1alpha1";
/// Node label the operator sets on nodes that need an agent.
pub const AGENT_LABEL: &str = "toa.dev/agent";
/// Value of [`AGENT_LABEL`].
pub const AGENT_LABEL_VALUE: &str = "true";
/// Well-known node OS label. Only nodes labelled `kubernetes.io/os=linux` get an agent (the
/// agent DaemonSet's nodeSelector requires it), so only they are assigned to policies.
pub const OS_LABEL: &str = "kubernetes.io/os";
/// Label virtual-kubelet providers put on their Node (`type=virtual-kubelet`).
pub const VIRTUAL_KUBELET_LABEL: (&str, &str) = ("type", "virtual-kubelet");
/// Taint key virtual-kubelet providers put on their Node.
pub const VIRTUAL_KUBELET_TAINT: &str = "virtual-kubelet.io/provider";
/// Server-side apply field manager of the operator.
pub const OPERATOR_FIELD_MANAGER: &str = "toa-operator";
/// Server-side apply field manager of the node agent (ToaNodeState status only).
pub const AGENT_FIELD_MANAGER: &str = "toa-node-agent";
/// Finalizer the operator puts on every ToaPolicy so that deletion can
/// unload the module first.
pub const POLICY_FINALIZER: &str = "toa.dev/unload";
/// Name of the kernel module.
pub const MODULE_NAME: &str = "toa";
