//! A structural OpenAPI v3 validator for the subset of the Kubernetes CRD
//! schema language that the toa.dev CRDs use. Messages follow the apiserver's
//! wording. Any keyword it does not understand is reported as an error, so a
//! schema feature it cannot check never passes silently.

use serde_json::{Map, Value};

const KNOWN_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "description",
    "default",
    "nullable",
    "enum",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "format",
    "title",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
];

/// Problems with the schema itself (not structural, or keywords this
/// validator does not implement).
pub fn check_structural(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    for key in obj.keys() {
        if !KNOWN_KEYWORDS.contains(&key.as_str()) {
            problems.push(format!(
                "{path}: keyword {key:?} is not structural or not supported by this validator"
            ));
        }
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !int_or_string && !preserve {
        problems.push(format!(
            "{path}: no type (structural schemas need one everywhere)"
        ));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        problems.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[*]"), problems);
    }
    if let Some(ap) = obj.get("additionalProperties") {
        if ap.is_object() {
            check_structural(ap, &format!("{path}{{*}}"), problems);
        }
    }
    if let Some(d) = obj.get("default") {
        let mut errs = Vec::new();
        validate(schema, d, &format!("{path}(default)"), &mut errs);
        problems.extend(errs);
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Validate `value` against `schema`, appending one message per problem.
/// Unknown fields are errors (as with `kubectl apply --validate=strict`).
pub fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let empty = Map::new();
    let s = schema.as_object().unwrap_or(&empty);
    if value.is_null() {
        if s.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!(
                "{path}: Invalid value: \"null\": {path} in body must be of type {}",
                s.get("type").and_then(Value::as_str).unwrap_or("object")
            ));
        }
        return;
    }
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_string() || type_name(value) == "integer") {
            errors.push(format!(
                "{path}: Invalid value: {}: must be an integer or a string",
                show(value)
            ));
        }
        return;
    }
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if let Some(want) = s.get("type").and_then(Value::as_str) {
        let got = type_name(value);
        let ok = got == want || (want == "number" && got == "integer");
        if !ok {
            errors.push(format!(
                "{path}: Invalid value: {}: {path} in body must be of type {want}: {:?}",
                show(value),
                got
            ));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(show).collect();
            errors.push(format!(
                "{path}: Unsupported value: {}: supported values: {}",
                show(value),
                list.join(", ")
            ));
        }
    }
    match value {
        Value::Object(map) => {
            let props = s.get("properties").and_then(Value::as_object);
            for req in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = req.as_str() {
                    if !map.contains_key(r) {
                        errors.push(format!("{}: Required value", join(path, r)));
                    }
                }
            }
            for (k, v) in map {
                let sub = join(path, k);
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    validate(ps, v, &sub, errors);
                } else if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    validate(ap, v, &sub, errors);
                } else if !preserve && s.get("additionalProperties") != Some(&Value::Bool(true)) {
                    // kube-apiserver's wording for a server-side apply (kubectl apply
                    // --server-side), which builds a typed patch from the schema.
                    errors.push(format!(".{sub}: field not declared in schema"));
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                if n < min {
                    errors.push(format!("{path}: Invalid value: {n}: {path} in body should have at least {min} items"));
                }
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
                if n > max {
                    errors.push(format!(
                        "{path}: Too many: {n}: must have at most {max} items"
                    ));
                }
            }
            if let Some(item_schema) = s.get("items") {
                for (i, it) in items.iter().enumerate() {
                    validate(item_schema, it, &format!("{path}[{i}]"), errors);
                }
            }
            match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => {
                    // kube-apiserver's wording for a server-side apply: the typed patch
                    // cannot hold two equal set entries (structured-merge-diff).
                    for (i, it) in items.iter().enumerate() {
                        if items[..i].contains(it) {
                            errors.push(format!(".{path}: duplicate entries for key [={it}]"));
                        }
                    }
                }
                Some("map") => {
                    let keys: Vec<&str> = s
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let key_of = |it: &Value| -> Vec<Value> {
                        keys.iter()
                            .map(|k| it.get(*k).cloned().unwrap_or(Value::Null))
                            .collect()
                    };
                    for (i, it) in items.iter().enumerate() {
                        let k = key_of(it);
                        if items[..i].iter().any(|o| key_of(o) == k) {
                            errors
                                .push(format!("{path}[{i}]: Duplicate value: {}", Value::Array(k)));
                        }
                    }
                }
                _ => {}
            }
        }
        Value::String(text) => {
            let n = text.chars().count() as u64;
            if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
                if n < min {
                    errors.push(format!("{path}: Invalid value: {}: {path} in body should be at least {min} chars long", show(value)));
                }
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                if n > max {
                    errors.push(format!(
                        "{path}: Too long: may not be more than {max} bytes"
                    ));
                }
            }
            if s.get("format").and_then(Value::as_str) == Some("date-time")
                && text.parse::<k8s_openapi::jiff::Timestamp>().is_err()
            {
                errors.push(format!(
                    "{path}: Invalid value: {}: {path} in body must be of type date-time",
                    show(value)
                ));
            }
        }
        Value::Number(num) => {
            let x = num.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                if x < min {
                    errors.push(format!("{path}: Invalid value: {num}: {path} in body should be greater than or equal to {min}"));
                }
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                if x > max {
                    errors.push(format!("{path}: Invalid value: {num}: {path} in body should be less than or equal to {max}"));
                }
            }
            let range = match s.get("format").and_then(Value::as_str) {
                Some("int32") => Some((i32::MIN as f64, i32::MAX as f64)),
                Some("uint8") => Some((0.0, 255.0)),
                _ => None,
            };
            if let Some((lo, hi)) = range {
                if x < lo || x > hi {
                    errors.push(format!(
                        "{path}: Invalid value: {num}: out of range for {}",
                        s["format"]
                    ));
                }
            }
        }
        _ => {}
    }
}
