//! The desired state of the node: a ToaNodeState spec, from a file (standalone mode) or the
//! API server (Kubernetes mode), validated with the same rules as the CRD before the agent
//! acts on it.

use serde::{Deserialize, Serialize};
use std::path::Path;
pub use toa_crds::{Backend, BackendChoice, DesiredState, ModuleSettings};

/// ToaNodeState.spec as the agent reads it. Unlike the CRD, nodeName and policy may be left
/// out of a standalone file (there is no operator and no node object to match).
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
    /// Module (default), EBPF or Auto.
    #[serde(default)]
    pub backend: BackendChoice,
}

impl From<&toa_crds::ToaNodeStateSpec> for DesiredSpec {
    fn from(s: &toa_crds::ToaNodeStateSpec) -> Self {
        Self {
            node_name: s.node_name.clone(),
            policy: s.policy.clone(),
            desired_state: s.desired_state,
            module: s.module.clone(),
            replace_foreign_module: s.replace_foreign_module,
            reload_allowed: s.reload_allowed,
            backend: s.backend,
        }
    }
}

/// One desired state as received, with the generation it came from (standalone mode counts
/// the file's valid versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub spec: DesiredSpec,
    pub generation: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("module settings: {0}")]
    Settings(#[from] toa_crds::SettingsError),
    #[error("desired-state file {path}: {reason} (expected a ToaNodeState, or its spec, as YAML or JSON)")]
    File { path: String, reason: String },
}

impl DesiredSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        // Unloaded ignores the settings, but a broken file is still worth refusing early.
        self.module.validate()?;
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
    if !value.is_object() {
        return Err(err("the document is not a mapping".into()));
    }
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
        assert_eq!(s.module.ipv4_option_kinds, [200]);
        assert!(!s.replace_foreign_module && !s.reload_allowed);
        assert_eq!(s.backend, BackendChoice::Module);
    }

    #[test]
    fn backend_is_read() {
        let s = p("desiredState: Loaded\nbackend: EBPF\n").expect("parse");
        assert_eq!(s.backend, BackendChoice::Ebpf);
        let s = p(r#"{"spec":{"desiredState":"Loaded","backend":"Module"}}"#).expect("parse");
        assert_eq!(s.backend, BackendChoice::Module);
        let e = p("backend: ebpf\n").expect_err("case matters");
        assert!(e.to_string().contains("EBPF"), "{e}");
        let s = p("desiredState: Loaded\nbackend: Auto\n").expect("parse");
        assert_eq!(s.backend, BackendChoice::Auto);
        let e = p("backend: Automatic\n").expect_err("unknown");
        assert!(e.to_string().contains("desired-state file"), "{e}");
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
    fn crd_rules_apply_to_files() {
        let e = p("module:\n  ipv4OptionKinds: [1]\n").expect_err("reserved");
        assert!(e.to_string().contains("standard TCP option"), "{e}");
        // One kind in both families is valid (told apart by length); both empty is not.
        let s = p("module:\n  ipv4OptionKinds: [254]\n  nat64OptionKinds: [254]\n")
            .expect("254 for both");
        assert_eq!(s.module.nat64_option_kinds, [254]);
        let e =
            p("module:\n  ipv4OptionKinds: []\n  nat64OptionKinds: []\n").expect_err("no kinds");
        assert!(e.to_string().contains("both empty"), "{e}");
        let e = p("module:\n  trustedSources: [\"10.0.0.1/8\"]\n").expect_err("host bits");
        assert!(e.to_string().contains("10.0.0.1/8"), "{e}");
        let e = p("module:\n  ipv4OptionKinds: [300]\n").expect_err("u8");
        assert!(e.to_string().contains("desired-state file"), "{e}");
    }

    #[test]
    fn bad_documents_are_named() {
        let e = p("desiredState: Maybe\n").expect_err("state");
        assert!(e.to_string().contains("desired-state file"), "{e}");
        let e = p("desiredStat: Loaded\n").expect_err("typo");
        assert!(e.to_string().contains("desiredStat"), "{e}");
        let e = p("- a\n- b\n").expect_err("list");
        assert!(e.to_string().contains("not a mapping"), "{e}");
    }

    #[test]
    fn converts_the_crd_spec() {
        let crd = toa_crds::ToaNodeStateSpec {
            node_name: "n1".into(),
            policy: "p".into(),
            desired_state: DesiredState::Unloaded,
            module: ModuleSettings::default(),
            replace_foreign_module: true,
            reload_allowed: false,
            backend: BackendChoice::Ebpf,
        };
        let d = DesiredSpec::from(&crd);
        assert_eq!(d.backend, BackendChoice::Ebpf);
        assert_eq!(d.node_name, "n1");
        assert_eq!(d.desired_state, DesiredState::Unloaded);
        assert!(d.replace_foreign_module);
    }

    #[test]
    fn missing_file_is_named() {
        let e = load_file(Path::new("/nonexistent/desired.yaml")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/desired.yaml"));
    }
}
