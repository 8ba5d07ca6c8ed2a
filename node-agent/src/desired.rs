//! The desired state of the node: a ToaNodeState spec, from a file (standalone mode) or the
//! API server (Kubernetes mode), validated before the agent acts on it.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DesiredState {
    #[default]
    Loaded,
    Unloaded,
}

fn default_ipv4_kinds() -> Vec<u32> {
    vec![200]
}

fn default_nat64_kinds() -> Vec<u32> {
    vec![253]
}

/// Module settings resolved by the operator (ToaNodeState.spec.module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModuleSettings {
    #[serde(default = "default_ipv4_kinds")]
    pub ipv4_option_kinds: Vec<u32>,
    #[serde(default = "default_nat64_kinds")]
    pub nat64_option_kinds: Vec<u32>,
    #[serde(default)]
    pub trusted_sources: Vec<String>,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        Self {
            ipv4_option_kinds: default_ipv4_kinds(),
            nat64_option_kinds: default_nat64_kinds(),
            trusted_sources: Vec::new(),
        }
    }
}

/// ToaNodeState.spec as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DesiredSpec {
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub desired_state: DesiredState,
    #[serde(default)]
    pub module: ModuleSettings,
    #[serde(default)]
    pub replace_foreign_module: bool,
    #[serde(default)]
    pub reload_allowed: bool,
}

/// One desired state as received, with the generation it came from (0 in standalone mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub spec: DesiredSpec,
    pub generation: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("option kind {0} in {1} is out of range: TCP option kinds 2..255 are valid (0 and 1 are EOL/NOP)")]
    KindRange(u32, &'static str),
    #[error("option kind {0} is listed both in ipv4OptionKinds and nat64OptionKinds; a kind is parsed by its length, give each kind one meaning")]
    KindOverlap(u32),
    #[error("{0} must list at least one option kind")]
    NoKinds(&'static str),
    #[error("trustedSources entry {0:?} is not an IPv4/IPv6 address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)")]
    BadCidr(String),
    #[error("desired-state file {path}: {reason} (expected a ToaNodeState, or its spec, as YAML or JSON)")]
    File { path: String, reason: String },
}

/// Validates one CIDR (or bare address) and returns it in canonical text.
pub fn canonical_cidr(text: &str) -> Result<String, SpecError> {
    let bad = || SpecError::BadCidr(text.to_string());
    let (addr, prefix) = match text.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text.trim(), None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match prefix {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => max,
    };
    if prefix > max {
        return Err(bad());
    }
    Ok(format!("{ip}/{prefix}"))
}

impl DesiredSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        let m = &self.module;
        if self.desired_state == DesiredState::Loaded {
            if m.ipv4_option_kinds.is_empty() && m.nat64_option_kinds.is_empty() {
                return Err(SpecError::NoKinds("module.ipv4OptionKinds or module.nat64OptionKinds"));
            }
        }
        for (list, name) in [
            (&m.ipv4_option_kinds, "ipv4OptionKinds"),
            (&m.nat64_option_kinds, "nat64OptionKinds"),
        ] {
            if let Some(k) = list.iter().find(|k| !(2..=255).contains(*k)) {
                return Err(SpecError::KindRange(*k, name));
            }
        }
        if let Some(k) = m
            .ipv4_option_kinds
            .iter()
            .find(|k| m.nat64_option_kinds.contains(k))
        {
            return Err(SpecError::KindOverlap(*k));
        }
        for c in &m.trusted_sources {
            canonical_cidr(c)?;
        }
        Ok(())
    }
}

/// Parses a desired-state document (YAML or JSON): a whole ToaNodeState (`spec:` key) or
/// just its spec.
pub fn parse(text: &str, path: &Path) -> Result<DesiredSpec, SpecError> {
    let err = |reason: String| SpecError::File {
        path: path.display().to_string(),
        reason,
    };
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| err(e.to_string()))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?
    };
    let spec = match value.get("spec") {
        Some(spec) => serde_json::from_value::<DesiredSpec>(spec.clone()),
        None => serde_json::from_value::<DesiredSpec>(value),
    }
    .map_err(|e| err(e.to_string()))?;
    spec.validate()?;
    Ok(spec)
}

/// Reads and parses a desired-state file.
pub fn load_file(path: &Path) -> Result<DesiredSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<DesiredSpec, SpecError> {
        parse(text, Path::new("desired.yaml"))
    }

    #[test]
    fn bare_spec_yaml_with_defaults() {
        let s = p("desiredState: Loaded\n").expect("parse");
        assert_eq!(s.desired_state, DesiredState::Loaded);
        assert_eq!(s.module, ModuleSettings::default());
        assert!(!s.replace_foreign_module && !s.reload_allowed);
    }

    #[test]
    fn whole_object_yaml() {
        let s = p(r#"
apiVersion: toa.dev/v1alpha1
kind: ToaNodeState
metadata:
  name: node-a
spec:
  nodeName: node-a
  policy: default
  desiredState: Unloaded
  module:
    ipv4OptionKinds: [200, 254]
    nat64OptionKinds: [253]
    trustedSources: ["10.0.0.0/8", "2001:db8::/32"]
  replaceForeignModule: true
  reloadAllowed: true
"#)
        .expect("parse");
        assert_eq!(s.node_name, "node-a");
        assert_eq!(s.desired_state, DesiredState::Unloaded);
        assert_eq!(s.module.ipv4_option_kinds, [200, 254]);
        assert_eq!(s.module.trusted_sources.len(), 2);
        assert!(s.replace_foreign_module && s.reload_allowed);
    }

    #[test]
    fn json_too() {
        let s = p(r#"{"spec":{"desiredState":"Loaded","module":{"ipv4OptionKinds":[254]}}}"#)
            .expect("parse");
        assert_eq!(s.module.ipv4_option_kinds, [254]);
        assert_eq!(s.module.nat64_option_kinds, [253]);
    }

    #[test]
    fn bad_values_are_named() {
        let e = p("module:\n  ipv4OptionKinds: [1]\n").expect_err("range");
        assert_eq!(e, SpecError::KindRange(1, "ipv4OptionKinds"));
        let e = p("module:\n  ipv4OptionKinds: [253]\n").expect_err("overlap");
        assert_eq!(e, SpecError::KindOverlap(253));
        let e = p("module:\n  trustedSources: [\"10.0.0.0/33\"]\n").expect_err("cidr");
        assert!(e.to_string().contains("10.0.0.0/33"));
        let e = p("desiredState: Maybe\n").expect_err("state");
        assert!(e.to_string().contains("desired-state file"), "{e}");
        let e = p("desiredStat: Loaded\n").expect_err("typo");
        assert!(e.to_string().contains("desiredStat"), "{e}");
        let e = p("module:\n  ipv4OptionKinds: []\n  nat64OptionKinds: []\n").expect_err("none");
        assert!(matches!(e, SpecError::NoKinds(_)));
    }

    #[test]
    fn cidr_canonical_form() {
        assert_eq!(canonical_cidr("10.0.0.0/8").expect("ok"), "10.0.0.0/8");
        assert_eq!(canonical_cidr("192.0.2.1").expect("ok"), "192.0.2.1/32");
        assert_eq!(canonical_cidr("2001:DB8::/32").expect("ok"), "2001:db8::/32");
        assert!(canonical_cidr("10.0.0/8").is_err());
        assert!(canonical_cidr("::/129").is_err());
        assert!(canonical_cidr("").is_err());
    }

    #[test]
    fn missing_file_is_named() {
        let e = load_file(Path::new("/nonexistent/desired.yaml")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/desired.yaml"));
    }
}
