//! Rendering of the CRD YAML files (used by `crdgen` and the drift test).

use kube::CustomResourceExt;

use crate::{ToaNodeState, ToaPolicy};

/// Failure to render a CRD.
#[derive(Debug, thiserror::Error)]
#[error("cannot render CRD {file} as YAML: {source}")]
pub struct YamlError {
    file: &'static str,
    #[source]
    source: serde_yaml_ng::Error,
}

/// One generated CRD file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdFile {
    /// File name inside crds/.
    pub file_name: &'static str,
    /// Full YAML text.
    pub yaml: String,
}

const HEADER: &str =
    "# Generated from the Rust types in crds/src by `cargo run -p toa-crds --bin crdgen`. Do not edit.\n";

fn render<K: CustomResourceExt>(file_name: &'static str) -> Result<CrdFile, YamlError> {
    let body = serde_yaml_ng::to_string(&K::crd()).map_err(|source| YamlError {
        file: file_name,
        source,
    })?;
    Ok(CrdFile {
        file_name,
        yaml: format!("{HEADER}{body}"),
    })
}

/// Both CRDs, in a fixed order.
pub fn crd_files() -> Result<Vec<CrdFile>, YamlError> {
    Ok(vec![
        render::<ToaPolicy>("toapolicies.yaml")?,
        render::<ToaNodeState>("toanodestates.yaml")?,
    ])
}
