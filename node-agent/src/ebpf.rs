//! The eBPF backend's side of the agent: the module settings of the desired state turned into
//! the loader's parameters (`toa_ebpf::Params`), with the module's syntax and defaults.

use crate::desired::ModuleSettings;

/// Settings the eBPF backend cannot take (the message names the setting and the fix).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the EBPF backend cannot take these module settings: {0}; change the policy's module settings"
)]
pub struct SettingsRefused(#[from] toa_ebpf::ParamError);

fn joined<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The loader's parameters for `m` (kinds, trusted sources, accept-any, ports; `dup_rule`
/// stays the module's default, reject, which the CRD does not expose).
pub fn params(m: &ModuleSettings) -> Result<toa_ebpf::Params, SettingsRefused> {
    Ok(toa_ebpf::Params {
        ipv4_kinds: toa_ebpf::params::parse_kinds("ipv4_kinds", &joined(&m.ipv4_option_kinds))?,
        nat64_kinds: toa_ebpf::params::parse_kinds("nat64_kinds", &joined(&m.nat64_option_kinds))?,
        trusted_sources: toa_ebpf::params::parse_trusted(&m.trusted_sources.join(","))?,
        accept_any_source: m.accept_from_any_source,
        ports: toa_ebpf::params::parse_ports(&joined(&m.ports))?,
        dup_rule: toa_ebpf::params::DupRule::default(),
    })
}

/// The parameters as the self-test's planner reads the module's (`/sys/module/toa/parameters`
/// syntax), so that the eBPF backend is tested with a balancer and port in its scope.
pub fn self_test_params(p: &toa_ebpf::Params) -> crate::selftest::plan::ModuleParams {
    let trusted: Vec<String> = p.trusted_sources.iter().map(ToString::to_string).collect();
    crate::selftest::plan::ModuleParams {
        ipv4_kinds: Some(joined(&p.ipv4_kinds)),
        nat64_kinds: Some(joined(&p.nat64_kinds)),
        trusted_sources: Some(trusted.join(",")),
        accept_any_source: Some(u8::from(p.accept_any_source).to_string()),
        ports: Some(ports_text(&p.ports)),
    }
}

fn ports_text(ports: &[(u16, u16)]) -> String {
    ports
        .iter()
        .map(|(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The parameters as the status message shows them (the module's parameter syntax).
pub fn describe(p: &toa_ebpf::Params) -> String {
    let trusted: Vec<String> = p.trusted_sources.iter().map(ToString::to_string).collect();
    format!(
        "ipv4_kinds={} nat64_kinds={} trusted_sources={} accept_any_source={} ports={}",
        joined(&p.ipv4_kinds),
        joined(&p.nat64_kinds),
        trusted.join(","),
        u8::from(p.accept_any_source),
        ports_text(&p.ports)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use toa_crds::PortRange;

    #[test]
    fn default_settings_are_the_module_defaults() {
        let p = params(&ModuleSettings::default()).expect("defaults");
        assert_eq!(p, toa_ebpf::Params::default());
    }

    #[test]
    fn settings_carry_over() {
        let m = ModuleSettings {
            ipv4_option_kinds: vec![200, 254],
            nat64_option_kinds: vec![254],
            trusted_sources: vec!["10.0.0.0/8".into(), "192.0.2.7/32".into()],
            accept_from_any_source: false,
            ports: vec![
                PortRange {
                    port: 443,
                    end_port: None,
                },
                PortRange {
                    port: 8000,
                    end_port: Some(8100),
                },
            ],
        };
        let p = params(&m).expect("valid");
        assert_eq!(p.ipv4_kinds, [200, 254]);
        assert_eq!(p.nat64_kinds, [254]);
        assert_eq!(p.trusted_sources.len(), 2);
        assert_eq!(p.trusted_sources[1].prefix, 32);
        assert_eq!(p.ports, [(443, 443), (8000, 8100)]);
        assert_eq!(
            describe(&p),
            "ipv4_kinds=200,254 nat64_kinds=254 trusted_sources=10.0.0.0/8,192.0.2.7/32 accept_any_source=0 ports=443,8000-8100"
        );
    }

    #[test]
    fn the_self_test_plans_within_the_ebpf_scope() {
        let m = ModuleSettings {
            ipv4_option_kinds: vec![254],
            nat64_option_kinds: vec![253],
            trusted_sources: vec!["10.9.0.0/16".into()],
            accept_from_any_source: false,
            ports: vec![PortRange {
                port: 8000,
                end_port: Some(8100),
            }],
        };
        let p = params(&m).expect("valid");
        let sp = self_test_params(&p);
        assert_eq!(sp.ports.as_deref(), Some("8000-8100"));
        let plan = crate::selftest::plan::plan(&sp).expect("a plan");
        assert_eq!(plan.port, 8000);
        assert_eq!(plan.balancer_text(), "10.9.0.1");
        assert_eq!(plan.handshakes.len(), 2);
        assert_eq!(plan.handshakes[0].kind, 254);
        // Nothing trusted: skipped, for the same reason as the module's.
        let none = params(&ModuleSettings::default()).expect("defaults");
        assert!(crate::selftest::plan::plan(&self_test_params(&none)).is_err());
    }

    #[test]
    fn ipv6_trusted_sources_carry_over() {
        let m = ModuleSettings {
            trusted_sources: vec!["10.0.0.0/24".into(), "fd00:10::/64".into()],
            ..ModuleSettings::default()
        };
        let p = params(&m).expect("IPv4 and IPv6 sources");
        assert_eq!(p.trusted_sources.len(), 2);
        assert!(
            describe(&p).contains("trusted_sources=10.0.0.0/24,fd00:10::/64"),
            "{}",
            describe(&p)
        );
        // The self-test plans its IPv4 handshakes from the IPv4 entry.
        let plan = crate::selftest::plan::plan(&self_test_params(&p)).expect("a plan");
        assert_eq!(plan.balancer_text(), "10.0.0.1");
        assert_eq!(plan.transport(), "IPv4");
    }

    #[test]
    fn ipv6_only_trusted_sources_get_a_self_test_over_ipv6() {
        // This used to plan nothing (Skipped: "no IPv4 network in trusted_sources").
        let m = ModuleSettings {
            ipv4_option_kinds: vec![254],
            nat64_option_kinds: vec![253],
            trusted_sources: vec!["fd00:10::/64".into()],
            ..ModuleSettings::default()
        };
        let p = params(&m).expect("IPv6 sources");
        let sp = self_test_params(&p);
        assert_eq!(sp.trusted_sources.as_deref(), Some("fd00:10::/64"));
        let plan = crate::selftest::plan::plan(&sp).expect("a plan over IPv6");
        assert_eq!(plan.transport(), "IPv6");
        assert_eq!(plan.balancer_text(), "[fd00:10::1]");
        assert_eq!(plan.handshakes.len(), 2);
    }

    #[test]
    fn bad_trusted_sources_are_refused_with_the_fix() {
        let m = ModuleSettings {
            trusted_sources: vec!["2001:db8::1/32".into()],
            ..ModuleSettings::default()
        };
        let e = params(&m).expect_err("host bits");
        let text = e.to_string();
        assert!(text.contains("2001:db8::1/32"), "{text}");
        assert!(text.contains("write the network address"), "{text}");
    }
}
