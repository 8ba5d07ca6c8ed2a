//! Schema adjustments that make schemars' output what a Kubernetes apiserver accepts silently.

use schemars::transform::transform_subschemas;
use schemars::Schema;

/// Integer formats the apiserver recognises. schemars names Rust's integer widths (`uint8`,
/// `uint16`, `uint32`, ...): the apiserver does not know those and prints
/// `Warning: unrecognized format "uint8"` on every CRD apply. The bounds of such a field are
/// already in its `minimum`/`maximum`, so the format carries nothing: it is dropped.
pub const KUBERNETES_INTEGER_FORMATS: [&str; 2] = ["int32", "int64"];

/// schemars transform (`#[schemars(transform = ...)]`): removes integer formats unknown to
/// Kubernetes from a schema and every schema inside it.
pub fn kubernetes_integer_formats(schema: &mut Schema) {
    transform_subschemas(&mut kubernetes_integer_formats, schema);
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    // An optional field (`Option<u16>`) has `type: ["integer", "null"]` here; kube turns it
    // into `nullable: true` later.
    let is_integer = match obj.get("type") {
        Some(serde_json::Value::String(t)) => t == "integer",
        Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
        _ => false,
    };
    let unknown = obj
        .get("format")
        .and_then(|f| f.as_str())
        .is_some_and(|f| !KUBERNETES_INTEGER_FORMATS.contains(&f));
    if is_integer && unknown {
        obj.remove("format");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemars::json_schema;

    #[test]
    fn drops_rust_width_formats_and_keeps_kubernetes_ones() {
        let mut s = json_schema!({
            "type": "object",
            "properties": {
                "kinds": {"type": "array", "items": {"type": "integer", "format": "uint8", "minimum": 2}},
                "count": {"type": "integer", "format": "int32"},
                "when": {"type": "string", "format": "date-time"},
                "endPort": {"type": ["integer", "null"], "format": "uint16"}
            }
        });
        kubernetes_integer_formats(&mut s);
        let v = s.as_value();
        assert!(v["properties"]["kinds"]["items"].get("format").is_none());
        assert_eq!(v["properties"]["kinds"]["items"]["minimum"], 2);
        assert_eq!(v["properties"]["count"]["format"], "int32");
        assert_eq!(v["properties"]["when"]["format"], "date-time");
        assert!(v["properties"]["endPort"].get("format").is_none());
    }
}
