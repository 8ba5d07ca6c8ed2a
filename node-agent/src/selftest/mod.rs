//! The agent's proof that TOA works on its node: after every load or adoption it plays a
//! load balancer for one handshake in a private network namespace and checks what a server
//! application sees.
//!
//! - [`plan`] decides, from the loaded module's parameters, which option kinds, balancer
//!   address and listening port the test must use so the module is in scope (pure).
//!   The transport is IPv4, or IPv6 when the trusted sources are IPv6 networks only.
//! - [`packet`] builds and parses the IPv4/TCP and IPv6/TCP segments (pure).
//! - [`netns`] runs the handshakes through a TUN device in a network namespace of its own
//!   thread, so nothing is visible to (or left in) the node's namespaces.
//!
//! The eBPF backend gets the same test (its parameters in the module's syntax, from
//! `crate::ebpf::self_test_params`): the application contract is the same.
//!
//! Every connection counts in the module's counters like any other (`syn_recv_sock_toa`,
//! `getname_toa_ok`, one `ip6_address_alloc`/`free` pair for the NAT64 case).

pub mod netns;
pub mod packet;
pub mod plan;

use std::fmt;

/// What one self-test found. `Display` is the text for the node status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every planned check saw the address the "balancer" sent.
    Passed { checks: Vec<String> },
    /// A check saw something else (or nothing): `seen` says what, for the status message.
    Failed { seen: String },
    /// The test could not run at all (no TUN device, no CAP_SYS_ADMIN, nothing in scope);
    /// not evidence against the module.
    Skipped { why: String },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed { checks } => write!(f, "passed: {}", checks.join("; ")),
            Outcome::Failed { seen } => write!(f, "failed: {seen}"),
            Outcome::Skipped { why } => write!(f, "skipped: {why}"),
        }
    }
}

/// Reads the loaded module's parameters that decide the test's scope.
pub fn module_params(host: &dyn crate::host::Host) -> plan::ModuleParams {
    let read = |name: &str| {
        host.read_to_string(
            &std::path::Path::new("/sys/module")
                .join(crate::MODULE_NAME)
                .join("parameters")
                .join(name),
        )
        .ok()
        .map(|s| s.trim().to_string())
    };
    plan::ModuleParams {
        ipv4_kinds: read("ipv4_kinds"),
        nat64_kinds: read("nat64_kinds"),
        trusted_sources: read("trusted_sources"),
        accept_any_source: read("accept_any_source"),
        ports: read("ports"),
    }
}

/// Plans and runs the self-test against the module loaded on `host`.
pub fn run(host: &dyn crate::host::Host) -> Outcome {
    run_with(host, &module_params(host))
}

/// Plans and runs the self-test for a backend whose parameters are `params` (the module's,
/// or the eBPF backend's in the module's syntax): the handshakes are the same, what serves
/// them is whichever backend is attached.
pub fn run_with(host: &dyn crate::host::Host, params: &plan::ModuleParams) -> Outcome {
    match plan::plan(params) {
        Ok(p) => host.run_self_test(&p),
        Err(why) => Outcome::Skipped { why },
    }
}
