//! A node agent's report, shared by the scale examples (`scale_load`, `store_memory`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{json, Value};
use toa_crds::{DesiredState, KernelInfo, ModuleInfo, NodePhase, ToaNodeState, ToaNodeStateStatus};

/// The status an agent reports once it acted on `state`'s spec.
pub fn status(state: &ToaNodeState) -> Option<Value> {
    let generation = state.metadata.generation;
    let status = state.status.clone().unwrap_or_default();
    let phase = match state.spec.desired_state {
        DesiredState::Loaded => NodePhase::Loaded,
        DesiredState::Unloaded => NodePhase::Unloaded,
    };
    if status.observed_generation == generation && status.phase == Some(phase) {
        return None;
    }
    let loaded = phase == NodePhase::Loaded;
    let status = ToaNodeStateStatus {
        observed_generation: generation,
        phase: Some(phase),
        kernel: Some(KernelInfo {
            release: "6.1.0-56-amd64".into(),
            version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)".into(),
            boot_id: "1e7d6c1a-5b1e-4a53-9a0e-3c1f2a9d8e11".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            lockdown: "none".into(),
            secure_boot: false,
        }),
        module: loaded.then(|| ModuleInfo {
            srcversion: "4E1B2F0C9D8A7B6C5D4E3F2".into(),
            parameters: BTreeMap::from([
                ("ipv4_kinds".to_string(), "254".to_string()),
                ("nat64_kinds".to_string(), "253".to_string()),
            ]),
            source: None,
        }),
        agent_version: Some("0.1.0".into()),
        last_heartbeat_time: Some(Time(Timestamp::now())),
        ..ToaNodeStateStatus::default()
    };
    Some(json!({
        "apiVersion": toa_crds::API_VERSION, "kind": "ToaNodeState",
        "metadata": {"name": state.name_any()},
        "status": status,
    }))
}
