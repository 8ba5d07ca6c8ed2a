//! Module parameters: the load-time argument string, the sysfs view of a loaded module, and
//! runtime changes through `/sys/module/toa/parameters/` (no reload: reloading would drop
//! the stored addresses of live connections).

use crate::desired::ModuleSettings;
use crate::host::Host;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const PARAM_IPV4_KINDS: &str = "ipv4_kinds";
pub const PARAM_NAT64_KINDS: &str = "nat64_kinds";
pub const PARAM_TRUSTED_SOURCES: &str = "trusted_sources";
pub const PARAM_ACCEPT_ANY_SOURCE: &str = toa_crds::module::PARAM_ACCEPT_ANY_SOURCE;
pub const PARAM_PORTS: &str = toa_crds::module::PARAM_PORTS;

fn param_path(name: &str) -> PathBuf {
    Path::new("/sys/module")
        .join(crate::MODULE_NAME)
        .join("parameters")
        .join(name)
}

/// The parameters in the module's own syntax (comma lists), by name, from the CRD's
/// canonical form (kinds sorted and deduplicated).
pub fn desired_values(m: &ModuleSettings) -> BTreeMap<String, String> {
    m.module_parameters()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The `finit_module` argument string. Empty lists are left out: an empty value is the
/// module's default.
pub fn load_args(m: &ModuleSettings) -> String {
    m.module_arguments().join(" ")
}

/// A CIDR (or bare address) in canonical text, for comparing what the kernel prints with
/// what was asked; None when it does not parse.
fn canonical_cidr(text: &str) -> Option<String> {
    let (addr, prefix) = match text.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text.trim(), None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match prefix {
        Some(p) => p.parse().ok()?,
        None => max,
    };
    (prefix <= max).then(|| format!("{ip}/{prefix}"))
}

/// A port or range in canonical text (`8000-8000` is `8000`); None when it does not parse.
fn canonical_port_range(text: &str) -> Option<String> {
    let (lo, hi) = match text.split_once('-') {
        Some((l, h)) => (l.trim().parse::<u16>().ok()?, h.trim().parse::<u16>().ok()?),
        None => {
            let p = text.trim().parse::<u16>().ok()?;
            (p, p)
        }
    };
    Some(if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    })
}

/// Reads the parameters of the loaded module (missing ones are left out).
pub fn read_loaded(host: &dyn Host) -> BTreeMap<String, String> {
    [
        PARAM_IPV4_KINDS,
        PARAM_NAT64_KINDS,
        PARAM_TRUSTED_SOURCES,
        PARAM_ACCEPT_ANY_SOURCE,
        PARAM_PORTS,
    ]
    .into_iter()
    .filter_map(|name| {
        host.read_to_string(&param_path(name))
            .ok()
            .map(|v| (name.to_string(), v.trim().to_string()))
    })
    .collect()
}

/// Canonical comparable form: order and spacing do not matter, CIDRs compare by value.
fn normalize(name: &str, value: &str) -> Vec<String> {
    let mut tokens: Vec<String> = value
        .split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            if name == PARAM_TRUSTED_SOURCES {
                canonical_cidr(t).unwrap_or_else(|| t.to_string())
            } else if name == PARAM_PORTS {
                canonical_port_range(t).unwrap_or_else(|| t.to_string())
            } else {
                t.parse::<u32>()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| t.to_string())
            }
        })
        .collect();
    tokens.sort();
    tokens.dedup();
    tokens
}

pub fn same_value(name: &str, a: &str, b: &str) -> bool {
    normalize(name, a) == normalize(name, b)
}

/// Parameters whose loaded value differs from the desired one.
pub fn differences(
    desired: &BTreeMap<String, String>,
    loaded: &BTreeMap<String, String>,
) -> Vec<String> {
    desired
        .iter()
        .filter(|(k, v)| match loaded.get(*k) {
            Some(l) => !same_value(k, v, l),
            None => true,
        })
        .map(|(k, _)| k.clone())
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("the module has no parameter {name} (/sys/module/toa/parameters/{name} missing): the loaded module is older than this agent; it needs a reload")]
    Missing { name: String },
    #[error("the kernel rejected {name}={value:?}: {err} (see the kernel log for the bad token)")]
    Rejected {
        name: String,
        value: String,
        err: std::io::Error,
    },
}

/// Writes every differing parameter; returns the names changed.
pub fn apply(host: &dyn Host, m: &ModuleSettings) -> Result<Vec<String>, ParamError> {
    let desired = desired_values(m);
    let loaded = read_loaded(host);
    let mut changed = Vec::new();
    for name in differences(&desired, &loaded) {
        let value = desired.get(&name).cloned().unwrap_or_default();
        if !loaded.contains_key(&name) {
            return Err(ParamError::Missing { name });
        }
        // Trailing newline as `echo` writes it; it also makes an empty value a non-empty
        // write (sysfs ignores zero-length writes).
        host.write_sysfs(&param_path(&name), &format!("{value}\n"))
            .map_err(|err| ParamError::Rejected {
                name: name.clone(),
                value: value.clone(),
                err,
            })?;
        changed.push(name);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn settings(v4: &[u8], nat64: &[u8], trusted: &[&str]) -> ModuleSettings {
        ModuleSettings {
            ipv4_option_kinds: v4.to_vec(),
            nat64_option_kinds: nat64.to_vec(),
            trusted_sources: trusted.iter().map(|s| s.to_string()).collect(),
            ..ModuleSettings::default()
        }
    }

    #[test]
    fn load_args_syntax() {
        assert_eq!(
            load_args(&settings(&[254, 200, 254], &[253], &[])),
            "ipv4_kinds=200,254 nat64_kinds=253"
        );
        assert_eq!(
            load_args(&settings(&[200], &[253], &["10.0.0.0/8", "192.0.2.1/32"])),
            "ipv4_kinds=200 nat64_kinds=253 trusted_sources=10.0.0.0/8,192.0.2.1/32"
        );
    }

    #[test]
    fn comparison_ignores_order_spacing_and_cidr_spelling() {
        assert!(same_value(PARAM_IPV4_KINDS, "200,254", "254, 200\n"));
        assert!(!same_value(PARAM_IPV4_KINDS, "200", "200,254"));
        assert!(same_value(
            PARAM_TRUSTED_SOURCES,
            "192.0.2.1",
            "192.0.2.1/32"
        ));
        assert!(same_value(
            PARAM_TRUSTED_SOURCES,
            "2001:DB8::/32",
            "2001:db8::/32"
        ));
        assert!(same_value(PARAM_TRUSTED_SOURCES, "", "\n"));
        assert!(same_value(PARAM_PORTS, "8000-8000,443", "443,8000\n"));
        assert!(!same_value(PARAM_PORTS, "443", "443-444"));
        assert!(same_value(PARAM_ACCEPT_ANY_SOURCE, "0", "0\n"));
    }

    #[test]
    fn trust_decision_and_ports_are_written() {
        let host = FakeHost::debian();
        host.insert_module(Some("SV"), &[]);
        let mut m = settings(&[200], &[253], &[]);
        m.accept_from_any_source = true;
        m.ports = vec![
            toa_crds::PortRange {
                port: 8080,
                end_port: Some(8081),
            },
            toa_crds::PortRange {
                port: 443,
                end_port: None,
            },
        ];
        let mut changed = apply(&host, &m).expect("apply");
        changed.sort();
        assert_eq!(changed, [PARAM_ACCEPT_ANY_SOURCE, PARAM_PORTS]);
        assert_eq!(
            host.get("/sys/module/toa/parameters/ports").as_deref(),
            Some("443,8080-8081\n")
        );
        assert_eq!(
            host.get("/sys/module/toa/parameters/accept_any_source")
                .as_deref(),
            Some("1\n")
        );
        assert_eq!(
            load_args(&m),
            "ipv4_kinds=200 nat64_kinds=253 accept_any_source=1 ports=443,8080-8081"
        );
    }

    #[test]
    fn apply_writes_only_what_differs() {
        let host = FakeHost::debian();
        host.insert_module(Some("SV"), &[]);
        let changed = apply(&host, &settings(&[200], &[253], &["10.0.0.0/8"])).expect("apply");
        assert_eq!(changed, [PARAM_TRUSTED_SOURCES]);
        assert_eq!(
            host.get("/sys/module/toa/parameters/trusted_sources")
                .as_deref(),
            Some("10.0.0.0/8\n")
        );
        // Second pass: nothing to do.
        assert!(apply(&host, &settings(&[200], &[253], &["10.0.0.0/8"]))
            .expect("apply")
            .is_empty());
        // Clearing writes a newline, not an empty buffer.
        apply(&host, &settings(&[200], &[253], &[])).expect("clear");
        let writes = host.lock().sysfs_writes.clone();
        assert_eq!(writes.last().map(|w| w.1.as_str()), Some("\n"));
    }

    #[test]
    fn rejection_names_parameter_and_value() {
        let host = FakeHost::debian();
        host.insert_module(Some("SV"), &[]);
        host.lock()
            .rejected_params
            .push((PARAM_IPV4_KINDS.into(), "200,254".into()));
        let err = apply(&host, &settings(&[200, 254], &[253], &[])).expect_err("rejected");
        let text = err.to_string();
        assert!(
            text.contains("ipv4_kinds") && text.contains("200,254"),
            "{text}"
        );
    }

    #[test]
    fn missing_parameter_means_reload() {
        let host = FakeHost::debian();
        host.insert_module(Some("SV"), &[]);
        host.remove_prefix("/sys/module/toa/parameters/trusted_sources");
        let err = apply(&host, &settings(&[200], &[253], &["10.0.0.0/8"])).expect_err("missing");
        assert!(matches!(err, ParamError::Missing { .. }));
    }
}
