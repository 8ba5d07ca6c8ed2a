//! Renders the node-agent DaemonSet from the agent config, and detects drift of the live one.
//!
//! The operator applies this object with server-side apply under its field manager; whatever a
//! user changed in the fields we set (or a deleted DaemonSet) is put back on the next pass.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource,
    LocalObjectReference, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::config::AgentConfig;

/// Label the operator puts on nodes that need an agent, and the DaemonSet selects on.
pub const AGENT_NODE_LABEL: &str = "toa.dev/agent";
const NAME_LABEL: &str = "app.kubernetes.io/name";
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Name of the agent's container (stable: `kubectl logs ds/toa-node-agent -c agent`).
pub const CONTAINER_NAME: &str = "agent";
/// Where the host's root-ish trees are mounted inside the agent (agent `--host-root`).
const HOST_ROOT: &str = "/host";
/// Where the agent image ships the compiled eBPF backend (images/node-agent-root.sh `stage`;
/// the agent's `--ebpf-object` default).
pub const EBPF_OBJECT: &str = "/usr/share/toa-node-agent/ebpf/toa.bpf.o";
/// The host's cgroup v2 root as the agent sees it (mounted from the host, `--cgroup-root`).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The eBPF backend's pin directory on the host's BPF file system (`--bpf-pin-dir`).
pub const BPF_PIN_DIR: &str = "/sys/fs/bpf/toa";

/// Rollout pacing of the agent pods. An agent restart never unloads the module: the new agent
/// adopts the loaded module whose srcversion matches, and a disruptive reload happens only when
/// the operator grants it (ToaNodeState.spec.reloadAllowed, paced by the policy's
/// maxUnavailable). So replacing agent pods only pauses status reporting and metrics on those
/// nodes; it never touches traffic, and a fleet-wide upgrade may proceed 10% at a time.
pub const AGENT_MAX_UNAVAILABLE: &str = "10%";

/// The DaemonSet's (immutable) pod selector. It deliberately leaves out
/// `app.kubernetes.io/instance`: the chart sets that pod label to its release name, which need
/// not equal the DaemonSet name, and a selector can never be changed after creation.
pub fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), "toa-node-agent".to_string()),
        (COMPONENT_LABEL.to_string(), "node-agent".to_string()),
    ])
}

struct HostMount {
    name: &'static str,
    host_path: &'static str,
    mount_path: &'static str,
    read_only: bool,
    /// hostPath type; "" (no check) for trees that only some distributions have.
    kind: &'static str,
    /// A second mount point of the same volume (read-only).
    also_at: Option<&'static str>,
}

/// The fixed host mounts of the agent contract, plus what kbuild needs at real paths:
/// - host /usr/src also at /usr/src: kernel header trees include each other and are reached
///   through /lib/modules/*/build by ABSOLUTE paths (Debian's arch headers include the
///   -common tree as /usr/src/linux-headers-*-common, RHEL's build link is
///   /usr/src/kernels/*), so they must exist at their real path in the container;
/// - host /usr/lib at /host/usr/lib: Debian's headers link scripts/ and tools/ into
///   /usr/lib/linux-kbuild-X.Y; the agent links that one directory into its own /usr/lib
///   (mounting the host's /usr/lib over the image's would replace the agent's compiler).
///
/// And what the eBPF backend needs (ToaNodeState.spec.backend EBPF or Auto):
/// - host /sys/fs/bpf (the BPF file system) at /sys/fs/bpf, writable: the agent pins the
///   backend's programs, links and maps under /sys/fs/bpf/toa, so that they outlive the pod
///   and a new agent adopts them;
/// - host /sys/fs/cgroup (the cgroup v2 root) at /sys/fs/cgroup, read-only: the programs
///   attach to the root cgroup, which covers every pod and host process. Both are mounted on
///   their own, not only through /sys: a runtime may put its own cgroup view over /sys/fs/cgroup.
///
/// And what the build root from the node's own distribution reads (`buildroot.rs`), read-only:
/// - host /etc/apt at /host/etc/apt: the node's apt sources (one-line and deb822), its
///   trusted keys (`trusted.gpg`, `trusted.gpg.d`) and `signed-by` keys under /etc/apt/keyrings;
/// - host /usr/share/keyrings at /host/usr/share/keyrings: where Debian and Ubuntu sources name
///   their `signed-by` keyring.
///
/// Both are of type "" (no check): a node of another distribution has neither.
const HOST_MOUNTS: [HostMount; 11] = [
    HostMount {
        name: "host-proc",
        host_path: "/proc",
        mount_path: "/host/proc",
        read_only: true,
        kind: "Directory",
        also_at: None,
    },
    HostMount {
        name: "host-sys",
        host_path: "/sys",
        mount_path: "/sys",
        read_only: false,
        kind: "Directory",
        also_at: None,
    },
    HostMount {
        name: "host-bpffs",
        host_path: "/sys/fs/bpf",
        mount_path: "/sys/fs/bpf",
        read_only: false,
        kind: "Directory",
        also_at: None,
    },
    HostMount {
        name: "host-cgroup",
        host_path: "/sys/fs/cgroup",
        mount_path: "/sys/fs/cgroup",
        read_only: true,
        kind: "Directory",
        also_at: None,
    },
    HostMount {
        name: "host-lib-modules",
        host_path: "/lib/modules",
        mount_path: "/host/lib/modules",
        read_only: true,
        kind: "Directory",
        also_at: None,
    },
    HostMount {
        name: "host-usr-src",
        host_path: "/usr/src",
        mount_path: "/host/usr/src",
        read_only: true,
        kind: "",
        also_at: Some("/usr/src"),
    },
    HostMount {
        name: "host-usr-lib-modules",
        host_path: "/usr/lib/modules",
        mount_path: "/host/usr/lib/modules",
        read_only: true,
        kind: "",
        also_at: None,
    },
    HostMount {
        name: "host-usr-lib",
        host_path: "/usr/lib",
        mount_path: "/host/usr/lib",
        read_only: true,
        kind: "Directory",
        also_at: None,
    },
    HostMount {
        name: "host-os-release",
        host_path: "/etc/os-release",
        mount_path: "/host/etc/os-release",
        read_only: true,
        kind: "File",
        also_at: None,
    },
    HostMount {
        name: "host-etc-apt",
        host_path: "/etc/apt",
        mount_path: "/host/etc/apt",
        read_only: true,
        kind: "",
        also_at: None,
    },
    HostMount {
        name: "host-usr-share-keyrings",
        host_path: "/usr/share/keyrings",
        mount_path: "/host/usr/share/keyrings",
        read_only: true,
        kind: "",
        also_at: None,
    },
];
const CACHE_VOLUME: &str = "host-cache";

/// Volume names the operator uses itself (extra host paths may not reuse them).
pub fn builtin_volume_names() -> Vec<&'static str> {
    HOST_MOUNTS
        .iter()
        .map(|m| m.name)
        .chain(std::iter::once(CACHE_VOLUME))
        .collect()
}

/// Mount points the operator uses itself (extra host paths may not reuse them).
pub fn builtin_mount_paths(cfg: &AgentConfig) -> Vec<String> {
    HOST_MOUNTS
        .iter()
        .flat_map(|m| std::iter::once(m.mount_path).chain(m.also_at))
        .map(str::to_string)
        .chain(std::iter::once(cfg.host_cache_path.clone()))
        .collect()
}

/// Label keys the operator sets on the DaemonSet object (user labels may not reuse them).
pub fn owned_object_label_keys() -> [&'static str; 5] {
    [
        NAME_LABEL,
        INSTANCE_LABEL,
        COMPONENT_LABEL,
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/managed-by",
    ]
}

fn object_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels();
    labels.insert(INSTANCE_LABEL.into(), name.into());
    labels.insert("app.kubernetes.io/part-of".into(), "toa-operator".into());
    labels.insert("app.kubernetes.io/managed-by".into(), "toa-operator".into());
    labels
}

fn host_path_volume(name: &str, path: &str, kind: &str) -> Volume {
    Volume {
        name: name.to_string(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string(),
            type_: Some(kind.to_string()),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// Default requests: enough to schedule; no limits, because building the module runs a compiler
/// whose peak memory varies with the kernel, and an OOM kill mid-build helps nobody.
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("50m".to_string())),
            ("memory".to_string(), Quantity("64Mi".to_string())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Default tolerations: tolerate everything, since a node that carries `toa.dev/agent=true`
/// needs its agent whatever its taints (otherwise its module could never be unloaded).
fn default_tolerations() -> Vec<Toleration> {
    vec![Toleration {
        operator: Some("Exists".to_string()),
        ..Toleration::default()
    }]
}

/// Builds the agent DaemonSet `name` in `namespace` from `cfg`.
pub fn build(cfg: &AgentConfig, name: &str, namespace: &str) -> DaemonSet {
    // The chart's podLabels win over our defaults (its metrics Service and PodMonitor select on
    // them); config validation guarantees they agree with the selector.
    let mut pod_labels = object_labels(name);
    pod_labels.extend(cfg.pod_labels.clone());

    let mut node_selector = cfg.node_selector.clone();
    node_selector.insert(AGENT_NODE_LABEL.to_string(), "true".to_string());
    node_selector.insert("kubernetes.io/os".to_string(), "linux".to_string());

    let mut volumes: Vec<Volume> = HOST_MOUNTS
        .iter()
        .map(|m| host_path_volume(m.name, m.host_path, m.kind))
        .collect();
    let mut mounts: Vec<VolumeMount> = HOST_MOUNTS
        .iter()
        .flat_map(|m| {
            std::iter::once(mount(m.name, m.mount_path, m.read_only))
                .chain(m.also_at.map(|at| mount(m.name, at, true)))
        })
        .collect();
    volumes.push(host_path_volume(
        CACHE_VOLUME,
        &cfg.host_cache_path,
        "DirectoryOrCreate",
    ));
    mounts.push(mount(CACHE_VOLUME, &cfg.host_cache_path, false));
    for extra in &cfg.extra_host_paths {
        volumes.push(host_path_volume(&extra.name, &extra.host_path, ""));
        mounts.push(mount(&extra.name, &extra.mount_path, true));
    }

    let cache_dir = format!("{}/cache", cfg.host_cache_path.trim_end_matches('/'));
    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(cfg.image.clone()),
        image_pull_policy: Some(cfg.image_pull_policy.as_str().to_string()),
        args: Some(
            vec![
                format!("--host-root={HOST_ROOT}"),
                format!("--cache-dir={cache_dir}"),
                format!(
                    "--metrics-addr={}",
                    std::net::SocketAddr::new(cfg.metrics_bind_address, cfg.metrics_port)
                ),
                format!("--log-format={}", cfg.log_format.as_str()),
                format!("--build-timeout={}", cfg.build_timeout_seconds),
                format!("--cache-max-age-days={}", cfg.cache_max_age_days),
                format!("--ebpf-object={EBPF_OBJECT}"),
                format!("--cgroup-root={CGROUP_ROOT}"),
                format!("--bpf-pin-dir={BPF_PIN_DIR}"),
            ]
            .into_iter()
            .chain(cfg.per_cpu_metrics.then(|| "--per-cpu-metrics".to_string()))
            .chain((!cfg.build_root).then(|| "--build-root=false".to_string()))
            .chain(
                Some(cfg.build_root_mirror.trim())
                    .filter(|m| !m.is_empty())
                    .map(|m| format!("--build-root-mirror={m}")),
            )
            .collect(),
        ),
        env: Some(vec![EnvVar {
            name: "NODE_NAME".to_string(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "spec.nodeName".to_string(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_string()),
            container_port: i32::from(cfg.metrics_port),
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        // Readiness only (never liveness): a module build may keep the agent busy for minutes
        // and restarting it then would only restart the build.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/metrics".to_string()),
                port: IntOrString::String("metrics".to_string()),
                // The kubelet probes from the host network, as the agent listens: a
                // node-local (loopback) listener is probed on that address, not the node IP.
                host: cfg
                    .metrics_bind_address
                    .is_loopback()
                    .then(|| cfg.metrics_bind_address.to_string()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        resources: Some(cfg.resources.clone().unwrap_or_else(default_resources)),
        // Loading a kernel module needs CAP_SYS_MODULE on the host kernel; privileged also gives
        // the writable /sys needed for runtime module parameters.
        security_context: Some(SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let pull_secrets: Vec<LocalObjectReference> = cfg
        .image_pull_secrets
        .iter()
        .map(|s| LocalObjectReference {
            name: s.name().to_string(),
        })
        .collect();

    let pod_spec = PodSpec {
        containers: vec![container],
        service_account_name: Some(cfg.service_account_name.clone()),
        priority_class_name: cfg.priority_class_name.clone(),
        host_network: Some(true),
        host_pid: Some(false),
        dns_policy: Some("ClusterFirstWithHostNet".to_string()),
        node_selector: Some(node_selector),
        tolerations: Some(cfg.tolerations.clone().unwrap_or_else(default_tolerations)),
        image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
        termination_grace_period_seconds: Some(30),
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    DaemonSet {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some({
                // The operator's own labels win: they identify what it owns.
                let mut labels = cfg.labels.clone();
                labels.extend(object_labels(name));
                labels
            }),
            annotations: (!cfg.annotations.is_empty()).then(|| cfg.annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels()),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::String(AGENT_MAX_UNAVAILABLE.to_string())),
                    // hostNetwork + a fixed metrics port: two agent pods cannot share a node.
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!cfg.pod_annotations.is_empty())
                        .then(|| cfg.pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

/// True when every field set in `desired` has the same value in `live` (arrays element by
/// element). The API server adds defaults to the live object, so equality would always fail;
/// containment is exactly "nobody changed what we own". A field the server omits because it
/// holds its zero value (Go's `omitempty`: false, 0, "", empty list or map) counts as equal to
/// that zero value.
pub fn contains(live: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => contains(lv, dv),
            None => is_zero(dv),
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (l, d) => l == d,
    }
}

fn is_zero(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// True when the live DaemonSet lacks something we set (or is absent): it must be re-applied.
pub fn drifted(live: Option<&DaemonSet>, desired: &DaemonSet) -> bool {
    let Some(live) = live else { return true };
    let (Ok(l), Ok(d)) = (serde_json::to_value(live), serde_json::to_value(desired)) else {
        return true;
    };
    // Compare metadata labels, owners and the spec only: the rest of the live metadata is the
    // server's.
    let pick = |v: &serde_json::Value| {
        serde_json::json!({
            "labels": v.pointer("/metadata/labels").cloned().unwrap_or_default(),
            "ownerReferences": v.pointer("/metadata/ownerReferences").cloned().unwrap_or_default(),
            "spec": v.get("spec").cloned().unwrap_or_default(),
        })
    };
    !contains(&pick(&l), &pick(&d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(extra: &str) -> AgentConfig {
        AgentConfig::parse(
            &format!("image: reg.example/agent:1\n{extra}"),
            Path::new("t.yaml"),
        )
        .expect("valid config")
    }

    fn pod(ds: &DaemonSet) -> &PodSpec {
        ds.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn renders_the_contract_shape() {
        let ds = build(&cfg(""), "toa-node-agent", "toa-system");
        assert_eq!(ds.metadata.name.as_deref(), Some("toa-node-agent"));
        assert_eq!(ds.metadata.namespace.as_deref(), Some("toa-system"));
        let p = pod(&ds);
        assert_eq!(p.host_network, Some(true));
        assert_eq!(p.host_pid, Some(false));
        let sel = p.node_selector.as_ref().expect("selector");
        assert_eq!(sel.get("toa.dev/agent").map(String::as_str), Some("true"));
        assert_eq!(
            sel.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let c = &p.containers[0];
        assert_eq!(c.image.as_deref(), Some("reg.example/agent:1"));
        assert_eq!(
            c.security_context.as_ref().and_then(|s| s.privileged),
            Some(true)
        );
        let env = &c.env.as_ref().expect("env")[0];
        assert_eq!(env.name, "NODE_NAME");
        assert_eq!(
            env.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("spec.nodeName")
        );
        let port = &c.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9101)
        );
        let args = c.args.as_ref().expect("args");
        assert!(args.contains(&"--host-root=/host".to_string()));
        assert!(args.contains(&"--cache-dir=/var/lib/toa-operator/cache".to_string()));
        // Dual-stack by default: IPv6-only clusters probe and scrape the agent too.
        assert!(args.contains(&"--metrics-addr=[::]:9101".to_string()));
        assert!(args.contains(&"--build-timeout=600".to_string()));
        assert!(args.contains(&"--cache-max-age-days=30".to_string()));
        assert!(!args.contains(&"--per-cpu-metrics".to_string()));
        // The eBPF backend's object in the image, the host's cgroup v2 root and bpffs.
        assert!(args.contains(&format!("--ebpf-object={EBPF_OBJECT}")));
        assert!(args.contains(&"--cgroup-root=/sys/fs/cgroup".to_string()));
        assert!(args.contains(&"--bpf-pin-dir=/sys/fs/bpf/toa".to_string()));
        let probe = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
        assert!(probe.is_some_and(|h| h.host.is_none()), "{probe:?}");
        // Default: tolerate every taint.
        let t = p.tolerations.as_ref().expect("tolerations");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].operator.as_deref(), Some("Exists"));
        assert!(t[0].key.is_none() && t[0].effect.is_none());
        assert!(p.priority_class_name.is_none());
        let strategy = ds
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .expect("strategy");
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let ru = strategy.rolling_update.as_ref().expect("rolling update");
        assert_eq!(
            ru.max_unavailable,
            Some(IntOrString::String("10%".to_string()))
        );
        assert_eq!(ru.max_surge, Some(IntOrString::Int(0)));
    }

    #[test]
    fn host_mounts_match_the_contract() {
        let ds = build(&cfg(""), "toa-node-agent", "ns");
        let p = pod(&ds);
        let mounts = p.containers[0].volume_mounts.as_ref().expect("mounts");
        let volumes = p.volumes.as_ref().expect("volumes");
        let find = |mount_path: &str| -> (String, bool) {
            let m = mounts
                .iter()
                .find(|m| m.mount_path == mount_path)
                .unwrap_or_else(|| panic!("no mount at {mount_path}"));
            let v = volumes
                .iter()
                .find(|v| v.name == m.name)
                .and_then(|v| v.host_path.as_ref())
                .expect("hostPath volume");
            (v.path.clone(), m.read_only.unwrap_or(false))
        };
        assert_eq!(find("/host/proc"), ("/proc".into(), true));
        assert_eq!(find("/sys"), ("/sys".into(), false));
        // The eBPF backend: pins on the host's bpffs, attached to the host's cgroup v2 root.
        assert_eq!(find("/sys/fs/bpf"), ("/sys/fs/bpf".into(), false));
        assert_eq!(find("/sys/fs/cgroup"), ("/sys/fs/cgroup".into(), true));
        assert_eq!(find("/host/lib/modules"), ("/lib/modules".into(), true));
        assert_eq!(find("/host/usr/src"), ("/usr/src".into(), true));
        assert_eq!(
            find("/host/usr/lib/modules"),
            ("/usr/lib/modules".into(), true)
        );
        assert_eq!(
            find("/host/etc/os-release"),
            ("/etc/os-release".into(), true)
        );
        // The build root reads the node's apt sources and trusted keys.
        assert_eq!(find("/host/etc/apt"), ("/etc/apt".into(), true));
        assert_eq!(
            find("/host/usr/share/keyrings"),
            ("/usr/share/keyrings".into(), true)
        );
        assert_eq!(
            find("/var/lib/toa-operator"),
            ("/var/lib/toa-operator".into(), false)
        );
        // kbuild's real paths: headers at /usr/src, the host's /usr/lib beside the image's.
        assert_eq!(find("/usr/src"), ("/usr/src".into(), true));
        assert_eq!(find("/host/usr/lib"), ("/usr/lib".into(), true));
        assert!(
            !mounts.iter().any(|m| m.mount_path == "/usr/lib"),
            "never over the image's /usr/lib"
        );
        assert_eq!(mounts.len(), volumes.len() + 1);
    }

    #[test]
    fn config_values_flow_into_the_pod() {
        let c = cfg(r#"imagePullPolicy: Always
imagePullSecrets: [regcred]
serviceAccountName: sa
priorityClassName: system-node-critical
tolerations: [{key: a, operator: Exists, effect: NoSchedule}]
resources: {requests: {cpu: 1}}
nodeSelector: {pool: edge}
hostCachePath: /data/toa/
extraHostPaths: [{name: src, hostPath: /opt/src, mountPath: /host/opt/src}]
metricsPort: 9200
metricsBindAddress: 0.0.0.0
perCpuMetrics: true
buildTimeoutSeconds: 1800
cacheMaxAgeDays: 0
buildRoot: false
buildRootMirror: http://mirror.example/debian
logFormat: json
podLabels: {team: net}
podAnnotations: {a: b}
labels: {team: net}
annotations: {example.com/owner: network}
"#);
        let ds = build(&c, "agent", "ns");
        let p = pod(&ds);
        let ctr = &p.containers[0];
        assert_eq!(ctr.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            p.image_pull_secrets.as_ref().expect("secrets")[0].name,
            "regcred"
        );
        assert_eq!(p.service_account_name.as_deref(), Some("sa"));
        assert_eq!(
            p.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        assert_eq!(
            p.tolerations.as_ref().expect("t")[0].key.as_deref(),
            Some("a")
        );
        assert_eq!(
            ctr.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("cpu")),
            Some(&Quantity("1".into()))
        );
        let sel = p.node_selector.as_ref().expect("sel");
        assert_eq!(sel.len(), 3);
        assert_eq!(sel.get("pool").map(String::as_str), Some("edge"));
        let args = ctr.args.as_ref().expect("args");
        assert!(args.contains(&"--cache-dir=/data/toa/cache".to_string()));
        assert!(args.contains(&"--metrics-addr=0.0.0.0:9200".to_string()));
        assert!(args.contains(&"--per-cpu-metrics".to_string()));
        assert!(args.contains(&"--build-timeout=1800".to_string()));
        assert!(args.contains(&"--cache-max-age-days=0".to_string()));
        assert!(args.contains(&"--build-root=false".to_string()));
        assert!(args.contains(&"--build-root-mirror=http://mirror.example/debian".to_string()));
        assert_eq!(
            ds.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str),
            Some("net")
        );
        assert_eq!(
            ds.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("example.com/owner"))
                .map(String::as_str),
            Some("network")
        );
        assert!(args.contains(&"--log-format=json".to_string()));
        assert_eq!(ctr.ports.as_ref().expect("p")[0].container_port, 9200);
        let tmeta = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .expect("meta");
        let labels = tmeta.labels.as_ref().expect("labels");
        assert_eq!(labels.get("team").map(String::as_str), Some("net"));
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some("agent")
        );
        // The chart's own instance label wins over the default.
        let ds = build(&cfg("podLabels: {app.kubernetes.io/instance: rel, app.kubernetes.io/name: toa-node-agent}\n"), "agent", "ns");
        let labels = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("labels");
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some("rel")
        );
        assert_eq!(
            tmeta
                .annotations
                .as_ref()
                .and_then(|a| a.get("a"))
                .map(String::as_str),
            Some("b")
        );
        assert!(ctr
            .volume_mounts
            .as_ref()
            .expect("m")
            .iter()
            .any(|m| m.mount_path == "/host/opt/src" && m.read_only == Some(true)));
        // Explicit empty tolerations are respected (no tolerate-all).
        let ds = build(&cfg("tolerations: []\n"), "agent", "ns");
        assert_eq!(pod(&ds).tolerations.as_ref().map(Vec::len), Some(0));
    }

    #[test]
    fn node_local_metrics_are_probed_on_loopback() {
        let ds = build(&cfg("metricsBindAddress: 127.0.0.1\n"), "agent", "ns");
        let c = &pod(&ds).containers[0];
        let args = c.args.as_ref().expect("args");
        assert!(args.contains(&"--metrics-addr=127.0.0.1:9101".to_string()));
        let host = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.host.as_deref());
        assert_eq!(host, Some("127.0.0.1"));
    }

    #[test]
    fn selector_labels_are_in_the_pod_template() {
        let ds = build(&cfg(""), "x", "ns");
        let spec = ds.spec.as_ref().expect("spec");
        let sel = spec.selector.match_labels.as_ref().expect("labels");
        let tmpl = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        for (k, v) in sel {
            assert_eq!(tmpl.get(k), Some(v));
        }
    }

    #[test]
    fn drift_detection() {
        let desired = build(&cfg(""), "x", "ns");
        assert!(drifted(None, &desired));
        // The server adds defaults and status: still in sync.
        let mut live = serde_json::to_value(&desired).expect("json");
        live["metadata"]["uid"] = "u1".into();
        live["metadata"]["labels"]["extra"] = "x".into();
        live["spec"]["revisionHistoryLimit"] = 10.into();
        live["spec"]["template"]["spec"]["restartPolicy"] = "Always".into();
        live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
            "/dev/termination-log".into();
        live["status"] = serde_json::json!({"numberReady": 3});
        // ... and drops zero values (omitempty): readOnly: false, hostPID: false.
        live["spec"]["template"]["spec"]
            .as_object_mut()
            .map(|p| p.remove("hostPID"));
        for m in live["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if m["readOnly"] == false {
                m.as_object_mut().map(|o| o.remove("readOnly"));
            }
        }
        let live_ds: DaemonSet = serde_json::from_value(live.clone()).expect("ds");
        assert!(!drifted(Some(&live_ds), &desired));
        // A true flag that disappears is drift.
        let mut edited = live.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["securityContext"]
            .as_object_mut()
            .map(|o| o.remove("privileged"));
        let edited: DaemonSet = serde_json::from_value(edited).expect("ds");
        assert!(drifted(Some(&edited), &desired));
        // Someone edits the image: drift.
        let mut edited = live.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = "other:2".into();
        let edited: DaemonSet = serde_json::from_value(edited).expect("ds");
        assert!(drifted(Some(&edited), &desired));
        // Someone removes a volume: drift.
        let mut edited = live;
        if let Some(v) = edited["spec"]["template"]["spec"]["volumes"].as_array_mut() {
            v.pop();
        }
        let edited: DaemonSet = serde_json::from_value(edited).expect("ds");
        assert!(drifted(Some(&edited), &desired));
    }
}
