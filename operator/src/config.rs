//! The agent configuration file (`--agent-config`): everything the operator needs to render the
//! node-agent DaemonSet. The chart writes it; the operator validates it once at start-up so a
//! typo fails loudly with the field name and the fix instead of producing a broken DaemonSet.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use serde::Deserialize;

/// Default host directory for the agent's build cache (the agent contract's default).
pub const DEFAULT_HOST_CACHE_PATH: &str = "/var/lib/toa-operator";
/// Default agent metrics port (agent contract: container port `metrics` 9101).
pub const DEFAULT_METRICS_PORT: u16 = 9101;
/// Default listen address of the agent's /metrics: `::` listens on IPv6 and (through
/// IPv4-mapped addresses, the Linux default) IPv4, so IPv4-only, IPv6-only and dual-stack
/// clusters all reach it.
pub const DEFAULT_METRICS_BIND_ADDRESS: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
/// Default module build timeout of the agent (its `--build-timeout`).
pub const DEFAULT_BUILD_TIMEOUT_SECONDS: u64 = 600;
/// The agent's own default of `--cache-max-age-days`.
pub const DEFAULT_CACHE_MAX_AGE_DAYS: u64 = 30;

/// Container paths the agent image needs for itself (its compiler, libraries, configuration):
/// an extra host mount at, or above, one of them would hide the image's own files.
pub const IMAGE_SYSTEM_PATHS: [&str; 12] = [
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/libexec",
    "/etc",
    "/dev",
    "/proc",
    "/tmp",
];

/// Label keys the operator owns on the agent pods and nodes; user maps may not override them.
pub(crate) const RESERVED_NODE_SELECTOR_KEYS: [&str; 2] = ["toa.dev/agent", "kubernetes.io/os"];

/// Why the agent config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read agent config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent config {path} is not valid YAML for the expected schema: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("agent config field `{field}`: {problem}; fix: {fix}")]
    Invalid {
        field: String,
        problem: String,
        fix: String,
    },
}

fn invalid(
    field: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// `imagePullPolicy` of the agent container.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Log format handed to the agent (`--log-format`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AgentLogFormat {
    #[default]
    Text,
    Json,
}

impl AgentLogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentLogFormat::Text => "text",
            AgentLogFormat::Json => "json",
        }
    }
}

/// An image pull secret: either a bare name (`- regcred`) or the Kubernetes shape
/// (`- name: regcred`); charts commonly pass either, so both are accepted.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PullSecret {
    Name(String),
    Reference { name: String },
}

impl PullSecret {
    pub fn name(&self) -> &str {
        match self {
            PullSecret::Name(n) | PullSecret::Reference { name: n } => n,
        }
    }
}

/// An additional host directory mounted into the agent (e.g. a distribution's headers tree).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtraHostPath {
    pub name: String,
    pub host_path: String,
    pub mount_path: String,
}

/// The agent config file, as written by the chart.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Agent image reference (required).
    pub image: String,
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    #[serde(default)]
    pub image_pull_secrets: Vec<PullSecret>,
    #[serde(default = "default_service_account")]
    pub service_account_name: String,
    #[serde(default)]
    pub priority_class_name: Option<String>,
    /// `None` (field absent) means tolerate every taint: a node that needs the module must get
    /// an agent even when tainted. An explicit list (even empty) is used as given.
    #[serde(default)]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    /// Extra node selector terms, ANDed with `toa.dev/agent=true` and `kubernetes.io/os=linux`.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default = "default_host_cache_path")]
    pub host_cache_path: String,
    #[serde(default)]
    pub extra_host_paths: Vec<ExtraHostPath>,
    #[serde(default = "default_metrics_port")]
    pub metrics_port: u16,
    /// Address the agent's /metrics listens on (host network): `::` (default, dual-stack),
    /// `0.0.0.0` (IPv4 only, for nodes with IPv6 disabled), or a loopback address to keep the
    /// metrics node-local (nothing outside the node can scrape them then).
    #[serde(default = "default_metrics_bind_address")]
    pub metrics_bind_address: IpAddr,
    /// Export the toa counters per CPU (label `cpu`) instead of summed.
    #[serde(default)]
    pub per_cpu_metrics: bool,
    /// Seconds a module build may take (agent `--build-timeout`).
    #[serde(default = "default_build_timeout_seconds")]
    pub build_timeout_seconds: u64,
    /// Days an unused cached module build (and build root) of another kernel stays on the
    /// node (agent `--cache-max-age-days`); 0 keeps them forever.
    #[serde(default = "default_cache_max_age_days")]
    pub cache_max_age_days: u64,
    /// Build in a root from the node's own distribution when the agent image cannot build for
    /// the node's kernel (agent `--build-root`).
    #[serde(default = "default_build_root")]
    pub build_root: bool,
    /// Mirror (http/https URL) for those build roots instead of the nodes' apt sources, for
    /// air-gapped clusters (agent `--build-root-mirror`); empty: the nodes' own sources.
    #[serde(default)]
    pub build_root_mirror: String,
    #[serde(default)]
    pub log_format: AgentLogFormat,
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,
    /// Labels of the DaemonSet object itself (the chart's commonLabels).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the DaemonSet object itself (the chart's commonAnnotations).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_service_account() -> String {
    "toa-node-agent".to_string()
}

fn default_host_cache_path() -> String {
    DEFAULT_HOST_CACHE_PATH.to_string()
}

fn default_metrics_port() -> u16 {
    DEFAULT_METRICS_PORT
}

fn default_metrics_bind_address() -> IpAddr {
    DEFAULT_METRICS_BIND_ADDRESS
}

fn default_cache_max_age_days() -> u64 {
    DEFAULT_CACHE_MAX_AGE_DAYS
}

fn default_build_root() -> bool {
    true
}

fn default_build_timeout_seconds() -> u64 {
    DEFAULT_BUILD_TIMEOUT_SECONDS
}

impl AgentConfig {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates YAML text; `origin` only names the source in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cfg: AgentConfig = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: non-empty names, absolute paths, no collisions with the
    /// mounts and labels the operator itself relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.image.trim().is_empty() {
            return Err(invalid(
                "image",
                "is empty",
                "set it to the node-agent image, e.g. `image: registry.example/toa-node-agent:0.1.0`",
            ));
        }
        validate_image_reference("image", &self.image)?;
        if !is_dns1123_subdomain(&self.service_account_name) {
            return Err(invalid(
                "serviceAccountName",
                format!(
                    "`{}` is not a valid Kubernetes name",
                    self.service_account_name
                ),
                "use lower-case letters, digits, '-' and '.', at most 253 characters",
            ));
        }
        if let Some(pc) = &self.priority_class_name {
            if !is_dns1123_subdomain(pc) {
                return Err(invalid(
                    "priorityClassName",
                    format!("`{pc}` is not a valid Kubernetes name"),
                    "use an existing PriorityClass name such as `system-node-critical`, or remove the field",
                ));
            }
        }
        for (i, s) in self.image_pull_secrets.iter().enumerate() {
            if !is_dns1123_subdomain(s.name()) {
                return Err(invalid(
                    format!("imagePullSecrets[{i}]"),
                    format!("`{}` is not a valid Secret name", s.name()),
                    "list Secret names, e.g. `- regcred` or `- name: regcred`",
                ));
            }
        }
        if self.metrics_port == 0 {
            return Err(invalid(
                "metricsPort",
                "is 0",
                "use a free host port (the agent runs with hostNetwork), default 9101",
            ));
        }
        let bind = self.metrics_bind_address;
        if !(bind.is_unspecified() || bind.is_loopback()) {
            return Err(invalid(
                "metricsBindAddress",
                format!("`{bind}` is neither a wildcard nor a loopback address (every node has its own addresses)"),
                "use `::` (dual-stack, default), `0.0.0.0` (IPv4 only) or `127.0.0.1`/`::1` (node-local only)",
            ));
        }
        let mirror = self.build_root_mirror.trim();
        if !mirror.is_empty() {
            let rest = mirror
                .strip_prefix("http://")
                .or_else(|| mirror.strip_prefix("https://"));
            if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
                || mirror.contains(char::is_whitespace)
            {
                return Err(invalid(
                    "buildRootMirror",
                    format!("`{mirror}` is not an http:// or https:// URL with a host"),
                    "give the base URL of a mirror of the nodes' distribution, e.g. `http://mirror.example/debian`, or leave it empty to use the nodes' own apt sources",
                ));
            }
        }
        if self.build_timeout_seconds == 0 {
            return Err(invalid(
                "buildTimeoutSeconds",
                "is 0",
                "give module builds time, e.g. 600 (the default); slow nodes need more",
            ));
        }
        validate_host_path("hostCachePath", &self.host_cache_path)?;
        for system in IMAGE_SYSTEM_PATHS {
            if path_contains(&self.host_cache_path, system) {
                return Err(invalid(
                    "hostCachePath",
                    format!(
                        "`{}` would be mounted over the agent image's {system}",
                        self.host_cache_path
                    ),
                    "use a dedicated directory such as /var/lib/toa-operator",
                ));
            }
        }
        for key in RESERVED_NODE_SELECTOR_KEYS {
            if self.node_selector.contains_key(key) {
                return Err(invalid(
                    format!("nodeSelector.{key}"),
                    "is set by the operator itself",
                    format!("remove `{key}` from nodeSelector; the operator always selects toa.dev/agent=true and kubernetes.io/os=linux"),
                ));
            }
        }
        for (key, value) in crate::daemonset::selector_labels() {
            match self.pod_labels.get(&key) {
                Some(v) if *v != value => {
                    return Err(invalid(
                        format!("podLabels.{key}"),
                        format!("`{v}` would break the DaemonSet's pod selector ({key}={value})"),
                        format!("remove `{key}` from podLabels or set it to `{value}`"),
                    ))
                }
                _ => {}
            }
        }
        let owned = crate::daemonset::owned_object_label_keys();
        if let Some(key) = self.labels.keys().find(|k| owned.contains(&k.as_str())) {
            return Err(invalid(
                format!("labels.{key}"),
                "is set by the operator on the DaemonSet it owns",
                format!("remove `{key}` from labels (the chart's commonLabels)"),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut mounts: std::collections::BTreeSet<String> =
            crate::daemonset::builtin_mount_paths(self)
                .into_iter()
                .collect();
        for (i, extra) in self.extra_host_paths.iter().enumerate() {
            let field = format!("extraHostPaths[{i}]");
            if !is_dns1123_label(&extra.name) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("`{}` is not a valid volume name", extra.name),
                    "use lower-case letters, digits and '-', at most 63 characters",
                ));
            }
            if crate::daemonset::builtin_volume_names().contains(&extra.name.as_str())
                || !names.insert(extra.name.clone())
            {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("`{}` is already used by another volume", extra.name),
                    "pick a unique name",
                ));
            }
            validate_host_path(&format!("{field}.hostPath"), &extra.host_path)?;
            validate_host_path(&format!("{field}.mountPath"), &extra.mount_path)?;
            if let Some(taken) = mounts.iter().find(|m| {
                path_contains(m, &extra.mount_path) || path_contains(&extra.mount_path, m)
            }) {
                return Err(invalid(
                    format!("{field}.mountPath"),
                    format!(
                        "`{}` overlaps `{taken}`, already a mount point of the agent",
                        extra.mount_path
                    ),
                    "mount it somewhere else, e.g. under /host/extra/",
                ));
            }
            if let Some(system) = IMAGE_SYSTEM_PATHS
                .iter()
                .find(|p| path_contains(&extra.mount_path, p))
            {
                return Err(invalid(
                    format!("{field}.mountPath"),
                    format!(
                        "`{}` would be mounted over the agent image's {system}",
                        extra.mount_path
                    ),
                    "mount it somewhere else, e.g. under /host/extra/",
                ));
            }
            mounts.insert(extra.mount_path.clone());
        }
        Ok(())
    }
}

/// True when `outer` is `inner` or one of its parent directories (`/a` contains `/a/b`).
pub(crate) fn path_contains(outer: &str, inner: &str) -> bool {
    let outer = outer.trim_end_matches('/');
    let inner = inner.trim_end_matches('/');
    outer.is_empty()
        || inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|r| r.starts_with('/'))
}

/// An OCI image reference as Kubernetes pulls it: `[registry/]path[:tag][@sha256:digest]`.
/// Catches what a values file typically gets wrong: spaces, a tag pasted into the repository
/// as well (`repo:0.1.0:0.1.0`), an empty tag, upper case in the path, a malformed digest.
pub fn validate_image_reference(field: &str, image: &str) -> Result<(), ConfigError> {
    let bad = |problem: String| {
        invalid(
            field,
            problem,
            "write it as registry/path/name:tag or registry/path/name@sha256:<64 hex>, e.g. `ghcr.io/example/toa-node-agent:0.1.0`",
        )
    };
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(format!("`{image}` contains whitespace")));
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(format!("`{image}` has a malformed digest `{d}`")));
        }
    }
    // The tag is whatever follows a ':' in the last path component (a ':' before the last '/'
    // is a registry port).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let last = &name_tag[last_slash..];
    let (repo_last, tag) = match last.split_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (last, None),
    };
    if let Some(t) = tag {
        if t.contains(':') {
            return Err(bad(format!(
                "`{image}` has two tags (a tag in the repository and another one appended?)"
            )));
        }
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(bad(format!("`{image}` has an invalid tag `{t}`")));
        }
    }
    let path = format!("{}{repo_last}", &name_tag[..last_slash]);
    // The first component is a registry host when it has a '.' or ':' or is localhost.
    let components: Vec<&str> = path.split('/').collect();
    let first_is_host = components.len() > 1
        && (components[0].contains(['.', ':']) || components[0] == "localhost");
    let repo_components = if first_is_host {
        &components[1..]
    } else {
        &components[..]
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if let Some(c) = repo_components.iter().find(|c| !component_ok(c)) {
        return Err(bad(format!(
            "`{image}`: repository component `{c}` is not lower-case letters, digits and . _ -"
        )));
    }
    Ok(())
}

fn validate_host_path(field: &str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') {
        return Err(invalid(
            field,
            format!("`{path}` is not an absolute path"),
            "use an absolute path such as /var/lib/toa-operator",
        ));
    }
    if path.trim_end_matches('/').is_empty() {
        return Err(invalid(
            field,
            "is the root directory `/`",
            "use a dedicated directory, never the host's root",
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(invalid(
            field,
            format!("`{path}` contains `..`"),
            "spell the path without parent-directory components",
        ));
    }
    Ok(())
}

/// RFC 1123 label: what Kubernetes requires of volume names.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain as Kubernetes checks it (`IsDNS1123Subdomain`): at most 253 characters
/// matching `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`. Kubernetes puts
/// no 63-character limit on the dot-separated parts, so neither may we (a 100-character
/// ServiceAccount name is valid).
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(part_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("agent.yaml"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("expected an error, parsed {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_the_contract_defaults() {
        let c = parse("image: example/agent:1\n").expect("valid");
        assert_eq!(c.image, "example/agent:1");
        assert_eq!(c.image_pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(c.service_account_name, "toa-node-agent");
        assert_eq!(c.host_cache_path, "/var/lib/toa-operator");
        assert_eq!(c.metrics_port, 9101);
        assert_eq!(c.log_format, AgentLogFormat::Text);
        assert!(c.tolerations.is_none());
        assert!(c.priority_class_name.is_none());
    }

    #[test]
    fn full_config_parses_every_field() {
        let c = parse(
            r#"
image: reg.example/toa-node-agent:0.1.0
imagePullPolicy: Always
imagePullSecrets: [regcred, {name: other}]
serviceAccountName: agent-sa
priorityClassName: system-node-critical
tolerations:
  - key: dedicated
    operator: Equal
    value: lb
    effect: NoSchedule
resources:
  requests: {cpu: 50m, memory: 64Mi}
  limits: {memory: 1Gi}
nodeSelector: {pool: edge}
hostCachePath: /data/toa
extraHostPaths:
  - {name: kernel-src, hostPath: /opt/kernel, mountPath: /host/opt/kernel}
metricsPort: 9200
logFormat: json
podLabels: {team: net}
podAnnotations: {prometheus.io/scrape: "true"}
"#,
        )
        .expect("valid");
        assert_eq!(c.image_pull_policy, PullPolicy::Always);
        let names: Vec<&str> = c.image_pull_secrets.iter().map(PullSecret::name).collect();
        assert_eq!(names, ["regcred", "other"]);
        assert_eq!(c.tolerations.as_ref().map(Vec::len), Some(1));
        assert_eq!(c.metrics_port, 9200);
        assert_eq!(c.log_format, AgentLogFormat::Json);
        assert_eq!(c.extra_host_paths[0].mount_path, "/host/opt/kernel");
        assert_eq!(
            c.node_selector.get("pool").map(String::as_str),
            Some("edge")
        );
    }

    #[test]
    fn missing_image_is_reported() {
        let e = err("metricsPort: 9101\n");
        assert!(e.contains("image"), "{e}");
    }

    #[test]
    fn empty_image_names_field_and_fix() {
        let e = err("image: ''\n");
        assert!(e.contains("field `image`") && e.contains("fix:"), "{e}");
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let e = err("image: a\nimagePullPolicey: Always\n");
        assert!(e.contains("imagePullPolicey"), "{e}");
    }

    #[test]
    fn bad_enum_value_is_rejected() {
        let e = err("image: a\nimagePullPolicy: Sometimes\n");
        assert!(
            e.contains("Sometimes") || e.contains("imagePullPolicy"),
            "{e}"
        );
        let e = err("image: a\nlogFormat: xml\n");
        assert!(e.contains("xml") || e.contains("logFormat"), "{e}");
    }

    #[test]
    fn relative_or_root_cache_path_is_rejected() {
        let e = err("image: a\nhostCachePath: var/lib/x\n");
        assert!(e.contains("hostCachePath") && e.contains("absolute"), "{e}");
        let e = err("image: a\nhostCachePath: /\n");
        assert!(e.contains("hostCachePath") && e.contains("root"), "{e}");
        let e = err("image: a\nhostCachePath: /var/../etc\n");
        assert!(e.contains("hostCachePath") && e.contains(".."), "{e}");
    }

    #[test]
    fn zero_metrics_port_is_rejected() {
        let e = err("image: a\nmetricsPort: 0\n");
        assert!(e.contains("metricsPort"), "{e}");
    }

    #[test]
    fn out_of_range_metrics_port_is_a_parse_error() {
        let e = err("image: a\nmetricsPort: 70000\n");
        assert!(e.contains("agent.yaml"), "{e}");
    }

    #[test]
    fn reserved_node_selector_keys_are_rejected() {
        let e = err("image: a\nnodeSelector: {toa.dev/agent: 'false'}\n");
        assert!(e.contains("nodeSelector.toa.dev/agent"), "{e}");
        let e = err("image: a\nnodeSelector: {kubernetes.io/os: windows}\n");
        assert!(e.contains("nodeSelector.kubernetes.io/os"), "{e}");
    }

    #[test]
    fn pod_labels_may_not_touch_the_selector() {
        let e = err("image: a\npodLabels: {app.kubernetes.io/name: x}\n");
        assert!(e.contains("podLabels.app.kubernetes.io/name"), "{e}");
        // The chart's labels (same values, plus its instance) are fine.
        let ok = parse(
            "image: a\npodLabels: {app.kubernetes.io/name: toa-node-agent, app.kubernetes.io/component: node-agent, app.kubernetes.io/instance: rel}\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn extra_host_paths_are_checked() {
        let e = err("image: a\nextraHostPaths: [{name: Bad_Name, hostPath: /a, mountPath: /b}]\n");
        assert!(e.contains("extraHostPaths[0].name"), "{e}");
        let e = err("image: a\nextraHostPaths: [{name: host-proc, hostPath: /a, mountPath: /b}]\n");
        assert!(e.contains("already used"), "{e}");
        let e = err(
            "image: a\nextraHostPaths: [{name: x, hostPath: /a, mountPath: /b}, {name: x, hostPath: /c, mountPath: /d}]\n",
        );
        assert!(e.contains("extraHostPaths[1].name"), "{e}");
        let e = err("image: a\nextraHostPaths: [{name: x, hostPath: a, mountPath: /b}]\n");
        assert!(e.contains("extraHostPaths[0].hostPath"), "{e}");
        let e = err("image: a\nextraHostPaths: [{name: x, hostPath: /a, mountPath: /host/proc}]\n");
        assert!(
            e.contains("extraHostPaths[0].mountPath") && e.contains("already a mount point"),
            "{e}"
        );
        let e = err(
            "image: a\nextraHostPaths: [{name: x, hostPath: /a, mountPath: /b, readOnly: true}]\n",
        );
        assert!(e.contains("readOnly"), "{e}");
    }

    #[test]
    fn invalid_names_are_rejected() {
        let e = err("image: a\nserviceAccountName: Agent_SA\n");
        assert!(e.contains("serviceAccountName"), "{e}");
        let e = err("image: a\npriorityClassName: 'High Prio'\n");
        assert!(e.contains("priorityClassName"), "{e}");
        let e = err("image: a\nimagePullSecrets: ['Bad Secret']\n");
        assert!(e.contains("imagePullSecrets[0]"), "{e}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let e = AgentConfig::load(Path::new("/nonexistent/agent.yaml"))
            .expect_err("missing file")
            .to_string();
        assert!(e.contains("/nonexistent/agent.yaml"), "{e}");
    }

    /// The agent config the chart renders with every field set (tests/chart/check.sh keeps
    /// tests/fixtures/chart-agent-config.yaml in sync with the chart): chart and operator
    /// cannot drift apart.
    #[test]
    fn the_charts_rendered_agent_config_is_accepted() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/chart-agent-config.yaml"
        ));
        let c = AgentConfig::load(path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.image.is_empty());
        assert!(c.tolerations.is_some());
        assert_eq!(
            c.pod_labels
                .get("app.kubernetes.io/name")
                .map(String::as_str),
            Some("toa-node-agent")
        );
        let ds = crate::daemonset::build(&c, "toa-node-agent", "ns");
        assert!(ds.spec.is_some());
    }

    /// tests/chart/values-cases.yaml is one table for the chart (check.sh renders each case)
    /// and the operator (here): whatever one refuses, the other refuses too, and what one
    /// accepts the other accepts.
    #[test]
    fn values_cases_agree_with_the_chart() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/chart/values-cases.yaml"
        ));
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        let table: serde_json::Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let mut checked = 0;
        for (group, must_fail) in [("invalid", true), ("valid", false)] {
            for case in table[group].as_array().expect("a list of cases") {
                let name = case["name"].as_str().unwrap_or("?");
                let Some(cfg) = case.get("agentConfig") else {
                    continue;
                };
                let mut cfg = cfg.clone();
                if cfg.get("image").is_none() {
                    cfg["image"] = "localhost/toa-node-agent:0.1.0".into();
                }
                let result = serde_json::from_value::<AgentConfig>(cfg)
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.validate().map_err(|e| e.to_string()));
                match (must_fail, result) {
                    (true, Ok(_)) => panic!("{name}: the operator accepts what the chart refuses"),
                    (true, Err(e)) => {
                        for want in case["operator"].as_array().expect("operator: [...]") {
                            let want = want.as_str().unwrap_or_default();
                            assert!(e.contains(want), "{name}: error lacks {want:?}: {e}");
                        }
                    }
                    (false, Err(e)) => {
                        panic!("{name}: the operator refuses what the chart accepts: {e}")
                    }
                    (false, Ok(_)) => {}
                }
                checked += 1;
            }
        }
        assert!(checked >= 25, "only {checked} cases carry an agentConfig");
    }

    /// The chart's install-time checks (templates/_validate.tpl) carry copies of the operator's
    /// mount points, volume names and image paths: they must be the same lists.
    #[test]
    fn chart_lists_match_the_operator() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/toa-operator/templates/_validate.tpl"
        ));
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        let list = |var: &str| -> Vec<String> {
            let line = text
                .lines()
                .find(|l| l.contains(&format!("${var} := list ")))
                .unwrap_or_else(|| panic!("_validate.tpl has no ${var} list"));
            line.split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let cfg = parse("image: a\n").expect("valid");
        let mut mounts = crate::daemonset::builtin_mount_paths(&cfg);
        mounts.retain(|m| m != &cfg.host_cache_path);
        assert_eq!(list("builtinMounts"), mounts);
        assert_eq!(
            list("builtinVolumes"),
            crate::daemonset::builtin_volume_names()
        );
        assert_eq!(list("imageSystemPaths"), IMAGE_SYSTEM_PATHS);
    }

    #[test]
    fn image_references() {
        for good in [
            "a",
            "localhost/toa-node-agent:0.1.0",
            "registry.example:5000/toa/toa-node-agent:0.1.0-custom",
            "ghcr.io/example/agent@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "[::1]:5000/agent:1",
        ] {
            assert!(validate_image_reference("image", good).is_ok(), "{good}");
        }
        for bad in [
            "agent:0.1.0:0.1.0",
            "agent: 1",
            "Agent:1",
            "agent:",
            "agent@sha256:12",
            "agent:-x",
        ] {
            assert!(validate_image_reference("image", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_bind_address_defaults_to_dual_stack() {
        let c = parse("image: a\n").expect("valid");
        assert_eq!(c.metrics_bind_address.to_string(), "::");
        assert_eq!(c.build_timeout_seconds, 600);
        assert_eq!(c.cache_max_age_days, 30);
        assert_eq!(
            parse("image: a\ncacheMaxAgeDays: 0\n")
                .expect("0 keeps the old builds")
                .cache_max_age_days,
            0
        );
        assert!(!c.per_cpu_metrics);
        assert!(c.build_root);
        assert_eq!(c.build_root_mirror, "");
        let m = parse("image: a\nbuildRoot: false\nbuildRootMirror: http://10.0.0.1:8080/debian\n")
            .expect("mirror");
        assert!(!m.build_root);
        assert_eq!(m.build_root_mirror, "http://10.0.0.1:8080/debian");
        for bad in ["mirror.example/debian", "ftp://m/debian", "http://"] {
            let e = err(&format!("image: a\nbuildRootMirror: {bad}\n"));
            assert!(
                e.contains("buildRootMirror") && e.contains("base URL"),
                "{bad}: {e}"
            );
        }
        assert!(parse("image: a\nmetricsBindAddress: 127.0.0.1\n").is_ok());
        let e = err("image: a\nmetricsBindAddress: 10.1.2.3\n");
        assert!(e.contains("metricsBindAddress"), "{e}");
    }

    #[test]
    fn long_service_account_names_are_valid() {
        // Kubernetes limits a subdomain to 253 characters, not its parts to 63.
        let name = "a".repeat(100);
        assert!(parse(&format!("image: a\nserviceAccountName: {name}\n")).is_ok());
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn dns_name_rules() {
        assert!(is_dns1123_label("host-proc"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a-"));
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("system-node-critical"));
        assert!(is_dns1123_subdomain("a.b"));
        assert!(!is_dns1123_subdomain("a..b"));
    }
}
