//! `ToaNodeState`: the desired and observed TOA module state of one node.
//! The operator writes `spec`; only the node's agent writes `status`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::module::ModuleSettings;

/// Desired module state of one node (object name = node name).
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "toa.dev",
    version = "v1alpha1",
    kind = "ToaNodeState",
    plural = "toanodestates",
    singular = "toanodestate",
    shortname = "toans",
    category = "toa",
    status = "ToaNodeStateStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "ToaNodeState is the TOA module state of one node: spec from the operator, status from the node's agent.",
    validation = Rule::new("self.metadata.name == self.spec.nodeName").message("metadata.name must equal spec.nodeName: a ToaNodeState is named after its node"),
    printcolumn = r#"{"name": "Policy", "type": "string", "jsonPath": ".spec.policy"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.reason"}"#,
    printcolumn = r#"{"name": "Kernel", "type": "string", "jsonPath": ".status.kernel.release"}"#,
    printcolumn = r#"{"name": "Backend", "type": "string", "jsonPath": ".status.backend"}"#,
    printcolumn = r#"{"name": "Module", "type": "string", "jsonPath": ".status.module.srcversion"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ToaNodeStateSpec {
    /// The node this state is for. Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("nodeName is immutable: delete and recreate the ToaNodeState"))]
    pub node_name: String,
    /// Name of the ToaPolicy that manages this node.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
    /// Loaded or Unloaded.
    pub desired_state: DesiredState,
    /// Resolved module settings.
    #[serde(default)]
    pub module: ModuleSettings,
    /// Replace another TOA module found loaded (needs reloadAllowed).
    #[serde(default)]
    pub replace_foreign_module: bool,
    /// The operator allows a disruptive reload now (paced by the policy's
    /// rollout.maxUnavailable). The agent asks for one with status.reloadPending.
    #[serde(default)]
    pub reload_allowed: bool,
    /// Which TOA implementation serves the node: Module (the kernel module, built by the
    /// agent), EBPF (eBPF programs on the root cgroup v2: no compiler, no kernel headers,
    /// no module signing; kernels >= 5.10) or Auto (the agent picks EBPF when the node can run
    /// it, Module otherwise, and says why in status.message). Switching is a disruptive change
    /// like a reload (it waits for reloadAllowed).
    #[serde(default)]
    pub backend: BackendChoice,
}

/// The backend a policy asks for: one of the two, or Auto (decided on the node by its agent).
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
pub enum BackendChoice {
    /// The TOA kernel module (toa.ko), built by the agent on the node.
    #[default]
    Module,
    /// eBPF programs attached to the root cgroup v2 (ebpf/README.md).
    #[serde(rename = "EBPF")]
    Ebpf,
    /// EBPF where the node can run it (a cgroup v2 root, a BPF file system, and the programs
    /// pass the kernel's verifier; the module settings fit the eBPF backend), Module otherwise.
    Auto,
}

impl BackendChoice {
    /// The wire name (Module, EBPF, Auto).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Module => "Module",
            BackendChoice::Ebpf => "EBPF",
            BackendChoice::Auto => "Auto",
        }
    }

    /// The backend this choice names, `None` for Auto.
    pub fn fixed(self) -> Option<Backend> {
        match self {
            BackendChoice::Module => Some(Backend::Module),
            BackendChoice::Ebpf => Some(Backend::Ebpf),
            BackendChoice::Auto => None,
        }
    }
}

impl From<Backend> for BackendChoice {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Module => BackendChoice::Module,
            Backend::Ebpf => BackendChoice::Ebpf,
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TOA implementation.
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
pub enum Backend {
    /// The TOA kernel module (toa.ko).
    #[default]
    Module,
    /// eBPF programs attached to the root cgroup v2 (ebpf/README.md).
    #[serde(rename = "EBPF")]
    Ebpf,
}

impl Backend {
    /// The wire name (Module, EBPF).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Module => "Module",
            Backend::Ebpf => "EBPF",
        }
    }

    /// The value of the metrics' `backend` label (module, ebpf).
    pub fn label(self) -> &'static str {
        match self {
            Backend::Module => "module",
            Backend::Ebpf => "ebpf",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Desired module state.
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
pub enum DesiredState {
    /// The module must be loaded with the given settings.
    #[default]
    Loaded,
    /// The module must be unloaded.
    Unloaded,
}

/// Observed state, written by the node's agent only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToaNodeStateStatus {
    /// metadata.generation of the spec the agent acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the node is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<NodePhase>,
    /// Why, for Failed (and for a phase that waits on something).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NodeReason>,
    /// Human-readable cause and remedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Running kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelInfo>,
    /// The backend that serves the node now (absent while none does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Loaded module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleInfo>,
    /// Last module build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildInfo>,
    /// The agent's TOA self-test of the serving backend (after every load, attach or adoption,
    /// and every parameter change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_test: Option<SelfTestInfo>,
    /// The agent wants a disruptive reload (its module source differs from
    /// the loaded one, or a foreign module is to be replaced). It stays true
    /// until the reload is done.
    #[serde(default)]
    pub reload_pending: bool,
    /// Version of the agent that wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Last time the agent wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
}

/// Kernel facts reported by the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    #[serde(default)]
    pub version: String,
    /// /proc/sys/kernel/random/boot_id.
    #[serde(default)]
    pub boot_id: String,
    /// PRETTY_NAME from /etc/os-release.
    #[serde(default)]
    pub os_image: String,
    /// Active lockdown mode: none, integrity or confidentiality.
    #[serde(default)]
    pub lockdown: String,
    /// Secure Boot enabled.
    #[serde(default)]
    pub secure_boot: bool,
}

/// The loaded module.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    /// /sys/module/toa/srcversion.
    #[serde(default)]
    pub srcversion: String,
    /// Current values under /sys/module/toa/parameters.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Where the loaded module came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ModuleSource>,
}

/// Where the loaded module came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ModuleSource {
    /// Compiled by the agent for this kernel.
    Built,
    /// Taken from the host build cache.
    Cache,
    /// Already loaded with a matching srcversion (agent restart).
    Adopted,
}

/// What the agent's self-test saw: one handshake per configured address family, sent by the
/// agent as a balancer through a TUN device in a private network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfTestInfo {
    /// Passed, Failed, or Skipped (the test could not run; not evidence against the module).
    pub result: SelfTestResult,
    /// What each check saw (the addresses returned to the test's server).
    #[serde(default)]
    pub message: String,
    /// srcversion of the module that was tested (`ebpf` when the eBPF backend was).
    #[serde(default)]
    pub srcversion: String,
}

/// Result of the agent's self-test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SelfTestResult {
    Passed,
    Failed,
    Skipped,
}

/// Last module build.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// Wall time of the build.
    #[serde(default)]
    pub duration_seconds: f64,
    /// Last lines of the build log (on failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// Raised by `FromStr` for an unknown phase or reason name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of {expected}")]
pub struct UnknownName {
    what: &'static str,
    value: String,
    expected: String,
}

// One macro so Display, FromStr, ALL and the serde names can never disagree.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => stringify!($v)),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| UnknownName {
                    what: $what,
                    value: s.to_string(),
                    expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

named_enum!(
    /// Node phase.
    NodePhase, "phase" {
        /// Waiting to start (agent just started, or waiting for reloadAllowed).
        Pending,
        /// Compiling the module for this kernel.
        Building,
        /// Loading (or reloading) the module.
        Loading,
        /// Module loaded with the desired settings.
        Loaded,
        /// Unloading the module.
        Unloading,
        /// Module not loaded, as desired.
        Unloaded,
        /// Stuck: see reason and message.
        Failed,
    }
);

impl NodePhase {
    /// Phases during which the node's module is changing (counts against
    /// rollout.maxUnavailable).
    pub fn is_transitioning(self) -> bool {
        matches!(
            self,
            NodePhase::Building | NodePhase::Loading | NodePhase::Unloading
        )
    }
}

named_enum!(
    /// Why a node is Failed (or waiting).
    NodeReason, "reason" {
        /// Kernel headers for the running kernel are not installed.
        HeadersMissing,
        /// The module did not compile (see build.logTail).
        BuildFailed,
        /// The build ran past --build-timeout.
        BuildTimeout,
        /// Secure Boot / lockdown refuses unsigned modules.
        SignatureRequired,
        /// Another TOA module is loaded and replaceForeignModule is false.
        ForeignModule,
        /// The kernel lacks a feature the module needs.
        UnsupportedKernel,
        /// insmod failed.
        LoadFailed,
        /// rmmod failed.
        UnloadFailed,
        /// The module is in use and cannot be unloaded now.
        ModuleBusy,
        /// The kernel refused a module parameter value.
        ParametersRejected,
        /// Phase Pending, not a failure: a foreign TOA module is loaded, replaceForeignModule
        /// is set, and its replacement waits for its paced turn (spec.reloadAllowed).
        ReplacePending,
        /// The kernel refused the module as built for another kernel build (symbol versions,
        /// version magic): the headers used do not match the running kernel exactly.
        KernelMismatch,
        /// The module is loaded but the agent's TOA handshake in a private network namespace
        /// did not show the address it sent (see selfTest.message).
        SelfTestFailed,
        /// The running kernel was built with a compiler (its CONFIG_CC_VERSION_TEXT) that the
        /// agent image does not have: run an agent image that provides it. With a build root
        /// from the node's distribution (the default on Debian-family nodes) only when that is
        /// not possible either.
        CompilerMismatch,
        /// The image cannot build for this kernel and assembling a build root from the node's
        /// own distribution failed (no apt sources, a package missing from the mirror, a
        /// signature the node does not trust); the message names the cause and the fix.
        BuildRootFailed,
        /// The image cannot build for this kernel and the package mirror for the build root
        /// did not answer; the message names it. Air-gapped clusters set agent.buildRootMirror.
        MirrorUnreachable,
    }
);

impl ToaNodeState {
    /// Current phase, if the agent reported one.
    pub fn phase(&self) -> Option<NodePhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}
