//! The agent configuration file (`--agent-config`): everything the operator needs to render the
//! node-agent DaemonSet. The chart writes it; the operator validates it once at start-up so a
//! typo fails loudly with the field name and the fix instead of producing a broken DaemonSet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use serde::Deserialize;

/// Default host directory for the agent's build cache (the agent contract's default).
pub const DEFAULT_HOST_CACHE_PATH: &str = "/var/lib/toa-operator";
/// Default agent metrics port (agent contract: container port `metrics` 9101).
pub const DEFAULT_METRICS_PORT: u16 = 9101;

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
    #[serde(default)]
    pub log_format: AgentLogFormat,
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,
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
        if self.image.chars().any(char::is_whitespace) {
            return Err(invalid(
                "image",
                format!("`{}` contains whitespace", self.image),
                "use a plain image reference without spaces",
            ));
        }
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
        validate_host_path("hostCachePath", &self.host_cache_path)?;
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
            if !mounts.insert(extra.mount_path.clone()) {
                return Err(invalid(
                    format!("{field}.mountPath"),
                    format!(
                        "`{}` is already a mount point of the agent",
                        extra.mount_path
                    ),
                    "mount it somewhere else, e.g. under /host/extra/",
                ));
            }
        }
        Ok(())
    }
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

/// RFC 1123 subdomain: what Kubernetes requires of most object names.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
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
