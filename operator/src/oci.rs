//! The agent DaemonSet's container as an OCI runtime config (`config.json` for crun or runc),
//! the way a kubelet and its container runtime would run it on a node: the image's entrypoint
//! with the container's args, the pod's environment (the downward API `spec.nodeName` resolved
//! to a node name), the hostPath volumes as bind mounts at their mount paths, a privileged
//! security context as all capabilities with no seccomp, masked or read-only paths, and
//! `hostNetwork` as the host's network (and UTS) namespace.
//!
//! The guest suites (`tests/vm/agent.sh`) run the real agent image root under crun with this
//! config, generated from [`crate::daemonset::build`], so a change of the pod spec changes
//! what the tests run (`cargo run -p toa-operator --example agent-oci-config`).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{json, Value};

/// What the pod spec does not say and the runtime config needs.
#[derive(Clone, Debug, Default)]
pub struct OciOptions {
    /// Path of the image's root filesystem.
    pub rootfs: String,
    /// The image's entrypoint (the Containerfile's ENTRYPOINT).
    pub entrypoint: Vec<String>,
    /// The image's environment (its PATH); the pod's env comes after it.
    pub image_env: Vec<String>,
    /// The node the pod runs on (the downward API's `spec.nodeName`).
    pub node_name: String,
    /// Arguments appended after the container's own (test harness additions).
    pub extra_args: Vec<String>,
    /// `NAME=VALUE` entries appended to the environment (test harness additions).
    pub extra_env: Vec<String>,
    /// Extra bind mounts (host path, container path, read-only), after the pod's.
    pub extra_binds: Vec<(String, String, bool)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OciError {
    #[error("the DaemonSet has no pod spec")]
    NoPodSpec,
    #[error("the pod spec has no container named {0}")]
    NoContainer(String),
    #[error("volume mount {mount} names volume {volume}, which the pod spec does not define")]
    UnknownVolume { mount: String, volume: String },
    #[error("volume {0} is not a hostPath volume: only hostPath volumes map to bind mounts")]
    NotHostPath(String),
    #[error("env {name}: only values and the downward API field spec.nodeName are supported, not {what}")]
    UnsupportedEnv { name: String, what: String },
}

/// Every capability a privileged container gets (Linux 5.10 .. 6.x know all of these).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn pod_spec(ds: &DaemonSet) -> Result<&PodSpec, OciError> {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or(OciError::NoPodSpec)
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> Result<&'a Container, OciError> {
    pod.containers
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| OciError::NoContainer(name.to_string()))
}

fn bind(source: &str, destination: &str, read_only: bool) -> Value {
    let mut options = vec!["rbind", "rprivate"];
    if read_only {
        options.push("ro");
    }
    json!({ "type": "bind", "source": source, "destination": destination, "options": options })
}

/// The OCI runtime config of the container `container_name` of the DaemonSet `ds`.
/// The annotation `toa.dev/directory-or-create` lists (one per line) the hostPath sources of
/// type `DirectoryOrCreate`, which the kubelet creates before starting the container.
pub fn runtime_config(
    ds: &DaemonSet,
    container_name: &str,
    opts: &OciOptions,
) -> Result<Value, OciError> {
    let pod = pod_spec(ds)?;
    let c = container(pod, container_name)?;

    let mut args = opts.entrypoint.clone();
    args.extend(c.command.iter().flatten().cloned());
    args.extend(c.args.iter().flatten().cloned());
    args.extend(opts.extra_args.iter().cloned());

    let mut env = opts.image_env.clone();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), None) => v.clone(),
            (None, None) => String::new(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("spec.nodeName") => opts.node_name.clone(),
                other => {
                    return Err(OciError::UnsupportedEnv {
                        name: e.name.clone(),
                        what: other
                            .map_or("a non-field source".to_string(), |p| format!("field {p}")),
                    })
                }
            },
            (Some(_), Some(_)) => {
                return Err(OciError::UnsupportedEnv {
                    name: e.name.clone(),
                    what: "both value and valueFrom".to_string(),
                })
            }
        };
        env.push(format!("{}={value}", e.name));
    }
    env.extend(opts.extra_env.iter().cloned());

    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let uid = sc.and_then(|s| s.run_as_user).unwrap_or(0);
    let caps: Vec<&str> = if privileged {
        ALL_CAPABILITIES.to_vec()
    } else {
        // The container runtimes' default set.
        vec![
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ]
    };

    // What every container gets, then the pod's volumes in order (a hostPath /sys replaces
    // the runtime's sysfs, as on a node).
    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": if privileged { vec!["nosuid", "noexec", "nodev"] } else { vec!["nosuid", "noexec", "nodev", "ro"] } }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
    ];
    if privileged {
        // A privileged container sees the host's devices (/dev/net/tun for the self-test).
        mounts.insert(1, bind("/dev", "/dev", false));
    } else {
        mounts.insert(
            1,
            json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        );
    }
    let mut create = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .ok_or_else(|| OciError::UnknownVolume {
                mount: m.mount_path.clone(),
                volume: m.name.clone(),
            })?;
        let host = volume
            .host_path
            .as_ref()
            .ok_or_else(|| OciError::NotHostPath(volume.name.clone()))?;
        if host.type_.as_deref() == Some("DirectoryOrCreate") && !create.contains(&host.path) {
            create.push(host.path.clone());
        }
        mounts.push(bind(
            &host.path,
            &m.mount_path,
            m.read_only.unwrap_or(false),
        ));
    }
    for (source, destination, read_only) in &opts.extra_binds {
        mounts.push(bind(source, destination, *read_only));
    }

    let mut namespaces = vec![json!({ "type": "mount" }), json!({ "type": "ipc" })];
    if !pod.host_pid.unwrap_or(false) {
        namespaces.push(json!({ "type": "pid" }));
    }
    if !pod.host_network.unwrap_or(false) {
        namespaces.push(json!({ "type": "network" }));
        namespaces.push(json!({ "type": "uts" }));
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": { "devices": [ { "allow": privileged, "access": "rwm" } ] },
    });
    if !privileged {
        linux["maskedPaths"] = json!([
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/sys/firmware"
        ]);
        linux["readonlyPaths"] =
            json!(["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"]);
    }

    let host_network = pod.host_network.unwrap_or(false);
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": 0 },
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": !privileged,
        },
        "root": { "path": opts.rootfs, "readonly": false },
        "mounts": mounts,
        "linux": linux,
        "annotations": {
            "io.kubernetes.container.name": c.name,
            "toa.dev/directory-or-create": create.join("\n"),
        },
    });
    // The hostname is the pod's only in a UTS namespace of its own (not with hostNetwork).
    if !host_network {
        config["hostname"] = json!(opts.node_name);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use crate::daemonset::{build, CONTAINER_NAME};
    use std::path::Path;

    fn config(extra: &str) -> Value {
        let cfg = AgentConfig::parse(
            &format!("image: reg.example/agent:1\n{extra}"),
            Path::new("t.yaml"),
        )
        .expect("valid config");
        let ds = build(&cfg, "toa-node-agent", "toa-system");
        let opts = OciOptions {
            rootfs: "/image".into(),
            entrypoint: vec!["/usr/bin/toa-node-agent".into()],
            image_env: vec!["PATH=/usr/bin".into()],
            node_name: "node-a".into(),
            extra_args: vec!["--poll-interval=1".into()],
            extra_env: vec!["KCFLAGS=-DX".into()],
            extra_binds: vec![("/etc/toa".into(), "/etc/toa".into(), true)],
        };
        runtime_config(&ds, CONTAINER_NAME, &opts).expect("config")
    }

    fn mount<'a>(c: &'a Value, destination: &str) -> &'a Value {
        c["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .rev()
            .find(|m| m["destination"] == destination)
            .unwrap_or_else(|| panic!("no mount at {destination}: {c}"))
    }

    #[test]
    fn the_pod_spec_becomes_the_runtime_config() {
        let c = config("hostCachePath: /var/lib/toa-x\n");
        let args: Vec<&str> = c["process"]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(args[0], "/usr/bin/toa-node-agent");
        assert!(args.contains(&"--host-root=/host"), "{args:?}");
        assert!(
            args.contains(&"--cache-dir=/var/lib/toa-x/cache"),
            "{args:?}"
        );
        assert_eq!(args.last(), Some(&"--poll-interval=1"));
        let env = c["process"]["env"].as_array().expect("env");
        assert!(env.contains(&json!("NODE_NAME=node-a")), "{env:?}");
        assert_eq!(env.last(), Some(&json!("KCFLAGS=-DX")));
        // Privileged: every capability (CAP_SYS_MODULE loads the module), no masked paths.
        let caps = c["process"]["capabilities"]["effective"]
            .as_array()
            .expect("caps");
        assert!(caps.contains(&json!("CAP_SYS_MODULE")));
        assert_eq!(caps.len(), ALL_CAPABILITIES.len());
        assert!(c["linux"].get("maskedPaths").is_none());
        // hostNetwork: no network namespace; hostPID false: a pid namespace.
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert!(!ns.contains(&"network") && ns.contains(&"pid"), "{ns:?}");
        assert!(
            c.get("hostname").is_none(),
            "no UTS namespace of its own: {c}"
        );
        // The hostPath volumes, where the pod mounts them.
        assert_eq!(mount(&c, "/usr/src")["source"], "/usr/src");
        assert!(mount(&c, "/usr/src")["options"]
            .as_array()
            .expect("options")
            .contains(&json!("ro")));
        assert_eq!(mount(&c, "/host/usr/lib")["source"], "/usr/lib");
        assert_eq!(mount(&c, "/sys")["source"], "/sys");
        assert_eq!(mount(&c, "/var/lib/toa-x")["source"], "/var/lib/toa-x");
        assert_eq!(mount(&c, "/etc/toa")["source"], "/etc/toa");
        assert_eq!(
            c["annotations"]["toa.dev/directory-or-create"],
            "/var/lib/toa-x"
        );
    }

    #[test]
    fn a_missing_container_is_named() {
        let cfg = AgentConfig::parse("image: a:1\n", Path::new("t.yaml")).expect("valid");
        let ds = build(&cfg, "n", "ns");
        let err = runtime_config(&ds, "other", &OciOptions::default()).expect_err("no such");
        assert_eq!(err, OciError::NoContainer("other".into()));
    }
}
