//! Which handshakes the self-test sends, derived from the loaded module's parameters
//! (`/sys/module/toa/parameters/*`, as kmod/toa_params.c prints them), so that the test
//! connection is in the module's scope: a trusted balancer address, an in-scope port and the
//! first configured option kind of each family.
//!
//! The transport (the balancer's family) follows `trusted_sources`: IPv4 when it has an IPv4
//! network (or trusts every source), else IPv6 from its first IPv6 network, so that a policy
//! that trusts only IPv6 balancers is tested too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
/// Node addresses over IPv6 transport, the first one that is not the balancer (RFC 3849).
const NODE_CANDIDATES_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
];
/// The balancer when the module accepts every source (RFC 5737).
const ANY_BALANCER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

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
    /// Source address of the test's segments: inside the first trusted IPv4 network, else
    /// inside the first trusted IPv6 network (IPv6 transport).
    pub balancer: IpAddr,
    /// Address of the TUN device (the "node"), of the balancer's family.
    pub node: IpAddr,
    /// Listening port, inside the module's `ports` scope.
    pub port: u16,
    pub handshakes: Vec<Handshake>,
}

impl Plan {
    /// "IPv4" or "IPv6": the family of the test's segments.
    pub fn transport(&self) -> &'static str {
        match self.balancer {
            IpAddr::V4(_) => "IPv4",
            IpAddr::V6(_) => "IPv6",
        }
    }

    /// The balancer as the status message names it (`10.0.0.1`, `[fd00:10::1]`).
    pub fn balancer_text(&self) -> String {
        match self.balancer {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    }
}

/// Decides the test, or says why none can run (then the outcome is Skipped).
pub fn plan(p: &ModuleParams) -> Result<Plan, String> {
    let balancer = balancer_address(p)?;
    let candidates = match balancer {
        IpAddr::V4(_) => NODE_CANDIDATES.map(IpAddr::V4),
        IpAddr::V6(_) => NODE_CANDIDATES_V6.map(IpAddr::V6),
    };
    // Two candidates: at most one is the balancer.
    let node = if candidates[0] == balancer {
        candidates[1]
    } else {
        candidates[0]
    };
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
/// `trusted_sources` (its network address for a /31 or /32); else, when the module accepts
/// every source (older modules: an empty list meant every source) and trusts no IPv6 network,
/// any IPv4 address; else the first address of the first IPv6 network (its network address
/// for a /127 or /128), which makes the test's transport IPv6.
fn balancer_address(p: &ModuleParams) -> Result<IpAddr, String> {
    let list = p.trusted_sources.as_deref().unwrap_or("").trim();
    let any = match &p.accept_any_source {
        Some(v) => truthy(v),
        None => list.is_empty(),
    };
    let mut first_v6 = None;
    let mut unusable = Vec::new();
    // The module's own syntax, parsed as the eBPF backend parses it (host bits refused too).
    let networks = toa_ebpf::params::parse_trusted(list).map_err(|e| e.to_string())?;
    for net in &networks {
        let a = first_address(net);
        if !can_send_from(a) {
            unusable.push(net.to_string());
            continue;
        }
        match a {
            IpAddr::V4(a) => return Ok(IpAddr::V4(a)),
            IpAddr::V6(a) => {
                first_v6.get_or_insert(a);
            }
        }
    }
    match first_v6 {
        Some(a) => Ok(IpAddr::V6(a)),
        None if !unusable.is_empty() => Err(format!(
            "no entry of trusted_sources gives an address a test balancer can send from ({} would be unspecified, loopback, multicast or IPv4-mapped, which the kernel drops as a source)",
            unusable.join(", ")
        )),
        None if any => Ok(IpAddr::V4(ANY_BALANCER)),
        None => Err(
            "trusted_sources is empty and accept_any_source is off: no balancer can be trusted"
                .into(),
        ),
    }
}

/// Whether a segment from `a` can reach a listener through the TUN device: the kernel drops
/// unspecified, "this network" (0/8), loopback and multicast sources on input
/// (ip_route_input_slow() martians; ip6_rcv_core()), and tcp_v6_conn_request() drops SYNs
/// from IPv4-mapped IPv6 sources, which neither backend would match against IPv6 entries
/// anyway.
fn can_send_from(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            a.octets()[0] != 0 && !a.is_loopback() && !a.is_multicast() && !a.is_broadcast()
        }
        IpAddr::V6(a) => {
            !a.is_unspecified()
                && !a.is_loopback()
                && !a.is_multicast()
                && a.to_ipv4_mapped().is_none()
        }
    }
}

/// The balancer address inside one `trusted_sources` network: the network address + 1, or
/// the network address itself when the network has no room for more (/31, /32, /127, /128).
fn first_address(net: &toa_ebpf::params::Cidr) -> IpAddr {
    match net.addr {
        IpAddr::V4(a) if net.prefix < 31 => IpAddr::V4(Ipv4Addr::from(u32::from(a) + 1)),
        IpAddr::V6(a) if net.prefix < 127 => IpAddr::V6(Ipv6Addr::from(u128::from(a) + 1)),
        a => a,
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
        assert_eq!(p.balancer, IpAddr::V4(Ipv4Addr::new(10, 20, 0, 1)));
        assert_eq!(p.transport(), "IPv4");
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
        assert_eq!(p.balancer, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(p.node, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)));
        assert_eq!(p.port, 80);
    }

    #[test]
    fn nothing_trusted_or_nothing_accepted_skips_with_the_reason() {
        let e = plan(&params("200", "253", "", Some("0"), "")).expect_err("nothing trusted");
        assert!(e.contains("trusted_sources is empty"), "{e}");
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
        assert_eq!(plan.balancer, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)));
    }

    #[test]
    fn only_ipv6_networks_trusted_plans_ipv6_transport() {
        // This used to be Skipped ("no IPv4 network in trusted_sources").
        let p = plan(&params("200", "253", "fd00:10::/64", Some("0"), "")).expect("v6");
        assert_eq!(p.transport(), "IPv6");
        assert_eq!(p.balancer, "fd00:10::1".parse::<IpAddr>().expect("addr"));
        assert_eq!(p.node, "2001:db8::1".parse::<IpAddr>().expect("addr"));
        assert_eq!(p.balancer_text(), "[fd00:10::1]");
        assert_eq!(p.handshakes.len(), 2, "both kinds are tested over IPv6");
        // /127 and /128: the address itself; the node avoids it.
        let p = plan(&params("200", "", "2001:db8::1/128", Some("0"), "")).expect("/128");
        assert_eq!(p.balancer, "2001:db8::1".parse::<IpAddr>().expect("addr"));
        assert_eq!(p.node, "2001:db8::2".parse::<IpAddr>().expect("addr"));
        let p = plan(&params("200", "", "fd00::a/127", Some("0"), "")).expect("/127");
        assert_eq!(p.balancer, "fd00::a".parse::<IpAddr>().expect("addr"));
        // An IPv6 network wins over accept_any: with a non-empty list, accept_any does not
        // apply (the module and the eBPF backend), so an IPv4 balancer would not be trusted.
        let p = plan(&params("200", "", "fd00::/64", Some("1"), "")).expect("v6 + any");
        assert_eq!(p.transport(), "IPv6");
        // An IPv4 network anywhere in the list keeps the IPv4 transport.
        let p = plan(&params(
            "200",
            "",
            "fd00::/64,fd01::/64,10.1.0.0/16",
            Some("0"),
            "",
        ))
        .expect("v4 last");
        assert_eq!(p.transport(), "IPv4");
        assert_eq!(p.balancer_text(), "10.1.0.1");
    }

    #[test]
    fn bad_trusted_sources_name_the_entry() {
        let e = plan(&params("200", "", "fd00::/129", Some("0"), "")).expect_err("prefix");
        assert!(
            e.contains("\"fd00::/129\"") && e.contains("above 128"),
            "{e}"
        );
        let e = plan(&params("200", "", "10.0.0.0/33", Some("0"), "")).expect_err("prefix");
        assert!(
            e.contains("\"10.0.0.0/33\"") && e.contains("above 32"),
            "{e}"
        );
        let e = plan(&params("200", "", "fd00::/x", Some("0"), "")).expect_err("prefix");
        assert!(e.contains("bad prefix length"), "{e}");
        let e = plan(&params("200", "", "balancer.example", Some("0"), "")).expect_err("name");
        assert!(e.contains("not an IPv4 or IPv6 address"), "{e}");
    }

    #[test]
    fn entries_no_segment_can_come_from_are_passed_over() {
        // IPv4-mapped, multicast, loopback: skipped for the next entry that is usable.
        let p = plan(&params(
            "200",
            "",
            "::ffff:10.0.0.0/104,ff02::/16,::1/128,fd00:10::/64",
            Some("0"),
            "",
        ))
        .expect("the usable entry");
        assert_eq!(p.balancer_text(), "[fd00:10::1]");
        let p = plan(&params(
            "200",
            "",
            "0.0.0.0/8,127.0.0.0/8,10.2.0.0/16",
            Some("0"),
            "",
        ))
        .expect("the usable IPv4 entry");
        assert_eq!(p.balancer_text(), "10.2.0.1");
        // Only unusable entries: Skipped with the reason, naming them (not a Failed test).
        for list in [
            "::ffff:10.0.0.0/104",
            "ff02::/16",
            "::1/128",
            "::/128",
            "224.0.0.0/4",
        ] {
            let e = plan(&params("200", "253", list, Some("0"), "")).expect_err(list);
            assert!(
                e.contains(list) && e.contains("kernel drops"),
                "{list}: {e}"
            );
        }
    }
}
