//! Which handshakes the self-test sends, derived from the loaded module's parameters
//! (`/sys/module/toa/parameters/*`, as kmod/toa_params.c prints them), so that the test
//! connection is in the module's scope: a trusted balancer address, an in-scope port and the
//! first configured option kind of each family.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The real client the test's "balancer" claims: documentation addresses (RFC 5737,
/// RFC 3849), which no real client has and the module does not refuse.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x77);
pub const CLIENT_PORT: u16 = 40077;
/// Listening port when the module applies to every port.
const DEFAULT_PORT: u16 = 80;
/// Node addresses for the TUN device, the first one that is not the balancer (RFC 5737).
const NODE_CANDIDATES: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 2),
];

/// The loaded module's parameters as text, one field per `/sys/module/toa/parameters` file;
/// `None` where the file is absent (an older module without that parameter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleParams {
    pub ipv4_kinds: Option<String>,
    pub nat64_kinds: Option<String>,
    pub trusted_sources: Option<String>,
    pub accept_any_source: Option<String>,
    pub ports: Option<String>,
}

/// One handshake to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// TCP option kind.
    pub kind: u8,
    /// True: kind/20 with an IPv6 client (NAT64, read back with getsockopt 4096);
    /// false: kind/8 with an IPv4 client (read back with accept/getpeername).
    pub nat64: bool,
}

/// Everything the test needs; built by [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Source address of the test's segments: inside the first trusted IPv4 network.
    pub balancer: Ipv4Addr,
    /// Address of the TUN device (the "node").
    pub node: Ipv4Addr,
    /// Listening port, inside the module's `ports` scope.
    pub port: u16,
    pub handshakes: Vec<Handshake>,
}

/// Decides the test, or says why none can run (then the outcome is Skipped).
pub fn plan(p: &ModuleParams) -> Result<Plan, String> {
    let balancer = balancer_address(p)?;
    let node = NODE_CANDIDATES
        .into_iter()
        .find(|a| *a != balancer)
        .unwrap_or(NODE_CANDIDATES[0]);
    let port = first_port(p.ports.as_deref().unwrap_or(""))?;
    let mut handshakes = Vec::new();
    if let Some(kind) = first_kind(p.ipv4_kinds.as_deref().unwrap_or(""))? {
        handshakes.push(Handshake { kind, nat64: false });
    }
    if let Some(kind) = first_kind(p.nat64_kinds.as_deref().unwrap_or(""))? {
        handshakes.push(Handshake { kind, nat64: true });
    }
    if handshakes.is_empty() {
        return Err(
            "the module accepts no option kind (ipv4_kinds and nat64_kinds are empty)".into(),
        );
    }
    Ok(Plan {
        balancer,
        node,
        port,
        handshakes,
    })
}

fn truthy(s: &str) -> bool {
    matches!(s.trim(), "1" | "Y" | "y")
}

/// A balancer address the module trusts: the first address of the first IPv4 network in
/// `trusted_sources` (its network address for a /31 or /32), or any address when the module
/// accepts every source (older modules: an empty list meant every source).
fn balancer_address(p: &ModuleParams) -> Result<Ipv4Addr, String> {
    let list = p.trusted_sources.as_deref().unwrap_or("").trim();
    let any = match &p.accept_any_source {
        Some(v) => truthy(v),
        None => list.is_empty(),
    };
    for tok in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (addr, len) = tok.split_once('/').unwrap_or((tok, "32"));
        let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
            continue; // an IPv6 network: the test's transport is IPv4
        };
        if len > 32 {
            return Err(format!("trusted_sources has an invalid prefix in {tok:?}"));
        }
        let base = u32::from(addr);
        return Ok(if len >= 31 {
            addr
        } else {
            Ipv4Addr::from(base.wrapping_add(1))
        });
    }
    if any {
        Ok(Ipv4Addr::new(203, 0, 113, 10))
    } else {
        Err("no IPv4 network in trusted_sources and accept_any_source is off: no IPv4 balancer can be trusted".into())
    }
}

/// The first port of `ports` ("80,443,30000-32767"; empty = every port).
fn first_port(ports: &str) -> Result<u16, String> {
    let Some(tok) = ports.split(',').map(str::trim).find(|t| !t.is_empty()) else {
        return Ok(DEFAULT_PORT);
    };
    let lo = tok.split_once('-').map_or(tok, |(lo, _)| lo);
    lo.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("cannot read the module's ports parameter {ports:?}"))
}

/// The first kind of a comma list ("200,254"); None for an empty list.
fn first_kind(kinds: &str) -> Result<Option<u8>, String> {
    match kinds.split(',').map(str::trim).find(|t| !t.is_empty()) {
        None => Ok(None),
        Some(k) => k
            .parse::<u8>()
            .map(Some)
            .map_err(|_| format!("cannot read the module's option kinds {kinds:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v4: &str, n64: &str, trusted: &str, any: Option<&str>, ports: &str) -> ModuleParams {
        ModuleParams {
            ipv4_kinds: Some(v4.into()),
            nat64_kinds: Some(n64.into()),
            trusted_sources: Some(trusted.into()),
            accept_any_source: any.map(Into::into),
            ports: Some(ports.into()),
        }
    }

    #[test]
    fn the_test_connection_is_in_scope() {
        let p = plan(&params(
            "200,254",
            "253",
            "fd00::/64,10.20.0.0/16",
            Some("0"),
            "8443,30000-32767",
        ))
        .expect("plan");
        assert_eq!(p.balancer, Ipv4Addr::new(10, 20, 0, 1));
        assert_eq!(p.port, 8443);
        assert_eq!(
            p.handshakes,
            vec![
                Handshake {
                    kind: 200,
                    nat64: false
                },
                Handshake {
                    kind: 253,
                    nat64: true
                }
            ]
        );
        let p = plan(&params("200", "", "", Some("1"), "30000-32767")).expect("any");
        assert_eq!(p.port, 30000);
        assert_eq!(p.handshakes.len(), 1);
        // A single trusted balancer (/32) is used as is, and the node address avoids it.
        let p = plan(&params("200", "", "198.51.100.1/32", Some("0"), "")).expect("single");
        assert_eq!(p.balancer, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(p.node, Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(p.port, 80);
    }

    #[test]
    fn nothing_trusted_or_nothing_accepted_skips_with_the_reason() {
        let e = plan(&params("200", "253", "fd00::/64", Some("0"), "")).expect_err("no v4");
        assert!(e.contains("trusted_sources"), "{e}");
        let e = plan(&params("", "", "", Some("1"), "")).expect_err("no kinds");
        assert!(e.contains("no option kind"), "{e}");
        assert!(plan(&params("x", "", "", Some("1"), "")).is_err());
        assert!(plan(&params("200", "", "", Some("1"), "0")).is_err());
    }

    #[test]
    fn modules_without_the_trust_parameter_trust_an_empty_list() {
        let mut p = params("200", "253", "", None, "");
        p.ports = None;
        let plan = plan(&p).expect("old module");
        assert_eq!(plan.balancer, Ipv4Addr::new(203, 0, 113, 10));
    }
}
