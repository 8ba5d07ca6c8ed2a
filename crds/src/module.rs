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
    "self.ipv4OptionKinds.all(k, !(k in self.nat64OptionKinds))"
).message("ipv4OptionKinds and nat64OptionKinds must not share a kind: the module parses a kind as one family only"))]
pub struct ModuleSettings {
    /// TCP option kinds carrying an IPv4 address (length 8). Default [200].
    #[serde(default = "default_ipv4_kinds")]
    #[schemars(length(min = 1, max = 8), inner(range(min = 2, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(
        "self.all(k, !(k <= 30 || k in [34, 69, 172, 174]))"
    ).message("option kinds 0-30, 34, 69, 172 and 174 are standard TCP options; use 200, 253, 254 or another unassigned kind"))]
    pub ipv4_option_kinds: Vec<u8>,
    /// TCP option kinds carrying a NAT64 IPv6 address (length 20). Default [253].
    #[serde(default = "default_nat64_kinds")]
    #[schemars(length(min = 1, max = 8), inner(range(min = 2, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(
        "self.all(k, !(k <= 30 || k in [34, 69, 172, 174]))"
    ).message("option kinds 0-30, 34, 69, 172 and 174 are standard TCP options; use 200, 253, 254 or another unassigned kind"))]
    pub nat64_option_kinds: Vec<u8>,
    /// Balancer networks (IPv4/IPv6 CIDRs) allowed to send TOA options.
    /// Empty: accept TOA from any source.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(max = 49)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(
        "self.all(c, isCIDR(c) && cidr(c) == cidr(c).masked())"
    ).message("trustedSources entries must be CIDRs with no host bits set, such as 10.0.0.0/8 or 2001:db8::/32"))]
    pub trusted_sources: Vec<String>,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        Self {
            ipv4_option_kinds: default_ipv4_kinds(),
            nat64_option_kinds: default_nat64_kinds(),
            trusted_sources: Vec::new(),
        }
    }
}

/// Why a [`ModuleSettings`] is unusable. Each message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A list of kinds is empty or too long.
    #[error("{field} must list 1 to {MAX_KINDS} option kinds, found {found}")]
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
    /// A kind in both families.
    #[error("option kind {0} is in both ipv4OptionKinds and nat64OptionKinds: the module parses a kind as one family only")]
    SharedKind(u8),
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

/// Parse `a.b.c.d/n` or `v6addr/n`; refuses host bits, zones, and IPv4-mapped IPv6.
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
    Ok(Cidr { addr, prefix })
}

impl ModuleSettings {
    /// Check every rule the CRD's schema and CEL rules enforce.
    pub fn validate(&self) -> Result<(), SettingsError> {
        check_kinds("ipv4OptionKinds", &self.ipv4_option_kinds)?;
        check_kinds("nat64OptionKinds", &self.nat64_option_kinds)?;
        if let Some(k) = self
            .ipv4_option_kinds
            .iter()
            .find(|k| self.nat64_option_kinds.contains(k))
        {
            return Err(SettingsError::SharedKind(*k));
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
        Self {
            ipv4_option_kinds: ipv4,
            nat64_option_kinds: nat64,
            trusted_sources: sources,
        }
    }

    /// The `toa` module parameters for these settings, in a fixed order:
    /// `ipv4_kinds`, `nat64_kinds`, `trusted_sources` (empty value = any source).
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
        ]
    }

    /// `name=value` arguments for `insmod`/`modprobe`, e.g. `ipv4_kinds=200,254`.
    /// `trusted_sources` is left out when empty (the module default is empty).
    pub fn module_arguments(&self) -> Vec<String> {
        self.module_parameters()
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

fn check_kinds(field: &'static str, kinds: &[u8]) -> Result<(), SettingsError> {
    if kinds.is_empty() || kinds.len() > MAX_KINDS {
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
        let mut s = ModuleSettings {
            ipv4_option_kinds: vec![200, 253],
            ..ModuleSettings::default()
        };
        assert_eq!(s.validate(), Err(SettingsError::SharedKind(253)));
        s.ipv4_option_kinds = vec![28];
        assert_eq!(
            s.validate(),
            Err(SettingsError::ReservedKind {
                field: "ipv4OptionKinds",
                kind: 28
            })
        );
        s.ipv4_option_kinds = vec![];
        assert!(matches!(
            s.validate(),
            Err(SettingsError::KindCount { found: 0, .. })
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
    }

    #[test]
    fn parameters() {
        let s = ModuleSettings {
            ipv4_option_kinds: vec![254, 200, 254],
            nat64_option_kinds: vec![253],
            trusted_sources: vec!["10.0.0.0/8".into(), "fd00::/8".into(), "10.0.0.0/8".into()],
        };
        assert_eq!(
            s.module_parameters(),
            vec![
                ("ipv4_kinds", "200,254".to_string()),
                ("nat64_kinds", "253".to_string()),
                ("trusted_sources", "10.0.0.0/8,fd00::/8".to_string()),
            ]
        );
        assert_eq!(
            ModuleSettings::default().module_arguments(),
            vec!["ipv4_kinds=200".to_string(), "nat64_kinds=253".to_string()]
        );
    }
}
