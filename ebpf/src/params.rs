//! Runtime parameters of the eBPF backend: the same names, syntax and defaults as the kernel
//! module's parameters (kmod/README.md "Parameters"), turned into the `toa_config` map value
//! whose C layout is `struct toa_config` in `ebpf/bpf/toa_ebpf.h`.

use std::net::{IpAddr, Ipv6Addr};

/// Entries of `trusted_sources` at most (kmod `TOA_MAX_TRUSTED`).
pub const MAX_TRUSTED: usize = 64;
/// Entries of `ports` at most (kmod `TOA_MAX_PORT_RANGES`).
pub const MAX_PORT_RANGES: usize = 64;

/// A parameter value that cannot be used; the message names the parameter, the bad token and
/// what to write instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    /// `ipv4_kinds` / `nat64_kinds`: a token that is not a kind 2..=255 in at most 3 digits.
    #[error("{param}: {token:?} is not an option kind: write decimal kinds 2..255, comma separated (e.g. 200,254)")]
    Kind { param: &'static str, token: String },
    /// `trusted_sources`: a token that is not an IPv4 or IPv6 CIDR, or has host bits set.
    #[error("trusted_sources: {token:?}: {why}: write CIDRs such as 10.0.0.0/8, 192.0.2.7 or fd00:10::/64")]
    Trusted { token: String, why: &'static str },
    /// `trusted_sources`: more than [`MAX_TRUSTED`] entries.
    #[error("trusted_sources: {0} entries, at most 64")]
    TooManyTrusted(usize),
    /// `ports`: a token that is not a port 1..=65535 or a LOW-HIGH range with LOW <= HIGH.
    #[error("ports: {token:?} is not a port 1..65535 or a LOW-HIGH range (e.g. 443,8000-8100)")]
    Port { token: String },
    /// `ports`: more than [`MAX_PORT_RANGES`] entries.
    #[error("ports: {0} entries, at most 64")]
    TooManyPorts(usize),
    /// `dup_rule`: not one of reject, first, last.
    #[error("dup_rule: {0:?} is not one of reject, first, last")]
    DupRule(String),
}

/// Which option a segment with several valid TOA options yields (`enum toa_dup_rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DupRule {
    /// None: the segment is ambiguous (counted `toa_ambiguous`). The default.
    #[default]
    Reject = 0,
    /// The first valid option.
    First = 1,
    /// The last valid option.
    Last = 2,
}

impl std::str::FromStr for DupRule {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, ParamError> {
        match s {
            "reject" => Ok(Self::Reject),
            "first" => Ok(Self::First),
            "last" => Ok(Self::Last),
            other => Err(ParamError::DupRule(other.to_owned())),
        }
    }
}

/// A network of `trusted_sources`, e.g. `10.0.0.0/8` or `fd00:10::/64`. IPv4 balancers are
/// matched against the IPv4 entries only, IPv6 ones against the IPv6 entries only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (no bits beyond the prefix).
    pub addr: IpAddr,
    /// The prefix length, 0..=32 (IPv4) or 0..=128 (IPv6).
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    /// The module's readback: `10.0.0.0/8`, `192.0.2.7/32`, compressed IPv6 (`fd00::/120`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The parameters of the backend, parsed and validated. `Default` is the module's default:
/// kinds 200 (IPv4) and 253 (NAT64), no trusted source, every port, `dup_rule=reject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Kinds carrying an IPv4 TOA (length 8), in the given order, without duplicates.
    pub ipv4_kinds: Vec<u8>,
    /// Kinds carrying a NAT64 TOA (length 20).
    pub nat64_kinds: Vec<u8>,
    /// Networks whose packets may carry a TOA; empty = none unless `accept_any_source`.
    pub trusted_sources: Vec<Cidr>,
    /// Accept TOA from every source while `trusted_sources` is empty.
    pub accept_any_source: bool,
    /// Local port ranges in scope (inclusive); empty = every port.
    pub ports: Vec<(u16, u16)>,
    /// What a segment with several valid TOA options yields.
    pub dup_rule: DupRule,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            ipv4_kinds: vec![200],
            nat64_kinds: vec![253],
            trusted_sources: Vec::new(),
            accept_any_source: false,
            ports: Vec::new(),
            dup_rule: DupRule::Reject,
        }
    }
}

fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// Parses a kinds list such as `"200,254"` (`ipv4_kinds` / `nat64_kinds` syntax); duplicates
/// are dropped, the order kept. `param` names the parameter in errors.
pub fn parse_kinds(param: &'static str, s: &str) -> Result<Vec<u8>, ParamError> {
    let mut out = Vec::new();
    for t in tokens(s) {
        let bad = || ParamError::Kind {
            param,
            token: t.to_owned(),
        };
        if t.len() > 3 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let k: u16 = t.parse().map_err(|_| bad())?;
        let k = u8::try_from(k).map_err(|_| bad())?;
        if k < 2 {
            return Err(bad());
        }
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

/// Parses `trusted_sources`: `"10.0.0.0/8,192.0.2.7,fd00:10::/64"` (the module's syntax: an
/// address without a prefix is a /32 or /128; bits beyond the prefix are an error).
pub fn parse_trusted(s: &str) -> Result<Vec<Cidr>, ParamError> {
    let mut out = Vec::new();
    for t in tokens(s) {
        let bad = |why| ParamError::Trusted {
            token: t.to_owned(),
            why,
        };
        let (a, p) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad("bad prefix length"))?
            }
            Some(_) => return Err(bad("bad prefix length")),
        };
        if prefix > max {
            return Err(bad(if addr.is_ipv4() {
                "prefix length above 32"
            } else {
                "prefix length above 128"
            }));
        }
        let host_bits = match addr {
            IpAddr::V4(a) => u32::from(a) & !mask(prefix) != 0,
            IpAddr::V6(a) => u128::from(a) & !mask6(prefix) != 0,
        };
        if host_bits {
            return Err(bad(
                "address bits beyond the prefix (write the network address)",
            ));
        }
        out.push(Cidr { addr, prefix });
    }
    if out.len() > MAX_TRUSTED {
        return Err(ParamError::TooManyTrusted(out.len()));
    }
    Ok(out)
}

/// Parses `ports`: `"443,8000-8100"` into inclusive ranges.
pub fn parse_ports(s: &str) -> Result<Vec<(u16, u16)>, ParamError> {
    let mut out = Vec::new();
    for t in tokens(s) {
        let bad = || ParamError::Port {
            token: t.to_owned(),
        };
        let one = |x: &str| -> Result<u16, ParamError> {
            if x.is_empty() || x.len() > 5 || !x.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match x.parse::<u16>() {
                Ok(p) if p >= 1 => Ok(p),
                _ => Err(bad()),
            }
        };
        let (lo, hi) = match t.split_once('-') {
            Some((l, h)) => (one(l)?, one(h)?),
            None => {
                let p = one(t)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(bad());
        }
        out.push((lo, hi));
    }
    if out.len() > MAX_PORT_RANGES {
        return Err(ParamError::TooManyPorts(out.len()));
    }
    Ok(out)
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

/// An IPv6 address (or mask) as the four network-order words of `struct toa_cidr6`.
fn words6(v: u128) -> [u32; 4] {
    let b = Ipv6Addr::from(v).octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    })
}

/// `struct toa_config` of `ebpf/bpf/toa_ebpf.h`, byte for byte (10832 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawConfig {
    /// Bit k of the 256-bit set: kind k is an IPv4 TOA kind.
    pub ipv4_kinds: [u32; 8],
    /// Bit k: kind k is a NAT64 TOA kind.
    pub nat64_kinds: [u32; 8],
    /// Used entries of `trusted4`.
    pub n_trusted: u32,
    /// 1: accept every source while `n_trusted == 0`.
    pub accept_any: u8,
    /// [`DupRule`] as a number.
    pub dup_rule: u8,
    /// 0: every port; otherwise the number of ranges (the bitmap decides).
    pub n_ports: u16,
    /// (address, mask) pairs in network byte order.
    pub trusted4: [[u32; 2]; MAX_TRUSTED],
    /// Bit p: local port p is in scope.
    pub ports: [u32; 2048],
    /// Used entries of `trusted6`.
    pub n_trusted6: u32,
    /// Padding (0).
    pub pad6: u32,
    /// (address, mask) of the IPv6 entries, each four network-order words.
    pub trusted6: [[[u32; 4]; 2]; MAX_TRUSTED],
}

// SAFETY: RawConfig is repr(C), Copy, has no padding (every field is naturally aligned and
// the sizes add up, checked by the size test) and every bit pattern is valid.
unsafe impl aya::Pod for RawConfig {}

impl Params {
    /// The map value for these parameters.
    pub fn to_raw(&self) -> Box<RawConfig> {
        let mut c = Box::new(RawConfig {
            ipv4_kinds: [0; 8],
            nat64_kinds: [0; 8],
            n_trusted: 0,
            accept_any: u8::from(self.accept_any_source),
            dup_rule: self.dup_rule as u8,
            n_ports: 0,
            trusted4: [[0; 2]; MAX_TRUSTED],
            ports: [0; 2048],
            n_trusted6: 0,
            pad6: 0,
            trusted6: [[[0; 4]; 2]; MAX_TRUSTED],
        });
        for &k in &self.ipv4_kinds {
            c.ipv4_kinds[usize::from(k >> 5)] |= 1 << (k & 31);
        }
        for &k in &self.nat64_kinds {
            c.nat64_kinds[usize::from(k >> 5)] |= 1 << (k & 31);
        }
        let (mut n4, mut n6) = (0usize, 0usize);
        for n in self.trusted_sources.iter().take(MAX_TRUSTED) {
            match n.addr {
                IpAddr::V4(a) => {
                    c.trusted4[n4] = [u32::from(a).to_be(), mask(n.prefix).to_be()];
                    n4 += 1;
                }
                IpAddr::V6(a) => {
                    c.trusted6[n6] = [words6(u128::from(a)), words6(mask6(n.prefix))];
                    n6 += 1;
                }
            }
        }
        c.n_trusted = n4 as u32;
        c.n_trusted6 = n6 as u32;
        c.n_ports = self.ports.len().min(MAX_PORT_RANGES) as u16;
        for &(lo, hi) in &self.ports {
            for p in lo..=hi {
                c.ports[usize::from(p >> 5)] |= 1 << (p & 31);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn raw_config_has_the_c_layout() {
        // 32 + 32 + 4 + 1 + 1 + 2 + 64 * 8 + 2048 * 4 + 4 + 4 + 64 * 32, the sizeof of
        // struct toa_config.
        assert_eq!(std::mem::size_of::<RawConfig>(), 10832);
        assert_eq!(std::mem::offset_of!(RawConfig, trusted4), 72);
        assert_eq!(std::mem::offset_of!(RawConfig, ports), 584);
        assert_eq!(std::mem::offset_of!(RawConfig, n_trusted6), 8776);
        assert_eq!(std::mem::offset_of!(RawConfig, trusted6), 8784);
    }

    #[test]
    fn kinds_parse_like_the_module() {
        assert_eq!(
            parse_kinds("ipv4_kinds", "200, 254,200"),
            Ok(vec![200, 254])
        );
        assert_eq!(parse_kinds("ipv4_kinds", ""), Ok(vec![]));
        for bad in ["1", "256", "0200", "x", "-3"] {
            assert!(
                matches!(parse_kinds("ipv4_kinds", bad), Err(ParamError::Kind { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn trusted_rejects_host_bits_and_names_the_fix() {
        assert_eq!(
            parse_trusted("10.0.0.0/8,192.0.2.7"),
            Ok(vec![
                Cidr {
                    addr: Ipv4Addr::new(10, 0, 0, 0).into(),
                    prefix: 8
                },
                Cidr {
                    addr: Ipv4Addr::new(192, 0, 2, 7).into(),
                    prefix: 32
                },
            ])
        );
        let e = parse_trusted("10.0.0.1/8").unwrap_err();
        assert!(e.to_string().contains("write the network address"), "{e}");
        assert!(parse_trusted("10.0.0.0/33").is_err());
    }

    #[test]
    fn trusted_takes_ipv6_cidrs_like_the_module() {
        assert_eq!(
            parse_trusted("fd00::/120, 2001:db8::7"),
            Ok(vec![
                Cidr {
                    addr: "fd00::".parse::<Ipv6Addr>().expect("v6").into(),
                    prefix: 120
                },
                Cidr {
                    addr: "2001:db8::7".parse::<Ipv6Addr>().expect("v6").into(),
                    prefix: 128
                },
            ])
        );
        let e = parse_trusted("fd00::1/64").unwrap_err();
        assert!(e.to_string().contains("write the network address"), "{e}");
        let e = parse_trusted("fd00::/129").unwrap_err();
        assert!(e.to_string().contains("above 128"), "{e}");
        assert!(parse_trusted("fd00::/1x").is_err());
        assert!(parse_trusted("fd00:::1").is_err());
    }

    #[test]
    fn raw_config_splits_ipv4_and_ipv6_sources() {
        let p = Params {
            trusted_sources: parse_trusted("10.0.0.0/16,fd00::/120,192.0.2.7,fd00:10::/64")
                .unwrap_or_default(),
            ..Params::default()
        };
        let raw = p.to_raw();
        assert_eq!((raw.n_trusted, raw.n_trusted6), (2, 2));
        assert_eq!(
            raw.trusted4[1],
            [u32::from_ne_bytes([192, 0, 2, 7]), u32::MAX]
        );
        // fd00::/120: words in network order, the mask's last word 0xffffff00.
        assert_eq!(
            raw.trusted6[0],
            [
                [u32::from_ne_bytes([0xfd, 0, 0, 0]), 0, 0, 0],
                [
                    u32::MAX,
                    u32::MAX,
                    u32::MAX,
                    u32::from_ne_bytes([0xff, 0xff, 0xff, 0])
                ]
            ]
        );
        assert_eq!(
            raw.trusted6[1][1],
            [u32::MAX, u32::MAX, 0, 0],
            "fd00:10::/64's mask"
        );
    }

    #[test]
    fn ports_and_raw_bitmaps() {
        assert_eq!(
            parse_ports("443,8000-8002"),
            Ok(vec![(443, 443), (8000, 8002)])
        );
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("9-8").is_err());
        assert!(parse_ports("70000").is_err());
        let p = Params {
            ports: vec![(443, 443), (8000, 8002)],
            trusted_sources: parse_trusted("10.0.0.0/24").unwrap_or_default(),
            ..Params::default()
        };
        let raw = p.to_raw();
        let bit = |p: u16| raw.ports[usize::from(p >> 5)] >> (p & 31) & 1;
        assert_eq!((bit(443), bit(444), bit(8002), bit(8003)), (1, 0, 1, 0));
        assert_eq!(raw.n_ports, 2);
        assert_eq!(raw.ipv4_kinds[200 >> 5] >> (200 & 31) & 1, 1);
        assert_eq!(raw.nat64_kinds[253 >> 5] >> (253 & 31) & 1, 1);
        assert_eq!(raw.n_trusted, 1);
        assert_eq!(
            raw.trusted4[0],
            [
                u32::from_ne_bytes([10, 0, 0, 0]),
                u32::from_ne_bytes([255, 255, 255, 0])
            ]
        );
    }
}
