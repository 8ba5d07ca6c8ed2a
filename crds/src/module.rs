//! Kernel module settings shared by ToaPolicy (what the user asks for) and
//! ToaNodeState (what the operator resolved for one node), their validation,
//! and their translation into `toa` module parameters.
//!
//! The same rules exist twice on purpose: as CEL in the CRD (the apiserver
//! refuses bad objects) and as Rust here (the agent's standalone `--desired`
//! file has no apiserver in front of it). A test checks both agree.

use std::fmt;
use std::net::IpAddr;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// TCP option kinds that a TOA kind must never reuse.
///
/// 0..=30 are assigned by IANA (EOL, NOP, MSS, window scale, SACK, timestamps,
/// MD5 (19), user timeout (28), TCP-AO (29), MPTCP (30) and the obsolete ones
/// in between: old middleboxes still act on them); 34 is TCP Fast Open, 69 is
/// TCP-ENO, 172 and 174 are AccECN. 253 and 254 are the RFC 4727 experimental
/// kinds and are exactly what TOA balancers use, so they stay allowed.
pub const RESERVED_OPTION_KINDS_MAX_LOW: u8 = 30;
/// Reserved kinds above [`RESERVED_OPTION_KINDS_MAX_LOW`].
pub const RESERVED_OPTION_KINDS_HIGH: [u8; 4] = [34, 69, 172, 174];

/// Default IPv4 TOA kind (Tencent Cloud hybrid cloud / SNAT balancers).
pub const DEFAULT_IPV4_KIND: u8 = 200;
/// Default NAT64 TOA kind.
pub const DEFAULT_NAT64_KIND: u8 = 253;
/// At most this many kinds per family (the module keeps a small table).
pub const MAX_KINDS: usize = 8;
/// At most this many trusted networks: keeps the joined parameter well under
/// the kernel's 1024-byte limit for a string module parameter.
pub const MAX_TRUSTED_SOURCES: usize = 16;
/// Longest CIDR text (full IPv6 with prefix is 43 characters).
pub const MAX_CIDR_LEN: usize = 49;

/// Module parameter names understood by the `toa` kernel module.
pub const PARAM_IPV4_KINDS: &str = "ipv4_kinds";
/// See [`PARAM_IPV4_KINDS`].
pub const PARAM_NAT64_KINDS: &str = "nat64_kinds";
/// See [`PARAM_IPV4_KINDS`].
pub const PARAM_TRUSTED_SOURCES: &str = "trusted_sources";
/// See [`PARAM_IPV4_KINDS`]: `1` accepts TOA from every source while
/// `trusted_sources` is empty (the module's default `0` trusts nothing).
pub const PARAM_ACCEPT_ANY_SOURCE: &str = "accept_any_source";
/// See [`PARAM_IPV4_KINDS`]: local ports in scope, `80,8000-8100` (empty = all).
pub const PARAM_PORTS: &str = "ports";
/// At most this many `ports` entries (the module keeps 64).
pub const MAX_PORT_RANGES: usize = 64;

/// True when `kind` is a standard TCP option kind that TOA must not use.
pub fn is_reserved_option_kind(kind: u8) -> bool {
    kind <= RESERVED_OPTION_KINDS_MAX_LOW || RESERVED_OPTION_KINDS_HIGH.contains(&kind)
}

fn default_ipv4_kinds() -> Vec<u8> {
    vec![DEFAULT_IPV4_KIND]
}

fn default_nat64_kinds() -> Vec<u8> {
    vec![DEFAULT_NAT64_KIND]
}

// The CEL text below is the apiserver's copy of `ModuleSettings::validate`.
// Messages are kept identical so users see the same words from both.

/// Which TCP option kinds the module accepts and from which balancers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::kubernetes_integer_formats)]
#[x_kube(validation = Rule::new(
    "size(self.ipv4OptionKinds) + size(self.nat64OptionKinds) > 0"
).message("ipv4OptionKinds and nat64OptionKinds are both empty: list at least one option kind (an empty list switches that address type off)"))]
pub struct ModuleSettings {
    /// TCP option kinds carrying an IPv4 client address (length 8). Default [200]. An empty
    /// list switches IPv4 TOA off. Over either transport: on an IPv6 connection
    /// (`AF_INET6` listener) accept()/getpeername() return it as `::ffff:a.b.c.d`. A kind may
    /// also be in nat64OptionKinds: the module tells the two apart by the option's length
    /// (8 or 20), as 254-for-both balancers need. Rule table: kmod/README.md.
    #[serde(default = "default_ipv4_kinds")]
    #[schemars(length(min = 0, max = 8), inner(range(min = 2, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(
        "self.all(k, !(k <= 30 || k in [34, 69, 172, 174]))"
    ).message("option kinds 0-30, 34, 69, 172 and 174 are standard TCP options; use 200, 253, 254 or another unassigned kind"))]
    pub ipv4_option_kinds: Vec<u8>,
    /// TCP option kinds carrying an IPv6 client address (length 20). Default [253]. An empty
    /// list switches them off. On a connection over IPv6 (dual-stack and IPv6-only clusters)
    /// accept()/getpeername() return that `[address]:port`; on one over IPv4 (NAT64) only
    /// getsockopt(IPPROTO_IP, 4096) does. Rule table: kmod/README.md.
    #[serde(default = "default_nat64_kinds")]
    #[schemars(length(min = 0, max = 8), inner(range(min = 2, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(
        "self.all(k, !(k <= 30 || k in [34, 69, 172, 174]))"
    ).message("option kinds 0-30, 34, 69, 172 and 174 are standard TCP options; use 200, 253, 254 or another unassigned kind"))]
    pub nat64_option_kinds: Vec<u8>,
    /// Balancer networks (IPv4/IPv6 CIDRs) allowed to send TOA options: the
    /// source address the node sees on the balancer's packets (the balancer's
    /// own address, or with kube-proxy SNAT (`externalTrafficPolicy: Cluster`)
    /// the node addresses of the cluster). Empty: TOA is accepted from no
    /// source unless acceptFromAnySource is true.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(max = 49)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    // Compared as text: Kubernetes 1.31's CEL cost estimator cannot bound the equality of two
    // CIDR values (`cidr(c) == cidr(c).masked()`) and refuses the whole CRD; the text of the
    // masked CIDR equals the entry only without host bits and in canonical form.
    #[x_kube(validation = Rule::new(
        "self.all(c, isCIDR(c) && string(cidr(c).masked()) == c)"
    ).message("trustedSources entries must be CIDRs with no host bits set, in canonical form, such as 10.0.0.0/8 or 2001:db8::/32"))]
    pub trusted_sources: Vec<String>,
    /// Accept TOA from every source while trustedSources is empty. Any host
    /// that reaches a port in scope can then choose the client address
    /// applications see; the policy reports it in its TrustWarning condition.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_from_any_source: bool,
    /// Local listening ports whose connections may carry TOA (the services
    /// behind the balancer). Empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ports: Vec<PortRange>,
}

/// One local port, or the range `port..=endPort`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.endPort) || self.endPort >= self.port").message("endPort must not be below port"))]
pub struct PortRange {
    /// First port, 1..65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Last port of the range (inclusive), >= port. Absent: just `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub end_port: Option<u16>,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end_port {
            Some(end) if end != self.port => write!(f, "{}-{end}", self.port),
            _ => write!(f, "{}", self.port),
        }
    }
}

impl Default for ModuleSettings {
    fn default() -> Self {
        Self {
            ipv4_option_kinds: default_ipv4_kinds(),
            nat64_option_kinds: default_nat64_kinds(),
            trusted_sources: Vec::new(),
            accept_from_any_source: false,
            ports: Vec::new(),
        }
    }
}

/// Why a [`ModuleSettings`] is unusable. Each message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A list of kinds is too long.
    #[error("{field} must list at most {MAX_KINDS} option kinds, found {found}")]
    KindCount {
        /// camelCase field name.
        field: &'static str,
        /// Number of entries found.
        found: usize,
    },
    /// A kind below 2 or a standard TCP option kind.
    #[error("{field}: option kind {kind} is a standard TCP option (0-30, 34, 69, 172 and 174 are refused); use 200, 253, 254 or another unassigned kind")]
    ReservedKind {
        /// camelCase field name.
        field: &'static str,
        /// The refused kind.
        kind: u8,
    },
    /// The same kind listed twice in one family.
    #[error("{field}: option kind {kind} is listed twice")]
    DuplicateKind {
        /// camelCase field name.
        field: &'static str,
        /// The duplicated kind.
        kind: u8,
    },
    /// Both lists empty: the module would read no option at all.
    #[error("ipv4OptionKinds and nat64OptionKinds are both empty: list at least one option kind (an empty list switches that address type off)")]
    NoKinds,
    /// Too many trusted networks.
    #[error("trustedSources lists {0} networks, at most {MAX_TRUSTED_SOURCES} are allowed: merge them into wider prefixes")]
    TooManySources(usize),
    /// Not a CIDR, or host bits set.
    #[error("trustedSources entry {entry:?} is not usable: {problem}; write it like 10.0.0.0/8 or 2001:db8::/32")]
    BadCidr {
        /// The offending text.
        entry: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The same network twice.
    #[error("trustedSources entry {0:?} is listed twice")]
    DuplicateSource(String),
    /// Too many port entries.
    #[error(
        "ports lists {0} entries, at most {MAX_PORT_RANGES} are allowed: merge them into ranges"
    )]
    TooManyPorts(usize),
    /// Port 0, or a range that ends before it starts.
    #[error("ports entry {0} is not usable: ports are 1-65535 and endPort must not be below port")]
    BadPort(String),
}

/// A parsed, canonical network prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// Network address (host bits are zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parse `a.b.c.d/n` or `v6addr/n`; refuses host bits, zones, IPv4-mapped IPv6, and text
/// that is not the canonical form of the prefix.
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| "missing /prefix length".to_string())?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return Err(format!("prefix length {prefix:?} is not a number"));
    }
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("prefix length {prefix:?} is not a number"))?;
    // Host bits are the bits after the prefix; `checked_shr` yields None
    // for a full-length prefix, which has no host bits.
    let host_bits_set = match addr {
        IpAddr::V4(a) => {
            if prefix > 32 {
                return Err(format!("prefix length {prefix} exceeds 32"));
            }
            u32::from(a) & u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0) != 0
        }
        IpAddr::V6(a) => {
            if a.to_ipv4_mapped().is_some() {
                return Err(
                    "IPv4-mapped IPv6 prefixes are not accepted; write the IPv4 prefix".into(),
                );
            }
            if prefix > 128 {
                return Err(format!("prefix length {prefix} exceeds 128"));
            }
            u128::from(a) & u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0) != 0
        }
    };
    if host_bits_set {
        return Err(format!("host bits are set after /{prefix}"));
    }
    // The CRD compares the entry with the canonical text of its prefix (lower-case, shortest
    // IPv6 form, no leading zeros): agree with it.
    let canonical = format!("{addr}/{prefix}");
    if canonical != text {
        return Err(format!("not in canonical form: write {canonical}"));
    }
    Ok(Cidr { addr, prefix })
}

impl ModuleSettings {
    /// Check every rule the CRD's schema and CEL rules enforce.
    pub fn validate(&self) -> Result<(), SettingsError> {
        check_kinds("ipv4OptionKinds", &self.ipv4_option_kinds)?;
        check_kinds("nat64OptionKinds", &self.nat64_option_kinds)?;
        // One kind in both lists is fine: the module tells the families apart by length.
        if self.ipv4_option_kinds.is_empty() && self.nat64_option_kinds.is_empty() {
            return Err(SettingsError::NoKinds);
        }
        if self.trusted_sources.len() > MAX_TRUSTED_SOURCES {
            return Err(SettingsError::TooManySources(self.trusted_sources.len()));
        }
        let mut seen = Vec::with_capacity(self.trusted_sources.len());
        for entry in &self.trusted_sources {
            if entry.len() > MAX_CIDR_LEN {
                return Err(SettingsError::BadCidr {
                    entry: entry.clone(),
                    problem: format!("longer than {MAX_CIDR_LEN} characters"),
                });
            }
            parse_cidr(entry).map_err(|problem| SettingsError::BadCidr {
                entry: entry.clone(),
                problem,
            })?;
            if seen.contains(&entry) {
                return Err(SettingsError::DuplicateSource(entry.clone()));
            }
            seen.push(entry);
        }
        if self.ports.len() > MAX_PORT_RANGES {
            return Err(SettingsError::TooManyPorts(self.ports.len()));
        }
        if let Some(p) = self
            .ports
            .iter()
            .find(|p| p.port == 0 || p.end_port.is_some_and(|e| e < p.port))
        {
            return Err(SettingsError::BadPort(format!(
                "port {} endPort {:?}",
                p.port, p.end_port
            )));
        }
        Ok(())
    }

    /// Canonical form: kinds sorted ascending and deduplicated, networks
    /// deduplicated in the order given. Two policies that mean the same thing
    /// resolve to equal settings, so no node is touched for a reordering.
    pub fn normalized(&self) -> Self {
        let mut ipv4 = self.ipv4_option_kinds.clone();
        ipv4.sort_unstable();
        ipv4.dedup();
        let mut nat64 = self.nat64_option_kinds.clone();
        nat64.sort_unstable();
        nat64.dedup();
        let mut sources: Vec<String> = Vec::with_capacity(self.trusted_sources.len());
        for s in &self.trusted_sources {
            if !sources.contains(s) {
                sources.push(s.clone());
            }
        }
        let mut ports: Vec<PortRange> = self
            .ports
            .iter()
            .map(|p| PortRange {
                port: p.port,
                end_port: p.end_port.filter(|e| *e != p.port),
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Self {
            ipv4_option_kinds: ipv4,
            nat64_option_kinds: nat64,
            trusted_sources: sources,
            accept_from_any_source: self.accept_from_any_source,
            ports,
        }
    }

    /// The `toa` module parameters for these settings, in a fixed order:
    /// `ipv4_kinds`, `nat64_kinds`, `trusted_sources`, `accept_any_source`
    /// (`0`/`1`), `ports` (empty value = every port).
    /// Values are comma-joined from [`Self::normalized`].
    pub fn module_parameters(&self) -> Vec<(&'static str, String)> {
        let n = self.normalized();
        let join = |kinds: &[u8]| {
            kinds
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        vec![
            (PARAM_IPV4_KINDS, join(&n.ipv4_option_kinds)),
            (PARAM_NAT64_KINDS, join(&n.nat64_option_kinds)),
            (PARAM_TRUSTED_SOURCES, n.trusted_sources.join(",")),
            (
                PARAM_ACCEPT_ANY_SOURCE,
                u8::from(n.accept_from_any_source).to_string(),
            ),
            (
                PARAM_PORTS,
                n.ports
                    .iter()
                    .map(PortRange::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]
    }

    /// `name=value` arguments for `insmod`/`modprobe`, e.g. `ipv4_kinds=200,254`.
    /// Parameters at the module's default are left out: empty `trusted_sources` and `ports`,
    /// `accept_any_source=0`. An empty kinds list is passed as `ipv4_kinds=` because the
    /// module's default for it is not empty.
    pub fn module_arguments(&self) -> Vec<String> {
        self.module_parameters()
            .into_iter()
            .filter(|(k, v)| {
                let module_default = (v.is_empty()
                    && (*k == PARAM_TRUSTED_SOURCES || *k == PARAM_PORTS))
                    || (*k == PARAM_ACCEPT_ANY_SOURCE && v == "0");
                !module_default
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

fn check_kinds(field: &'static str, kinds: &[u8]) -> Result<(), SettingsError> {
    if kinds.len() > MAX_KINDS {
        return Err(SettingsError::KindCount {
            field,
            found: kinds.len(),
        });
    }
    for (i, k) in kinds.iter().enumerate() {
        if is_reserved_option_kind(*k) {
            return Err(SettingsError::ReservedKind { field, kind: *k });
        }
        if kinds[..i].contains(k) {
            return Err(SettingsError::DuplicateKind { field, kind: *k });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_kinds() {
        for k in 0..=30u8 {
            assert!(is_reserved_option_kind(k), "{k}");
        }
        for k in [34u8, 69, 172, 174] {
            assert!(is_reserved_option_kind(k));
        }
        for k in [31u8, 32, 33, 35, 128, 200, 253, 254, 255] {
            assert!(!is_reserved_option_kind(k), "{k}");
        }
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.0.0.0/8").map(|c| c.prefix), Ok(8));
        assert!(parse_cidr("0.0.0.0/0").is_ok());
        assert!(parse_cidr("::/0").is_ok());
        assert!(parse_cidr("2001:db8::/32").is_ok());
        assert!(parse_cidr("192.168.1.7/32").is_ok());
        assert!(parse_cidr("fd00::1/128").is_ok());
        assert_eq!(
            parse_cidr("10.0.0.1/8"),
            Err("host bits are set after /8".into())
        );
        assert_eq!(
            parse_cidr("2001:db8::1/64"),
            Err("host bits are set after /64".into())
        );
        assert!(parse_cidr("10.0.0.0")
            .unwrap_err()
            .contains("missing /prefix"));
        assert!(parse_cidr("10.0.0.0/33")
            .unwrap_err()
            .contains("exceeds 32"));
        assert!(parse_cidr("::/129").unwrap_err().contains("exceeds 128"));
        assert!(parse_cidr("10.0.0.0/+8").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
        assert!(parse_cidr("::ffff:10.0.0.0/104").is_err());
        assert!(parse_cidr("10.0.0.0/").is_err());
    }

    #[test]
    fn validate_rules() {
        assert_eq!(ModuleSettings::default().validate(), Ok(()));
        // 254 for both families (told apart by length) and one family switched off are valid.
        let mut s = ModuleSettings {
            ipv4_option_kinds: vec![254],
            nat64_option_kinds: vec![254],
            ..ModuleSettings::default()
        };
        assert_eq!(s.validate(), Ok(()));
        s.nat64_option_kinds = vec![];
        assert_eq!(s.validate(), Ok(()));
        s.ipv4_option_kinds = vec![];
        assert_eq!(s.validate(), Err(SettingsError::NoKinds));
        s.nat64_option_kinds = vec![253];
        s.ipv4_option_kinds = vec![28];
        assert_eq!(
            s.validate(),
            Err(SettingsError::ReservedKind {
                field: "ipv4OptionKinds",
                kind: 28
            })
        );
        s.ipv4_option_kinds = vec![200; 9];
        assert!(matches!(
            s.validate(),
            Err(SettingsError::KindCount { found: 9, .. })
        ));
        s.ipv4_option_kinds = vec![200, 200];
        assert!(matches!(
            s.validate(),
            Err(SettingsError::DuplicateKind { kind: 200, .. })
        ));
        s.ipv4_option_kinds = vec![200];
        s.trusted_sources = vec!["10.1.2.3/16".into()];
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("host bits"), "{err}");
        assert!(err.contains("10.0.0.0/8"), "{err}");
        s.trusted_sources = vec!["10.0.0.0/8".into(), "10.0.0.0/8".into()];
        assert_eq!(
            s.validate(),
            Err(SettingsError::DuplicateSource("10.0.0.0/8".into()))
        );
        s.trusted_sources = vec![];
        s.ports = vec![PortRange {
            port: 9000,
            end_port: Some(8000),
        }];
        assert!(matches!(s.validate(), Err(SettingsError::BadPort(_))));
        s.ports = vec![PortRange {
            port: 0,
            end_port: None,
        }];
        assert!(matches!(s.validate(), Err(SettingsError::BadPort(_))));
        s.ports = vec![
            PortRange {
                port: 1,
                end_port: None
            };
            65
        ];
        assert_eq!(s.validate(), Err(SettingsError::TooManyPorts(65)));
    }

    #[test]
    fn parameters() {
        let s = ModuleSettings {
            ipv4_option_kinds: vec![254, 200, 254],
            nat64_option_kinds: vec![253],
            trusted_sources: vec!["10.0.0.0/8".into(), "fd00::/8".into(), "10.0.0.0/8".into()],
            accept_from_any_source: false,
            ports: vec![
                PortRange {
                    port: 8000,
                    end_port: Some(8100),
                },
                PortRange {
                    port: 443,
                    end_port: Some(443),
                },
            ],
        };
        assert_eq!(
            s.module_parameters(),
            vec![
                ("ipv4_kinds", "200,254".to_string()),
                ("nat64_kinds", "253".to_string()),
                ("trusted_sources", "10.0.0.0/8,fd00::/8".to_string()),
                ("accept_any_source", "0".to_string()),
                ("ports", "443,8000-8100".to_string()),
            ]
        );
        let any = ModuleSettings {
            accept_from_any_source: true,
            ..ModuleSettings::default()
        };
        assert_eq!(
            any.module_arguments(),
            vec![
                "ipv4_kinds=200".to_string(),
                "nat64_kinds=253".to_string(),
                "accept_any_source=1".to_string()
            ]
        );
        assert_eq!(
            ModuleSettings::default().module_arguments(),
            vec!["ipv4_kinds=200".to_string(), "nat64_kinds=253".to_string()]
        );
        let v4_only = ModuleSettings {
            nat64_option_kinds: vec![],
            ..ModuleSettings::default()
        };
        assert_eq!(
            v4_only.module_arguments(),
            vec!["ipv4_kinds=200".to_string(), "nat64_kinds=".to_string()]
        );
    }
}
