//! The self-test's handshake machinery against this machine's own kernel, which has no TOA
//! module: the handshake must complete through the TUN device in a private namespace, and
//! the test must report that the server saw the balancer, not the client it claimed.
//! Needs root (CAP_SYS_ADMIN for the namespace) and /dev/net/tun; CI runs as root.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use toa_node_agent::selftest::netns;
use toa_node_agent::selftest::plan::{Handshake, Plan};
use toa_node_agent::selftest::Outcome;

fn plan(nat64: bool) -> Plan {
    Plan {
        balancer: IpAddr::V4(Ipv4Addr::new(10, 20, 0, 1)),
        node: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        port: 8080,
        handshakes: vec![Handshake {
            kind: if nat64 { 253 } else { 200 },
            nat64,
        }],
    }
}

/// The plan over IPv6 transport, as `plan::plan` makes it for `trusted_sources=fd00:10::/64`.
fn plan_v6(nat64: bool) -> Plan {
    Plan {
        balancer: "fd00:10::1".parse().expect("address"),
        node: "2001:db8::1".parse().expect("address"),
        ..plan(nat64)
    }
}

fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED: needs root and /dev/net/tun");
        return false;
    }
    true
}

#[test]
fn without_the_module_the_server_sees_the_balancer() {
    if !privileged() {
        return;
    }
    match netns::run(&plan(false), Duration::from_secs(3)) {
        Outcome::Failed { seen } => assert!(
            seen.contains("accept() returned 10.20.0.1:50000")
                && seen.contains("getpeername() 10.20.0.1:50000")
                && seen.contains("expected 192.0.2.77:40077"),
            "{seen}"
        ),
        other => panic!("expected Failed (no module on this kernel), got {other:?}"),
    }
}

#[test]
fn without_the_module_nat64_getsockopt_is_refused() {
    if !privileged() {
        return;
    }
    match netns::run(&plan(true), Duration::from_secs(3)) {
        Outcome::Failed { seen } => assert!(
            seen.contains("getsockopt(IPPROTO_IP, 4096) failed"),
            "{seen}"
        ),
        other => panic!("expected Failed (no module on this kernel), got {other:?}"),
    }
}

/// A host with IPv6 disabled (ipv6.disable=1, disable_ipv6) cannot run the IPv6 tests: the
/// self-test says so with a Skipped naming it, and nothing else may be Skipped.
fn ipv6_disabled(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Skipped { why }
            if why.contains("IPv6 is disabled") || why.contains("disable_ipv6") =>
        {
            eprintln!("SKIPPED: IPv6 is disabled on this host: {why}");
            true
        }
        _ => false,
    }
}

#[test]
fn over_ipv6_without_the_module_the_server_sees_the_balancer() {
    if !privileged() {
        return;
    }
    // The whole IPv6 path ran: address, route, AF_INET6 listener, SYN-ACK read back (past the
    // router solicitations and MLD reports the kernel sends), accept(); only the address is
    // not rewritten, as this kernel has no TOA.
    let outcome = netns::run(&plan_v6(false), Duration::from_secs(3));
    if ipv6_disabled(&outcome) {
        return;
    }
    match outcome {
        Outcome::Failed { seen } => assert!(
            seen.starts_with("kind 200 over IPv6 from [fd00:10::1]:")
                && seen.contains("accept() returned [fd00:10::1]:50000")
                && seen.contains("getpeername() [fd00:10::1]:50000")
                && seen.contains("expected [::ffff:192.0.2.77]:40077"),
            "{seen}"
        ),
        other => panic!("expected Failed (no module on this kernel), got {other:?}"),
    }
}

#[test]
fn over_ipv6_without_the_module_nat64_getsockopt_is_refused() {
    if !privileged() {
        return;
    }
    let outcome = netns::run(&plan_v6(true), Duration::from_secs(3));
    if ipv6_disabled(&outcome) {
        return;
    }
    match outcome {
        Outcome::Failed { seen } => assert!(
            seen.starts_with("kind 253 (NAT64) over IPv6 from [fd00:10::1]:")
                && seen.contains("getsockopt(IPPROTO_IP, 4096) failed"),
            "{seen}"
        ),
        other => panic!("expected Failed (no module on this kernel), got {other:?}"),
    }
}

#[test]
fn nothing_is_left_in_the_callers_namespace() {
    if !privileged() {
        return;
    }
    let before = std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev");
    let _ = netns::run(&plan(false), Duration::from_secs(3));
    let _ = netns::run(&plan_v6(false), Duration::from_secs(3));
    let after = std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev");
    assert!(!after.contains("toa-selftest"), "device leaked: {after}");
    assert_eq!(before.lines().count(), after.lines().count());
}
