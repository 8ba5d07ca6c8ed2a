//! `toa-operator uninstall`: what `helm uninstall` runs first (the chart's pre-delete hook Job),
//! so that removing the operator leaves nothing of it behind but what Helm keeps by design (the
//! CRDs and the custom resources).
//!
//! Behaviour, chosen so that uninstalling never disturbs traffic: the TOA modules stay loaded
//! on the nodes (an agent never unloads on exit; users who want them unloaded delete their
//! ToaPolicies first, while the operator still runs). The command
//! 1. takes the leader Lease for itself with a long duration, so the running replicas stand
//!    down and none of them leads again while the release goes away;
//! 2. waits one renew deadline, by which a deposed leader has stopped writing;
//! 3. removes the `toa.dev/unload` finalizer from every ToaPolicy (nothing would ever release
//!    it once the operator is gone, and `kubectl delete toapolicy` would hang);
//! 4. removes the `toa.dev/agent` label from every node;
//! 5. deletes the agent DaemonSet.
//!
//! The Lease itself is owned (ownerReference) by the release's agent ConfigMap, which Helm
//! deletes right after the hook: the garbage collector then removes the Lease, and a replica
//! still terminating cannot create a new one that outlives the release (its Lease and
//! DaemonSet carry the same owner).

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use toa_crds::{ToaPolicy, AGENT_LABEL};

use crate::apply;

/// Holder identity of the Lease while (and after) the release is uninstalled.
pub const UNINSTALL_IDENTITY: &str = "toa-operator-uninstall";
/// Lease duration the uninstall writes: far longer than any uninstall, so no replica leads
/// again before the garbage collector removes the Lease with the release's ConfigMap.
pub const UNINSTALL_LEASE_SECONDS: i32 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Apply(#[from] crate::error::Error),
    #[error("{0}")]
    Other(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> UninstallError {
    let what = what.into();
    move |source| UninstallError::Api { what, source }
}

/// What to clean up.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub daemonset_name: String,
    pub lease_name: String,
    /// The release's ConfigMap that owns the Lease and the DaemonSet (None: delete the Lease).
    pub owner_configmap: Option<String>,
    /// Pause after taking the Lease (a deposed leader's renew deadline).
    pub settle: Duration,
}

/// What was done, for the log and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub finalizers_removed: Vec<String>,
    pub nodes_unlabelled: Vec<String>,
    pub daemonset_deleted: bool,
    pub lease: &'static str,
}

/// The ownerReference to the release's ConfigMap (not a controller reference: the operator
/// controls these objects; the ConfigMap only bounds their lifetime).
pub fn configmap_owner(cm: &ConfigMap) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_string(),
        kind: "ConfigMap".to_string(),
        name: cm.metadata.name.clone()?,
        uid: cm.metadata.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

/// Reads the owner ConfigMap; a clear error when it is missing.
pub async fn resolve_owner(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<OwnerReference, UninstallError> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(api_err(format!(
            "reading ConfigMap {namespace}/{name} (--owner-configmap: the release's agent ConfigMap)"
        )))?;
    configmap_owner(&cm).ok_or_else(|| {
        UninstallError::Other(format!("ConfigMap {namespace}/{name} has no name or uid"))
    })
}

/// The Lease as the uninstall holds it.
pub fn uninstall_lease(
    current: Option<&Lease>,
    name: &str,
    owner: Option<OwnerReference>,
    now: Timestamp,
) -> Lease {
    let spec = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0)
        + i32::from(
            current.is_some() && spec.holder_identity.as_deref() != Some(UNINSTALL_IDENTITY),
        );
    let mut metadata = current.map(|l| l.metadata.clone()).unwrap_or(ObjectMeta {
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    });
    metadata.managed_fields = None;
    if let Some(owner) = owner {
        let refs = metadata.owner_references.get_or_insert_with(Vec::new);
        if !refs.iter().any(|r| r.uid == owner.uid) {
            refs.push(owner);
        }
    }
    Lease {
        metadata,
        spec: Some(LeaseSpec {
            holder_identity: Some(UNINSTALL_IDENTITY.to_string()),
            lease_duration_seconds: Some(UNINSTALL_LEASE_SECONDS),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

/// Takes the Lease whoever holds it (replace with the resourceVersion read; retried on
/// conflict with a renewing leader).
async fn take_lease(
    api: &Api<Lease>,
    name: &str,
    owner: Option<OwnerReference>,
) -> Result<(), UninstallError> {
    for _ in 0..10 {
        let current = api
            .get_opt(name)
            .await
            .map_err(api_err(format!("reading Lease {name}")))?;
        let lease = uninstall_lease(current.as_ref(), name, owner.clone(), Timestamp::now());
        let result = match current {
            Some(_) => api.replace(name, &PostParams::default(), &lease).await,
            None => api.create(&PostParams::default(), &lease).await,
        };
        match result {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(api_err(format!("taking Lease {name}"))(e)),
        }
    }
    Err(UninstallError::Other(format!(
        "taking Lease {name}: still conflicting after 10 attempts"
    )))
}

/// Runs the uninstall steps (see the module docs).
pub async fn run(client: &Client, target: &Target) -> Result<Report, UninstallError> {
    let mut report = Report::default();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &target.namespace);
    let owner = match &target.owner_configmap {
        Some(cm) => Some(resolve_owner(client, &target.namespace, cm).await?),
        None => None,
    };
    take_lease(&leases, &target.lease_name, owner.clone()).await?;
    tracing::info!(lease = %target.lease_name, "took the leader lease: replicas stand down");
    tokio::time::sleep(target.settle).await;

    let policies: Api<ToaPolicy> = Api::all(client.clone());
    for policy in policies
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing ToaPolicies"))?
    {
        if apply::remove_finalizer(client, &policy).await? {
            tracing::info!(policy = %policy.name_any(), "removed the toa.dev/unload finalizer");
            report.finalizers_removed.push(policy.name_any());
        }
    }

    let nodes: Api<Node> = Api::all(client.clone());
    let remove = json!({ "metadata": { "labels": { AGENT_LABEL: null } } });
    for node in nodes
        .list(&ListParams::default().labels(AGENT_LABEL))
        .await
        .map_err(api_err("listing labelled Nodes"))?
    {
        let name = node.name_any();
        match nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&remove))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, "removed the {AGENT_LABEL} label");
                report.nodes_unlabelled.push(name);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_err(format!("unlabelling Node {name}"))(e)),
        }
    }

    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &target.namespace);
    match daemonsets
        .delete(&target.daemonset_name, &DeleteParams::background())
        .await
    {
        Ok(_) => {
            tracing::info!(daemonset = %target.daemonset_name, "deleted the agent DaemonSet");
            report.daemonset_deleted = true;
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            return Err(api_err(format!(
                "deleting DaemonSet {}",
                target.daemonset_name
            ))(e))
        }
    }

    report.lease = if owner.is_some() {
        // Kept, held, until the garbage collector removes it with its owner.
        "held until the release's ConfigMap is deleted"
    } else {
        match leases
            .delete(&target.lease_name, &DeleteParams::default())
            .await
        {
            Ok(_) => "deleted",
            Err(kube::Error::Api(s)) if s.code == 404 => "absent",
            Err(e) => return Err(api_err(format!("deleting Lease {}", target.lease_name))(e)),
        }
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "toa-operator-agent-config".into(),
            uid: "u-1".into(),
            controller: None,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn the_uninstall_lease_takes_over_and_is_owned_by_the_release() {
        let held = Lease {
            metadata: ObjectMeta {
                name: Some("toa-operator-leader".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("toa-operator-replica-0_abcd".into()),
                lease_duration_seconds: Some(15),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        };
        let now = Timestamp::from_second(1_700_000_000).expect("time");
        let l = uninstall_lease(Some(&held), "toa-operator-leader", Some(owner()), now);
        let spec = l.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some(UNINSTALL_IDENTITY));
        assert_eq!(spec.lease_duration_seconds, Some(UNINSTALL_LEASE_SECONDS));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(
            l.metadata.resource_version.as_deref(),
            Some("42"),
            "replace is guarded"
        );
        assert_eq!(l.metadata.owner_references, Some(vec![owner()]));
        // Idempotent: running it again neither counts a transition nor duplicates the owner.
        let again = uninstall_lease(
            Some(&Lease {
                metadata: l.metadata.clone(),
                spec: Some(spec),
            }),
            "toa-operator-leader",
            Some(owner()),
            now,
        );
        assert_eq!(again.spec.expect("spec").lease_transitions, Some(4));
        assert_eq!(again.metadata.owner_references.expect("owners").len(), 1);
    }

    #[test]
    fn a_missing_lease_is_created_with_the_owner() {
        let now = Timestamp::from_second(1_700_000_000).expect("time");
        let l = uninstall_lease(None, "toa-operator-leader", Some(owner()), now);
        assert_eq!(l.metadata.name.as_deref(), Some("toa-operator-leader"));
        assert_eq!(l.spec.expect("spec").lease_transitions, Some(0));
    }

    #[test]
    fn configmap_owner_needs_name_and_uid() {
        let mut cm = ConfigMap::default();
        assert!(configmap_owner(&cm).is_none());
        cm.metadata.name = Some("c".into());
        cm.metadata.uid = Some("u".into());
        let o = configmap_owner(&cm).expect("owner");
        assert_eq!(
            (o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
            ("ConfigMap", "c", "u")
        );
        assert_eq!(o.controller, None);
    }
}
