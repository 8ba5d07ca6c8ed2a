//! Runs the self-test's handshakes for real: a thread of its own enters a new network
//! namespace (`unshare(CLONE_NEWNET)` affects only the calling thread), creates a TUN device
//! there, plays the balancer through it and reads what `accept()`, `getpeername()` and
//! `getsockopt(IPPROTO_IP, 4096)` return on the server side. When the thread ends, its
//! sockets (closed with RST), the device and the namespace go with it.
//!
//! Over IPv6 transport (a plan whose balancer is IPv6) the device gets the node's IPv6 address
//! and a host route to the balancer, and the listener is an `AF_INET6` socket: an IPv4 client
//! then shows as `[::ffff:a.b.c.d]:port`, and a NAT64 client is the peer itself (kmod/README.md,
//! "What an application sees"; the eBPF backend returns the same).

use super::packet::{self, Segment, FLAG_ACK, FLAG_RST, FLAG_SYN};
use super::plan::{Handshake, Plan, CLIENT_PORT, CLIENT_V4, CLIENT_V6};
use super::Outcome;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// `getsockopt(IPPROTO_IP, TOA_SO_GET_LOOKUP)` (kmod/toa.h).
const TOA_SO_GET_LOOKUP: libc::c_int = 4096;
/// `TUNSETIFF` = `_IOW('T', 202, int)` (include/uapi/linux/if_tun.h).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const DEVICE: &[u8] = b"toa-selftest";
/// First source port of the balancer's connections (one per handshake).
const BALANCER_PORT: u16 = 50000;

/// `struct ifreq` (include/uapi/linux/if.h): the name, then a 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new() -> Self {
        let mut name = [0u8; libc::IFNAMSIZ];
        name[..DEVICE.len()].copy_from_slice(DEVICE);
        Self {
            name,
            data: [0u8; 24],
        }
    }
    fn with_flags(flags: libc::c_short) -> Self {
        let mut r = Self::new();
        r.data[..2].copy_from_slice(&flags.to_ne_bytes());
        r
    }
    /// `struct sockaddr_in` for SIOCSIFADDR / SIOCSIFNETMASK.
    fn with_ipv4(addr: Ipv4Addr) -> Self {
        let mut r = Self::new();
        r.data[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        r.data[4..8].copy_from_slice(&addr.octets());
        r
    }
}

/// `ioctl(2)` with the request type of the C library at hand (glibc: unsigned long; musl,
/// which the static agent uses: int). Every request here is below 2^31.
///
/// # Safety
/// `arg` must point to the structure that `request` reads or writes.
unsafe fn ioctl<T>(fd: RawFd, request: libc::c_ulong, arg: *mut T) -> libc::c_int {
    // SAFETY: forwarded from the caller.
    unsafe { libc::ioctl(fd, request as _, arg) }
}

/// Why the test could not be run (setup), as opposed to what it saw.
enum Error {
    Setup(String),
    Seen(String),
}

fn setup(what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::Setup(format!("{what}: {e}"))
}

/// Runs `plan` in a private network namespace; every wait is bounded by `timeout`.
pub fn run(plan: &Plan, timeout: Duration) -> Outcome {
    let plan = plan.clone();
    let spawned = std::thread::Builder::new()
        .name("toa-selftest".into())
        .spawn(move || in_private_namespace(&plan, timeout));
    let result = match spawned {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| Err(Error::Setup("the self-test thread panicked".into()))),
        Err(e) => Err(Error::Setup(format!(
            "cannot start the self-test thread: {e}"
        ))),
    };
    match result {
        Ok(checks) => Outcome::Passed { checks },
        Err(Error::Seen(seen)) => Outcome::Failed { seen },
        Err(Error::Setup(why)) => Outcome::Skipped { why },
    }
}

fn in_private_namespace(plan: &Plan, timeout: Duration) -> Result<Vec<String>, Error> {
    // SAFETY: unshare has no memory effects; CLONE_NEWNET moves only this thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(Error::Setup(format!(
            "cannot create a network namespace (needs CAP_SYS_ADMIN): {}",
            io::Error::last_os_error()
        )));
    }
    let tun = open_tun()?;
    match (plan.node, plan.balancer) {
        (IpAddr::V4(node), IpAddr::V4(balancer)) => configure(node, balancer)?,
        (IpAddr::V6(node), IpAddr::V6(balancer)) => configure_v6(node, balancer)?,
        (node, balancer) => {
            return Err(Error::Setup(format!(
                "the node address {node} and the balancer {balancer} are of different families"
            )))
        }
    }
    let listener = listen(SocketAddr::new(plan.node, plan.port), timeout)?;
    let mut tun = tun;
    let mut checks = Vec::new();
    for (i, hs) in plan.handshakes.iter().enumerate() {
        let sport = BALANCER_PORT + i as u16;
        let (conn, accepted) = handshake(&mut tun, &listener, plan, hs, sport, timeout)?;
        let verdict = judge(&conn, accepted, hs, plan);
        close_with_reset(&conn);
        checks.push(verdict?);
    }
    Ok(checks)
}

fn open_tun() -> Result<File, Error> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(setup("cannot open /dev/net/tun"))?;
    let mut req = IfReq::with_flags(IFF_TUN | IFF_NO_PI);
    // SAFETY: TUNSETIFF reads and writes a struct ifreq that lives across the call.
    if unsafe { ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) } != 0 {
        return Err(Error::Setup(format!(
            "cannot create the TUN device: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(tun)
}

/// A datagram socket of `family` for the device ioctls (SIOCSIFADDR, SIOCSIFFLAGS, SIOCADDRT
/// act on the family of the socket they are issued on).
fn config_socket(family: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned by the OwnedFd below.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Brings the TUN device up (SIOCSIFFLAGS: IFF_UP | IFF_RUNNING).
fn bring_up(sock: &std::os::fd::OwnedFd) -> Result<(), Error> {
    let mut up = IfReq::with_flags((libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short);
    // SAFETY: SIOCSIFFLAGS reads a struct ifreq that lives across the call.
    if unsafe { ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut up) } != 0 {
        return Err(Error::Setup(format!(
            "cannot bring the TUN device up: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Gives the device the node address, brings it up and routes the balancer's address
/// through it (a host route: the SYN-ACK must leave through the device).
fn configure(node: Ipv4Addr, balancer: Ipv4Addr) -> Result<(), Error> {
    let sock = config_socket(libc::AF_INET)
        .map_err(|e| Error::Setup(format!("cannot open a configuration socket: {e}")))?;
    let mut addr = IfReq::with_ipv4(node);
    // SAFETY: SIOCSIFADDR reads a struct ifreq that lives across the call.
    if unsafe { ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &mut addr) } != 0 {
        return Err(Error::Setup(format!(
            "cannot set the address of the TUN device: {}",
            io::Error::last_os_error()
        )));
    }
    bring_up(&sock)?;
    let mut dev = [0 as libc::c_char; libc::IFNAMSIZ];
    for (d, s) in dev.iter_mut().zip(DEVICE) {
        *d = *s as libc::c_char;
    }
    // SAFETY: rtentry is plain old data; zero is a valid value for every field.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr_v4(balancer);
    route.rt_genmask = sockaddr_v4(Ipv4Addr::BROADCAST);
    route.rt_flags = libc::RTF_UP | libc::RTF_HOST;
    route.rt_dev = dev.as_mut_ptr();
    // SAFETY: SIOCADDRT reads the rtentry and the NUL-terminated device name, both alive.
    if unsafe { ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &mut route) } != 0 {
        return Err(Error::Setup(format!(
            "cannot route {balancer} through the TUN device: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// `struct in6_rtmsg` (include/uapi/linux/ipv6_route.h; the libc crate keeps its fields
/// private).
#[repr(C)]
struct In6RtMsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// Over IPv6 transport: brings the device up, gives it the node's address (/128) and routes
/// the balancer's /128 through it. A TUN device has `IFF_NOARP`, so the kernel skips duplicate
/// address detection (net/ipv6/addrconf.c, `addrconf_dad_begin`); [`listen`] still waits out
/// the moment the address is tentative, as newer kernels complete it from a work queue.
/// IPv6 disabled on the node (no `AF_INET6` sockets, or no address on the device) is a setup
/// error: the test is Skipped, with the reason.
fn configure_v6(node: Ipv6Addr, balancer: Ipv6Addr) -> Result<(), Error> {
    let sock = config_socket(libc::AF_INET6).map_err(|e| {
        Error::Setup(if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            format!(
                "IPv6 is disabled on this node ({e}), and the trusted sources are IPv6 networks only: the self-test over IPv6 transport cannot run"
            )
        } else {
            format!("cannot open an IPv6 configuration socket: {e}")
        })
    })?;
    bring_up(&sock)?;
    let name = IfReq::new().name;
    // SAFETY: `name` is NUL-terminated (DEVICE is shorter than IFNAMSIZ).
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr().cast()) };
    if ifindex == 0 {
        return Err(Error::Setup(format!(
            "cannot find the TUN device's index: {}",
            io::Error::last_os_error()
        )));
    }
    let ifindex = libc::c_int::try_from(ifindex)
        .map_err(|_| Error::Setup(format!("the TUN device's index {ifindex} is out of range")))?;
    let mut addr = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: node.octets(),
        },
        ifr6_prefixlen: 128,
        ifr6_ifindex: ifindex,
    };
    // SAFETY: SIOCSIFADDR on an AF_INET6 socket reads a struct in6_ifreq that lives across it.
    if unsafe { ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &mut addr) } != 0 {
        return Err(Error::Setup(format!(
            "cannot give the TUN device the IPv6 address {node} (is IPv6 disabled on this node, net.ipv6.conf.*.disable_ipv6?): {}",
            io::Error::last_os_error()
        )));
    }
    let zero = libc::in6_addr { s6_addr: [0; 16] };
    let mut route = In6RtMsg {
        dst: libc::in6_addr {
            s6_addr: balancer.octets(),
        },
        src: zero,
        gateway: zero,
        kind: 0,
        dst_len: 128,
        src_len: 0,
        metric: 1,
        info: 0,
        flags: libc::RTF_UP as u32,
        ifindex,
    };
    // SAFETY: SIOCADDRT on an AF_INET6 socket reads a struct in6_rtmsg that lives across it.
    if unsafe { ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &mut route) } != 0 {
        return Err(Error::Setup(format!(
            "cannot route {balancer} through the TUN device: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The listener on the node address; while an IPv6 address is still tentative, `bind()` says
/// EADDRNOTAVAIL, so that is retried until the deadline.
fn listen(addr: SocketAddr, timeout: Duration) -> Result<TcpListener, Error> {
    let deadline = Instant::now() + timeout;
    let listener = loop {
        match TcpListener::bind(addr) {
            Ok(l) => break l,
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(Error::Setup(format!(
                    "cannot listen on {addr} in the self-test namespace: {e}"
                )))
            }
        }
    };
    listener
        .set_nonblocking(true)
        .map_err(setup("cannot make the listener non-blocking"))?;
    Ok(listener)
}

/// A `struct sockaddr_in` in the generic `struct sockaddr` shape that rtentry holds.
fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr is plain old data.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_INET as libc::sa_family_t;
    // sockaddr_in: family(2), port(2), address(4) -- sa_data starts after the family.
    for (i, b) in addr.octets().iter().enumerate() {
        sa.sa_data[2 + i] = *b as libc::c_char;
    }
    sa
}

/// SYN (with TOA), SYN-ACK, final ACK (with TOA), accept.
fn handshake(
    tun: &mut File,
    listener: &TcpListener,
    plan: &Plan,
    hs: &Handshake,
    sport: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Error> {
    let client = if hs.nat64 {
        IpAddr::V6(CLIENT_V6)
    } else {
        IpAddr::V4(CLIENT_V4)
    };
    let toa = packet::toa_option(hs.kind, client, CLIENT_PORT);
    let isn: u32 = 0x1000_0000 + u32::from(sport);
    let mut seg = Segment {
        src: plan.balancer,
        dst: plan.node,
        sport,
        dport: plan.port,
        seq: isn,
        ack: 0,
        flags: FLAG_SYN,
        options: packet::syn_options(&toa),
    };
    tun.write_all(&packet::build(&seg).map_err(Error::Setup)?)
        .map_err(setup("cannot write the SYN to the TUN device"))?;
    let deadline = Instant::now() + timeout;
    let synack = loop {
        let Some(buf) = read_packet(tun, deadline).map_err(setup("cannot read the TUN device"))?
        else {
            return Err(Error::Seen(format!(
                "no SYN-ACK within {timeout:?} for a SYN over {} from {} to {}",
                plan.transport(),
                SocketAddr::new(plan.balancer, sport),
                SocketAddr::new(plan.node, plan.port)
            )));
        };
        match packet::parse(&buf) {
            Some(r) if r.dst != plan.balancer || r.src != plan.node => continue,
            Some(r) if r.dport == sport && r.flags & FLAG_RST != 0 => {
                return Err(Error::Seen(format!(
                    "the listener answered the SYN with a reset (port {})",
                    plan.port
                )))
            }
            Some(r)
                if r.dport == sport && r.flags & (FLAG_SYN | FLAG_ACK) == FLAG_SYN | FLAG_ACK =>
            {
                break r
            }
            _ => continue,
        }
    };
    seg.seq = isn.wrapping_add(1);
    seg.ack = synack.seq.wrapping_add(1);
    seg.flags = FLAG_ACK;
    seg.options = packet::pad(toa);
    tun.write_all(&packet::build(&seg).map_err(Error::Setup)?)
        .map_err(setup("cannot write the final ACK to the TUN device"))?;
    loop {
        match listener.accept() {
            Ok(pair) => return Ok(pair),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(Error::Seen(format!(
                        "the handshake completed on the wire but accept() returned nothing within {timeout:?}"
                    )));
                }
                wait_readable(listener.as_raw_fd(), deadline);
            }
            Err(e) => return Err(Error::Seen(format!("accept() failed: {e}"))),
        }
    }
}

/// What `accept()`/`getpeername()` must return for the client of `hs`: over IPv4 the IPv4
/// client; over IPv6 (an `AF_INET6` socket) the IPv4 client as `::ffff:a.b.c.d`, or the NAT64
/// client itself (kmod/README.md, "What an application sees"); None where the peer stays the
/// balancer (a NAT64 entry over IPv4: read with getsockopt 4096 only).
fn expected_peer(hs: &Handshake, plan: &Plan) -> Option<SocketAddr> {
    match (plan.balancer, hs.nat64) {
        (IpAddr::V4(_), false) => Some(SocketAddr::new(IpAddr::V4(CLIENT_V4), CLIENT_PORT)),
        (IpAddr::V4(_), true) => None,
        (IpAddr::V6(_), false) => Some(SocketAddr::new(
            IpAddr::V6(CLIENT_V4.to_ipv6_mapped()),
            CLIENT_PORT,
        )),
        (IpAddr::V6(_), true) => Some(SocketAddr::new(IpAddr::V6(CLIENT_V6), CLIENT_PORT)),
    }
}

/// Checks what the server application sees; Ok is the line for the status message, such as
/// "kind 200 over IPv4 from 10.0.0.1: accept() and getpeername() returned 192.0.2.77:40077".
fn judge(
    conn: &TcpStream,
    accepted: SocketAddr,
    hs: &Handshake,
    plan: &Plan,
) -> Result<String, Error> {
    let what = format!(
        "kind {}{} over {} from {}",
        hs.kind,
        if hs.nat64 { " (NAT64)" } else { "" },
        plan.transport(),
        plan.balancer_text()
    );
    let mut seen = Vec::new();
    if hs.nat64 {
        let want = SocketAddr::new(IpAddr::V6(CLIENT_V6), CLIENT_PORT);
        match nat64_peer(conn.as_raw_fd()) {
            Ok(got) if got == want => seen.push(format!("getsockopt 4096 returned {got}")),
            Ok(got) => {
                return Err(Error::Seen(format!(
                    "{what}: getsockopt(IPPROTO_IP, 4096) returned {got}, expected {want}"
                )))
            }
            Err(e) => {
                return Err(Error::Seen(format!(
                    "{what}: getsockopt(IPPROTO_IP, 4096) failed ({e}), expected {want}"
                )))
            }
        }
    }
    if let Some(want) = expected_peer(hs, plan) {
        let peer = conn
            .peer_addr()
            .map_err(|e| Error::Seen(format!("{what}: getpeername() failed: {e}")))?;
        if accepted != want || peer != want {
            return Err(Error::Seen(format!(
                "{what}: accept() returned {accepted} and getpeername() {peer}, expected {want} (the balancer was {})",
                SocketAddr::new(plan.balancer, BALANCER_PORT)
            )));
        }
        seen.push(format!("accept() and getpeername() returned {want}"));
    }
    Ok(format!("{what}: {}", seen.join(", ")))
}

/// `getsockopt(fd, IPPROTO_IP, 4096)`: `struct toa_nat64_peer { struct in6_addr; u16 sport; }`.
fn nat64_peer(fd: RawFd) -> io::Result<SocketAddr> {
    let mut buf = [0u8; 20];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is writable for len bytes and len is a valid in/out pointer.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_IP,
            TOA_SO_GET_LOOKUP,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < 18 {
        return Err(io::Error::other(format!("short answer ({len} bytes)")));
    }
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&buf[..16]);
    let port = u16::from_be_bytes([buf[16], buf[17]]);
    Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
}

/// Closes with `SO_LINGER {1, 0}`: an RST instead of a FIN that nobody would answer, so no
/// socket of the test outlives it.
fn close_with_reset(conn: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a linger struct that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "self-test: SO_LINGER failed; the socket closes with FIN");
    }
}

/// Waits until `fd` is readable or the deadline passes.
fn wait_readable(fd: RawFd, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// The next datagram from the TUN device, or None at the deadline.
fn read_packet(tun: &mut File, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
    if !wait_readable(tun.as_raw_fd(), deadline) {
        return Ok(None);
    }
    let mut buf = vec![0u8; 2048];
    let n = tun.read(&mut buf)?;
    buf.truncate(n);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn in6_rtmsg_has_the_kernel_layout() {
        // include/uapi/linux/ipv6_route.h on 64-bit: 3 x 16 address bytes, type, dst_len,
        // src_len, metric, 4 bytes of padding, info (unsigned long), flags, ifindex.
        assert_eq!(std::mem::size_of::<In6RtMsg>(), 80);
        assert_eq!(std::mem::offset_of!(In6RtMsg, info), 64);
        assert_eq!(std::mem::offset_of!(In6RtMsg, ifindex), 76);
        assert_eq!(std::mem::size_of::<libc::in6_ifreq>(), 24);
    }

    #[test]
    fn the_expected_peer_is_what_the_backends_return_per_transport() {
        let plan = |balancer: &str| Plan {
            balancer: balancer.parse().expect("address"),
            node: "198.51.100.1".parse().expect("address"),
            port: 80,
            handshakes: Vec::new(),
        };
        let v4 = Handshake {
            kind: 200,
            nat64: false,
        };
        let nat64 = Handshake {
            kind: 253,
            nat64: true,
        };
        let text = |hs: &Handshake, p: &Plan| expected_peer(hs, p).map(|a| a.to_string());
        assert_eq!(
            text(&v4, &plan("10.0.0.1")).as_deref(),
            Some("192.0.2.77:40077")
        );
        // Over IPv4 a NAT64 entry leaves the peer alone: only getsockopt 4096 is checked.
        assert_eq!(text(&nat64, &plan("10.0.0.1")), None);
        assert_eq!(
            text(&v4, &plan("fd00:10::1")).as_deref(),
            Some("[::ffff:192.0.2.77]:40077")
        );
        assert_eq!(
            text(&nat64, &plan("fd00:10::1")).as_deref(),
            Some("[2001:db8::77]:40077")
        );
    }
}
