//! The checked-in CRD YAML matches the Rust types, is structural, its CEL
//! rules compile, the examples are accepted, and the broken examples are
//! rejected with the message written in their first line.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::openapi;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// openAPIV3Schema of the checked-in CRD for `kind`.
fn schema_for(kind: &str) -> Value {
    let file = match kind {
        "ToaPolicy" => "toapolicies.yaml",
        "ToaNodeState" => "toanodestates.yaml",
        other => panic!("no CRD for kind {other}"),
    };
    let crd: Value = serde_yaml_ng::from_str(&read(&crate_dir().join(file)))
        .unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every error the apiserver would give for creating (old = None) or
/// updating `object`: schema errors first, then CEL rule failures.
fn admission_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    let kind = object["kind"].as_str().expect("object has a kind");
    assert_eq!(object["apiVersion"], "toa.dev/v1alpha1", "apiVersion");
    let schema = schema_for(kind);
    // The apiserver defaults before it validates.
    let defaulted = kube_cel::apply_defaults(&schema, object);
    let mut body = defaulted.clone();
    if let Some(map) = body.as_object_mut() {
        // metadata, apiVersion and kind are validated by the apiserver itself.
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
    }
    let mut errors = Vec::new();
    openapi::validate(&schema, &body, "", &mut errors);
    if errors.is_empty() {
        if let Err(cel_errors) = kube_cel::Validator::new().validate(&schema, object, old) {
            for e in cel_errors.into_vec() {
                errors.push(format!(
                    "{}: Invalid value: \"object\": {}",
                    e.field_path, e.message
                ));
            }
        }
    }
    errors
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn parse(path: &Path) -> Value {
    serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

#[test]
fn checked_in_yaml_matches_types() {
    for f in toa_crds::crd_files().expect("CRDs render") {
        let path = crate_dir().join(f.file_name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == f.yaml,
            "crds/{} differs from the Rust types: run `cargo run -p toa-crds --bin crdgen` and commit the result",
            f.file_name
        );
    }
}

#[test]
fn schemas_are_structural() {
    for kind in ["ToaPolicy", "ToaNodeState"] {
        let mut problems = Vec::new();
        openapi::check_structural(&schema_for(kind), kind, &mut problems);
        assert!(
            problems.is_empty(),
            "{kind} schema problems:\n{}",
            problems.join("\n")
        );
    }
}

/// Collects every `format` that kube-apiserver does not recognise (it warns
/// `unrecognized format "uint8"` on each CRD apply): integers take int32/int64,
/// numbers float/double (apiextensions-apiserver `GetUnrecognizedFormats`).
fn unrecognized_formats(schema: &Value, path: &str, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(format) = map.get("format").and_then(Value::as_str) {
                let known = match map.get("type").and_then(Value::as_str) {
                    Some("integer") => ["int32", "int64"].contains(&format),
                    Some("number") => ["float", "double"].contains(&format),
                    _ => [
                        "date-time",
                        "date",
                        "byte",
                        "duration",
                        "uuid",
                        "cidr",
                        "ipv4",
                        "ipv6",
                    ]
                    .contains(&format),
                };
                if !known {
                    out.push(format!("{path}: format {format:?}"));
                }
            }
            for (k, v) in map {
                unrecognized_formats(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                unrecognized_formats(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_format_is_one_the_apiserver_recognises() {
    for kind in ["ToaPolicy", "ToaNodeState"] {
        let mut problems = Vec::new();
        unrecognized_formats(&schema_for(kind), kind, &mut problems);
        assert!(
            problems.is_empty(),
            "{kind}: the apiserver warns about these formats:\n{}",
            problems.join("\n")
        );
    }
}

#[test]
fn cel_rules_compile_and_stay_within_cost_budget() {
    for kind in ["ToaPolicy", "ToaNodeState"] {
        let schema = schema_for(kind);
        let compiled = kube_cel::compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{kind}: CEL rules do not compile: {:?}",
            compiled.compilation_errors()
        );
        let mut rules = Vec::new();
        collect_rules(&schema, &mut rules);
        assert!(!rules.is_empty(), "{kind} has no CEL rules");
        for rule in rules {
            let warnings = kube_cel::estimate_rule_cost(&rule, &compiled);
            let costly: Vec<_> = warnings
                .iter()
                .filter(|w| matches!(w.kind, kube_cel::WarningKind::CostExceeded))
                .collect();
            assert!(
                costly.is_empty(),
                "{kind}: rule {rule:?} may exceed the apiserver cost budget: {costly:?}"
            );
        }
    }
}

fn collect_rules(schema: &Value, out: &mut Vec<String>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        out.extend(
            rules
                .iter()
                .filter_map(|r| r["rule"].as_str().map(String::from)),
        );
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        props.values().for_each(|p| collect_rules(p, out));
    }
    if let Some(items) = schema.get("items") {
        collect_rules(items, out);
    }
}

#[test]
fn examples_are_accepted() {
    let files = yaml_files(&crate_dir().join("examples"));
    assert!(
        files.len() >= 5,
        "expected at least 5 examples, found {}",
        files.len()
    );
    for path in files {
        let obj = parse(&path);
        let errors = admission_errors(&obj, None);
        assert!(
            errors.is_empty(),
            "{} is rejected:\n{}",
            path.display(),
            errors.join("\n")
        );
        // The Rust types read it and agree it is valid.
        match obj["kind"].as_str() {
            Some("ToaPolicy") => {
                let p: toa_crds::ToaPolicy = serde_json::from_value(obj.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                p.spec
                    .module
                    .validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Some("ToaNodeState") => {
                let s: toa_crds::ToaNodeState = serde_json::from_value(obj.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                s.spec
                    .module
                    .validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
    }
}

#[test]
fn broken_examples_are_rejected_with_their_message() {
    let files = yaml_files(&crate_dir().join("examples/invalid"));
    assert!(
        files.len() >= 10,
        "expected at least 10 broken examples, found {}",
        files.len()
    );
    for path in files {
        let text = read(&path);
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!("{}: first line must be `# expect: MESSAGE`", path.display())
            });
        let errors = admission_errors(&parse(&path), None);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{}: expected an error containing {expected:?}, got {errors:?}",
            path.display()
        );
    }
}

fn policy_with_module(module: Value) -> Value {
    json!({"apiVersion": "toa.dev/v1alpha1", "kind": "ToaPolicy", "metadata": {"name": "p"}, "spec": {"module": module}})
}

#[test]
fn cel_and_rust_agree_on_every_option_kind() {
    for kind in 0..=255u8 {
        let obj = policy_with_module(
            json!({"ipv4OptionKinds": [kind], "nat64OptionKinds": [if kind == 253 { 254 } else { 253 }]}),
        );
        let cel_ok = admission_errors(&obj, None).is_empty();
        let settings = toa_crds::ModuleSettings {
            ipv4_option_kinds: vec![kind],
            nat64_option_kinds: vec![if kind == 253 { 254 } else { 253 }],
            trusted_sources: vec![],
            ..Default::default()
        };
        assert_eq!(
            cel_ok,
            settings.validate().is_ok(),
            "kind {kind}: apiserver and Rust disagree"
        );
        assert_eq!(
            cel_ok,
            kind >= 2 && !toa_crds::module::is_reserved_option_kind(kind),
            "kind {kind}"
        );
    }
}

#[test]
fn cel_and_rust_agree_on_cidrs() {
    let cases = [
        ("10.0.0.0/8", true),
        ("0.0.0.0/0", true),
        ("192.0.2.10/32", true),
        ("100.64.0.0/10", true),
        ("2001:db8::/32", true),
        ("fd00::1/128", true),
        ("::/0", true),
        ("10.0.0.1/8", false),
        ("2001:db8::1/32", false),
        ("10.0.0.0", false),
        ("10.0.0.0/33", false),
        ("10.0.0/8", false),
        ("fd00::/129", false),
        ("example.com/8", false),
        ("", false),
        // Not canonical: the rule compares the text (Kubernetes 1.31 refuses a CRD whose rule
        // compares two CIDR values).
        ("2001:DB8::/32", false),
        ("2001:0db8::/32", false),
        ("10.0.0.0/08", false),
    ];
    for (cidr, valid) in cases {
        let obj = policy_with_module(json!({"trustedSources": [cidr]}));
        let errors = admission_errors(&obj, None);
        assert_eq!(
            errors.is_empty(),
            valid,
            "{cidr:?}: apiserver says {errors:?}"
        );
        let settings = toa_crds::ModuleSettings {
            trusted_sources: vec![cidr.to_string()],
            ..Default::default()
        };
        assert_eq!(
            settings.validate().is_ok(),
            valid,
            "{cidr:?}: Rust says {:?}",
            settings.validate()
        );
    }
}

#[test]
fn node_name_is_immutable() {
    let state = |node: &str, policy: &str| {
        json!({"apiVersion": "toa.dev/v1alpha1", "kind": "ToaNodeState", "metadata": {"name": "worker-1"},
               "spec": {"nodeName": node, "policy": policy, "desiredState": "Loaded"}})
    };
    let old = state("worker-1", "a");
    // Changing the policy is fine, changing the node is not.
    assert!(admission_errors(&state("worker-1", "b"), Some(&old)).is_empty());
    let errors = admission_errors(&state("worker-2", "a"), Some(&old));
    assert!(
        errors.iter().any(|e| e.contains("nodeName is immutable")),
        "{errors:?}"
    );
}

#[test]
fn defaults_match_the_contract() {
    let obj = json!({"apiVersion": "toa.dev/v1alpha1", "kind": "ToaPolicy", "metadata": {"name": "p"}, "spec": {}});
    let defaulted = kube_cel::apply_defaults(&schema_for("ToaPolicy"), &obj);
    let spec = &defaulted["spec"];
    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["module"]["ipv4OptionKinds"], json!([200]));
    assert_eq!(spec["module"]["nat64OptionKinds"], json!([253]));
    assert_eq!(spec["module"]["trustedSources"], json!([]));
    assert_eq!(spec["lifecycle"]["onDelete"], "Unload");
    assert_eq!(spec["lifecycle"]["replaceForeignModule"], false);
    assert_eq!(spec["lifecycle"]["unloadTimeoutSeconds"], 600);
    assert_eq!(spec["rollout"]["maxUnavailable"], 1);
    assert_eq!(spec["nodeSelector"], json!({}));
    // The Rust defaults say the same.
    let typed: toa_crds::ToaPolicySpec =
        serde_json::from_value(json!({})).expect("empty spec parses");
    assert_eq!(serde_json::to_value(&typed).expect("serializes"), *spec);
}

#[test]
fn crd_metadata_matches_the_contract() {
    use kube::CustomResourceExt;
    for (crd, short, columns) in [
        (
            toa_crds::ToaPolicy::crd(),
            "toap",
            vec![
                "Selected",
                "Loaded",
                "Failed",
                "Conflicting",
                "Ready",
                "Reason",
                "Stale",
                "Backend",
                "Age",
            ],
        ),
        (
            toa_crds::ToaNodeState::crd(),
            "toans",
            vec![
                "Policy", "Phase", "Reason", "Kernel", "Backend", "Module", "Age",
            ],
        ),
    ] {
        assert_eq!(crd.spec.group, "toa.dev");
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["toa".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "status subresource"
        );
        let names: Vec<String> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(names, columns);
        // Only `kubectl get -o wide` shows STALE and the policy's BACKEND: the default
        // columns stay as documented.
        for c in v.additional_printer_columns.iter().flatten() {
            let wide_only = c.name == "Stale" || (short == "toap" && c.name == "Backend");
            assert_eq!(c.priority.unwrap_or(0) == 1, wide_only, "{}", c.name);
        }
    }
}
