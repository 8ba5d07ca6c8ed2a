// SPDX-License-Identifier: Apache-2.0
//! The NAT64 lookup of the toa module from Rust, with the standard library only.
//!
//! An IPv6 client reaching an IPv4 backend through a NAT64 balancer: the module stores the
//! client's address (TCP option 253) and answers `getsockopt(fd, IPPROTO_IP, 4096)`. When the
//! connection carried no NAT64 address it fails with ENOENT (ENOPROTOOPT without the module):
//! fall back to `peer_addr()`, which the module has already rewritten for IPv4 TOA.
//!
//!   rustc --edition 2021 -O toa_nat64_peer.rs
//!   ./toa_nat64_peer 8080          serve on :8080, print each client's real address
//!   ./toa_nat64_peer --self-test   one loopback connection; checks the fallback path
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_void};

const IPPROTO_IP: c_int = 0;
const TOA_SO_GET_LOOKUP: c_int = 4096;

/// `struct toa_nat64_peer { struct in6_addr saddr; uint16_t sport; }`: in6_addr is 4-byte
/// aligned in C, so the struct is 20 bytes; align(4) reproduces that.
#[repr(C, align(4))]
struct ToaNat64Peer {
    saddr: [u8; 16],
    sport: u16, // network byte order
}

const _: () = assert!(std::mem::size_of::<ToaNat64Peer>() == 20);

unsafe extern "C" {
    fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut u32) -> c_int;
}

/// The NAT64 client of this connection, or None when it carried no NAT64 address.
fn nat64_peer(stream: &TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut peer = ToaNat64Peer { saddr: [0; 16], sport: 0 };
    let mut len = std::mem::size_of::<ToaNat64Peer>() as u32;
    // SAFETY: peer and len are valid for writes of len bytes for the duration of the call.
    let rc = unsafe {
        getsockopt(
            stream.as_raw_fd(),
            IPPROTO_IP,
            TOA_SO_GET_LOOKUP,
            (&mut peer as *mut ToaNat64Peer).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        let ip = Ipv6Addr::from(peer.saddr);
        return Ok(Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(peer.sport), 0, 0))));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // ENOENT: no NAT64 entry; ENOPROTOOPT: the toa module is not loaded.
        Some(2) | Some(92) => Ok(None),
        _ => Err(err),
    }
}

/// The real client: the NAT64 address if there is one, else the (TOA-rewritten) peer address.
fn real_peer(stream: &TcpStream) -> io::Result<SocketAddr> {
    match nat64_peer(stream)? {
        Some(addr) => Ok(addr),
        None => stream.peer_addr(),
    }
}

fn self_test() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let _client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    let peer = real_peer(&server)?;
    println!("self-test: peer {peer}");
    if !peer.ip().is_loopback() {
        return Err(io::Error::other(format!("expected a loopback peer, got {peer}")));
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "--self-test" {
        return self_test();
    }
    let port: u16 = arg.parse().map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "usage: toa_nat64_peer PORT | --self-test")
    })?;
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    for stream in listener.incoming() {
        let stream = stream?;
        match real_peer(&stream) {
            Ok(addr) => println!("client {addr}"),
            Err(e) => eprintln!("lookup failed: {e}"),
        }
    }
    Ok(())
}
