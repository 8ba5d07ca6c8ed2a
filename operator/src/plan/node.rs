//! What the operator keeps of a Node, decoded straight from the apiserver's JSON.
//!
//! A kubelet's Node is 10-30 KB of JSON, nearly all of it status (images, nodeInfo,
//! conditions, addresses) and managed fields; the planner reads the name, uid, labels and
//! the taints (a virtual kubelet is recognised by its taint). [`NodeMeta`] is a typed
//! resource (`v1` `Node`, cluster scoped) with only those fields: serde skips everything else
//! while decoding, so the status is never built, not even for the page being decoded.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Deserializer, Serialize};

/// A Node as the operator watches it: metadata (name, uid, resourceVersion, labels, creation
/// and deletion time) and `spec.taints`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMeta {
    #[serde(default, deserialize_with = "slim_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<NodeTaints>,
}

/// Of a Node's spec, the taints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeTaints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,
}

impl k8s_openapi::Resource for NodeMeta {
    const API_VERSION: &'static str =
        <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str =
        <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str =
        <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::ListableResource for NodeMeta {
    const LIST_KIND: &'static str =
        <k8s_openapi::api::core::v1::Node as k8s_openapi::ListableResource>::LIST_KIND;
}

impl k8s_openapi::Metadata for NodeMeta {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Decodes of a Node's metadata only what the operator reads; managed fields (a few KB per
/// Node), annotations and owner references are skipped, not built and dropped.
fn slim_metadata<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Slim {
        name: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        creation_timestamp: Option<Time>,
        deletion_timestamp: Option<Time>,
    }
    let s = Slim::deserialize(d)?;
    Ok(ObjectMeta {
        name: s.name,
        uid: s.uid,
        resource_version: s.resource_version,
        labels: s.labels,
        creation_timestamp: s.creation_timestamp,
        deletion_timestamp: s.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_only_what_the_planner_reads() {
        let images: Vec<_> = (0..40)
            .map(|i| json!({"names": [format!("registry.example/img{i}@sha256:{}", "a".repeat(64))], "sizeBytes": 1000 + i}))
            .collect();
        let node: NodeMeta = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "uid": "u1", "resourceVersion": "42",
                         "labels": {"kubernetes.io/os": "linux"},
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                         "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                         "creationTimestamp": "2026-11-26T00:00:00Z"},
            "spec": {"podCIDR": "10.0.0.0/24", "providerID": "kind://n1",
                     "taints": [{"key": "virtual-kubelet.io/provider", "value": "x",
                                 "effect": "NoSchedule"}]},
            "status": {"images": images, "nodeInfo": {"kernelVersion": "6.1.0"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .expect("node");
        assert_eq!(node.metadata.name.as_deref(), Some("n1"));
        assert_eq!(node.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(node.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(
            node.metadata.labels.as_ref().map(|l| l.len()),
            Some(1),
            "{node:?}"
        );
        assert!(node.metadata.creation_timestamp.is_some());
        assert!(node.metadata.managed_fields.is_none() && node.metadata.annotations.is_none());
        let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
        assert_eq!(
            taints.map(|t| t[0].key.as_str()),
            Some("virtual-kubelet.io/provider")
        );
        // Nothing else survives: what is kept encodes to a small fraction of the input.
        let kept = serde_json::to_string(&node).expect("encode");
        assert!(kept.len() < 400, "{kept}");
        assert!(
            !kept.contains("podCIDR") && !kept.contains("images"),
            "{kept}"
        );
    }

    #[test]
    fn a_node_without_spec_or_labels_decodes() {
        let node: NodeMeta =
            serde_json::from_value(json!({"metadata": {"name": "n2"}})).expect("node");
        assert_eq!(node.metadata.name.as_deref(), Some("n2"));
        assert!(node.spec.is_none() && node.metadata.labels.is_none());
    }
}
