//! The observed state of the node (ToaNodeState.status), written only by this agent.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use toa_crds::{
    Backend, ModuleSource, NodePhase as Phase, NodeReason as Reason, SelfTestInfo, SelfTestResult,
};

/// Wire name of a module source (as in the CRD and the metrics' `source` label).
pub fn source_name(s: ModuleSource) -> &'static str {
    match s {
        ModuleSource::Built => "Built",
        ModuleSource::Cache => "Cache",
        ModuleSource::Adopted => "Adopted",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelStatus {
    pub release: String,
    pub version: String,
    pub boot_id: String,
    pub os_image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lockdown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleStatus {
    pub srcversion: String,
    pub parameters: BTreeMap<String, String>,
    pub source: ModuleSource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatus {
    pub duration_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// The agent's view of the node; converted with [`NodeStatus::to_crd`] for the API server
/// and the status file, so both carry exactly the CRD's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelStatus>,
    /// The backend serving the node (None while none does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_test: Option<SelfTestInfo>,
    pub reload_pending: bool,
    pub agent_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
}

impl Default for NodeStatus {
    fn default() -> Self {
        Self {
            observed_generation: None,
            phase: Phase::Pending,
            reason: None,
            message: None,
            kernel: None,
            backend: None,
            module: None,
            build: None,
            self_test: None,
            reload_pending: false,
            agent_version: String::new(),
            last_heartbeat_time: None,
        }
    }
}

impl NodeStatus {
    /// The CRD's status object.
    pub fn to_crd(&self) -> toa_crds::ToaNodeStateStatus {
        toa_crds::ToaNodeStateStatus {
            observed_generation: self.observed_generation,
            phase: Some(self.phase),
            reason: self.reason,
            message: self.message.clone(),
            kernel: self.kernel.as_ref().map(|k| toa_crds::KernelInfo {
                release: k.release.clone(),
                version: k.version.clone(),
                boot_id: k.boot_id.clone(),
                os_image: k.os_image.clone(),
                lockdown: k.lockdown.clone().unwrap_or_default(),
                secure_boot: k.secure_boot.unwrap_or(false),
            }),
            backend: self.backend,
            module: self.module.as_ref().map(|m| toa_crds::ModuleInfo {
                srcversion: m.srcversion.clone(),
                parameters: m.parameters.clone(),
                source: Some(m.source),
            }),
            build: self.build.as_ref().map(|b| toa_crds::BuildInfo {
                duration_seconds: b.duration_seconds,
                log_tail: b.log_tail.clone(),
            }),
            self_test: self.self_test.clone(),
            reload_pending: self.reload_pending,
            agent_version: Some(self.agent_version.clone()),
            last_heartbeat_time: self
                .last_heartbeat_time
                .as_deref()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        }
    }

    /// Equality that ignores the heartbeat: a status is only re-written when this changes
    /// (or when the heartbeat is due).
    pub fn same_content(&self, other: &NodeStatus) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.last_heartbeat_time = None;
        b.last_heartbeat_time = None;
        a == b
    }
}

/// RFC 3339 UTC timestamp with second precision (metav1.Time's wire format).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days algorithm).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_653_000), "2026-11-26T00:30:00Z");
    }

    #[test]
    fn json_shape_matches_the_crd() {
        let s = NodeStatus {
            phase: Phase::Failed,
            reason: Some(Reason::HeadersMissing),
            message: Some("m".into()),
            module: Some(ModuleStatus {
                srcversion: "SV".into(),
                parameters: BTreeMap::from([("ipv4_kinds".into(), "200".into())]),
                source: ModuleSource::Cache,
            }),
            build: Some(BuildStatus {
                duration_seconds: 1.5,
                log_tail: None,
            }),
            agent_version: "0.1.0".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(s.to_crd()).expect("json");
        assert_eq!(v["phase"], "Failed");
        assert_eq!(v["reason"], "HeadersMissing");
        assert_eq!(v["module"]["source"], "Cache");
        assert_eq!(v["build"]["durationSeconds"], 1.5);
        assert_eq!(v["reloadPending"], false);
        assert!(v.get("observedGeneration").is_none());
        let back: toa_crds::ToaNodeStateStatus = serde_json::from_value(v).expect("crd status");
        assert_eq!(back.reason, Some(Reason::HeadersMissing));
    }

    #[test]
    fn heartbeat_time_survives_conversion() {
        let s = NodeStatus {
            last_heartbeat_time: Some("2026-11-26T00:30:00Z".into()),
            ..Default::default()
        };
        let crd = s.to_crd();
        let v = serde_json::to_value(&crd).expect("json");
        assert_eq!(v["lastHeartbeatTime"], "2026-11-26T00:30:00Z");
    }

    #[test]
    fn heartbeat_does_not_count_as_change() {
        let a = NodeStatus {
            last_heartbeat_time: Some("x".into()),
            ..Default::default()
        };
        let b = NodeStatus {
            last_heartbeat_time: Some("y".into()),
            ..Default::default()
        };
        assert!(a.same_content(&b));
        let c = NodeStatus {
            phase: Phase::Loaded,
            ..b.clone()
        };
        assert!(!a.same_content(&c));
    }
}
