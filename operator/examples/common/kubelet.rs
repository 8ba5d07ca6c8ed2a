//! Node objects as a kubelet writes them, shared by the scale examples (`scale_load`,
//! `store_memory`): labels, annotations and spec at registration, then a status with capacity,
//! conditions, addresses, nodeInfo and 40 images (about 10 KB of JSON in all).

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

/// Label that splits the nodes in thirds (the selector change keeps `0`).
pub const THIRD_LABEL: &str = "scale.toa.dev/third";

/// A Node as the kubelet registers it (metadata and spec).
pub fn node(name: &str, i: usize) -> Value {
    let zone = ["eu-west-1a", "eu-west-1b", "eu-west-1c"][i % 3];
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "m5.2xlarge",
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": zone,
                THIRD_LABEL: (i % 3).to_string(),
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": format!("10.{}.{}.0/24", 64 + i / 256 % 64, i % 256),
            "podCIDRs": [format!("10.{}.{}.0/24", 64 + i / 256 % 64, i % 256)],
            "providerID": format!("aws:///{zone}/i-0{i:016x}"),
        },
    })
}

/// The status a kubelet reports: about 10 KB of JSON with the 40 images.
pub fn status(name: &str, i: usize) -> Value {
    let now = Timestamp::now().to_string();
    let ip = format!("10.0.{}.{}", i / 250 % 250, i % 250 + 1);
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let images: Vec<Value> = (0..40)
        .map(|k| {
            let digest: String = format!(
                "{:016x}",
                (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k
            )
            .repeat(4);
            json!({
                "names": [
                    format!("registry.example.com/team-{k:02}/service-{k:02}@sha256:{digest}"),
                    format!("registry.example.com/team-{k:02}/service-{k:02}:v1.{k}.{}", i % 7),
                ],
                "sizeBytes": 10_000_000 + k * 1_234_567,
            })
        })
        .collect();
    let resources = json!({"cpu": "8", "ephemeral-storage": "101430960Ki", "hugepages-1Gi": "0",
                           "hugepages-2Mi": "0", "memory": "32386284Ki", "pods": "110"});
    json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": ip},
            {"type": "InternalDNS", "address": format!("ip-{}.eu-west-1.compute.internal", ip.replace('.', "-"))},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": format!("{:032x}", (i as u128).wrapping_mul(0x1234_5678_9abc_def1)),
            "systemUUID": format!("ec2{:029x}", i),
            "bootID": format!("{:08x}-1111-2222-3333-444455556666", i),
            "kernelVersion": "6.1.0-56-amd64",
            "osImage": "Debian GNU/Linux 12 (bookworm)",
            "containerRuntimeVersion": "containerd://1.7.24",
            "kubeletVersion": "v1.36.3",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
        "images": images,
    }})
}
