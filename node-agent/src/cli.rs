//! Command line. Every flag can also be set through the environment variable shown.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the agent image ships the compiled eBPF backend (`ebpf/bpf/toa.bpf.o`).
pub const DEFAULT_EBPF_OBJECT: &str = "/usr/share/toa-node-agent/ebpf/toa.bpf.o";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// toa-node-agent: builds the TOA kernel module for this node's kernel, loads it, keeps it
/// loaded across agent restarts, changes its parameters at runtime, unloads it only when
/// the desired state says Unloaded, and exports its counters to Prometheus.
///
/// Two modes: with --desired FILE the agent runs standalone (no Kubernetes) and writes its
/// status to --status-file; without it, it watches the ToaNodeState named after the node and
/// writes the status there (server-side apply, field manager toa-node-agent) on every change
/// and at least every --heartbeat-interval.
#[derive(Debug, Clone, Parser)]
#[command(name = "toa-node-agent", version)]
pub struct Cli {
    /// Name of this node (= name of its ToaNodeState). Required in Kubernetes mode.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Standalone mode: YAML or JSON file with a ToaNodeState (or just its spec). Polled for
    /// changes; an invalid edit is logged and ignored (the previous desired state stays).
    #[arg(long, env = "TOA_DESIRED", value_name = "FILE")]
    pub desired: Option<PathBuf>,

    /// Standalone mode: where to write the node status as JSON (atomically replaced).
    #[arg(
        long,
        env = "TOA_STATUS_FILE",
        value_name = "FILE",
        requires = "desired"
    )]
    pub status_file: Option<PathBuf>,

    /// Where the host's filesystem is mounted (/etc/os-release, /lib/modules, /usr/src,
    /// /proc are read below it). sysfs is always read at /sys.
    #[arg(long, env = "TOA_HOST_ROOT", default_value = "/", value_name = "DIR")]
    pub host_root: PathBuf,

    /// Directory with the toa module sources (Kbuild/Makefile and .c/.h files).
    #[arg(
        long,
        env = "TOA_MODULE_SRC",
        default_value = "/usr/share/toa-node-agent/kmod",
        value_name = "DIR"
    )]
    pub module_src: PathBuf,

    /// The compiled eBPF backend (ebpf/bpf/toa.bpf.o, built with the agent image; the node
    /// needs no compiler), loaded when the desired backend is EBPF.
    #[arg(long, env = "TOA_EBPF_OBJECT", default_value = DEFAULT_EBPF_OBJECT, value_name = "FILE")]
    pub ebpf_object: PathBuf,

    /// The host's cgroup v2 root, where the eBPF backend attaches (covers every pod and host
    /// process). A path of the agent's own mount namespace (the DaemonSet mounts the host's).
    #[arg(long, env = "TOA_CGROUP_ROOT", default_value = toa_ebpf::CGROUP_ROOT, value_name = "DIR")]
    pub cgroup_root: PathBuf,

    /// Directory on the host's BPF file system for the eBPF backend's pins; an agent restart
    /// adopts what is pinned there. A path of the agent's own mount namespace.
    #[arg(long, env = "TOA_BPF_PIN_DIR", default_value = toa_ebpf::PIN_DIR, value_name = "DIR")]
    pub bpf_pin_dir: PathBuf,

    /// Host directory for built modules (keyed by kernel release, kernel version and module
    /// source digest) and build work directories. Must survive agent restarts.
    #[arg(
        long,
        env = "TOA_AGENT_CACHE_DIR",
        default_value = "/var/lib/toa-operator/cache",
        value_name = "DIR"
    )]
    pub cache_dir: PathBuf,

    /// Listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "TOA_METRICS_ADDR", default_value = "[::]:9101")]
    pub metrics_addr: SocketAddr,

    /// Export the toa counters per CPU (label cpu) instead of summed over CPUs.
    #[arg(long, env = "TOA_PER_CPU_METRICS")]
    pub per_cpu_metrics: bool,

    /// Seconds a module build may take before it is killed (reason BuildTimeout).
    #[arg(
        long,
        env = "TOA_BUILD_TIMEOUT",
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    pub build_timeout: u64,

    /// When the agent image cannot build for the node's kernel (no headers on the node, the
    /// kernel's compiler missing from the image, the headers' kbuild helpers not running in
    /// it), assemble a build root from the node's own distribution (its apt sources and
    /// trusted keys; cached under --cache-dir) and build in it. Off: report HeadersMissing /
    /// CompilerMismatch instead.
    #[arg(
        long,
        env = "TOA_BUILD_ROOT",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub build_root: bool,

    /// The package mirror (http:// or https:// URL) the build root is fetched from instead of
    /// the URIs of the node's apt sources, for air-gapped clusters; the node's suites,
    /// components and signed-by keys are kept.
    #[arg(long, env = "TOA_BUILD_ROOT_MIRROR", value_name = "URL", value_parser = parse_mirror)]
    pub build_root_mirror: Option<String>,

    /// Days a cached module build, or build root, for another kernel release (the node
    /// rebooted into a new kernel) is kept unused before it is removed; 0 keeps them forever.
    /// Those of the running kernel are never removed.
    #[arg(
        long,
        env = "TOA_CACHE_MAX_AGE_DAYS",
        default_value_t = 30,
        value_name = "DAYS"
    )]
    pub cache_max_age_days: u64,

    /// Seconds between status writes when nothing changes (the status is also written on
    /// every change). 300 s = at most 12 heartbeat writes per node per hour.
    #[arg(
        long,
        env = "TOA_HEARTBEAT_INTERVAL",
        default_value_t = 300,
        value_name = "SECONDS"
    )]
    pub heartbeat_interval: u64,

    /// Seconds to keep retrying an unload of a busy module before reporting ModuleBusy
    /// (retries continue with backoff afterwards).
    #[arg(
        long,
        env = "TOA_UNLOAD_TIMEOUT",
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    pub unload_timeout: u64,

    /// Standalone mode: seconds between checks of the --desired file.
    #[arg(
        long,
        env = "TOA_POLL_INTERVAL",
        default_value_t = 2,
        value_name = "SECONDS"
    )]
    pub poll_interval: u64,

    /// Log format: text (human-readable) or json (one JSON object per line).
    #[arg(long, env = "TOA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A mirror URL: http(s), with a host.
fn parse_mirror(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("{s:?} is not an http:// or https:// URL; give the mirror's base URL, e.g. http://mirror.example/debian")
        })?;
    if rest.is_empty() || rest.starts_with('/') || s.contains(char::is_whitespace) {
        return Err(format!(
            "{s:?} names no host; give the mirror's base URL, e.g. http://mirror.example/debian"
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_is_documented() {
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "flag {} has no help",
                arg.get_id()
            );
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = Cli::try_parse_from(["toa-node-agent"]).expect("parse");
        assert_eq!(c.host_root, PathBuf::from("/"));
        assert_eq!(c.metrics_addr.port(), 9101);
        assert_eq!(c.cache_dir, PathBuf::from("/var/lib/toa-operator/cache"));
        assert!(Cli::try_parse_from(["toa-node-agent", "--status-file", "x"]).is_err());
        assert!(c.build_root);
        assert_eq!(c.build_root_mirror, None);
    }

    #[test]
    fn build_root_mirror_must_be_an_http_url() {
        let c = Cli::try_parse_from([
            "toa-node-agent",
            "--build-root-mirror=http://10.0.2.100:8080/debian/",
            "--build-root=false",
        ])
        .expect("parse");
        assert_eq!(
            c.build_root_mirror.as_deref(),
            Some("http://10.0.2.100:8080/debian")
        );
        assert!(!c.build_root);
        for bad in ["ftp://m/debian", "mirror.example", "http://", "http:///x"] {
            let e = Cli::try_parse_from(["toa-node-agent", "--build-root-mirror", bad])
                .expect_err(bad)
                .to_string();
            assert!(e.contains("base URL"), "{bad}: {e}");
        }
    }
}
