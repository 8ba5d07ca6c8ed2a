//! IPv4/TCP segments for the self-test's "balancer": a SYN and a final ACK carrying a TOA
//! option, and the parse of the server's SYN-ACK. Layouts: RFC 791 (IPv4 header), RFC 9293
//! (TCP header, checksum over the pseudo-header), DESIGN.md (TOA: kind, length 8 with port and
//! IPv4 address, or length 20 with port and IPv6 address, both in network order).

use std::net::{IpAddr, Ipv4Addr};

const IPV4_HEADER: usize = 20;
const TCP_HEADER: usize = 20;
const PROTO_TCP: u8 = 6;
pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_RST: u8 = 0x04;
pub const FLAG_ACK: u8 = 0x10;

/// One TCP segment (the balancer's, or the node's answer as [`parse`] reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// TCP options, already padded to a multiple of 4 bytes.
    pub options: Vec<u8>,
}

/// The TOA option: `kind, len, port, address` (len 8 for IPv4, 20 for IPv6).
pub fn toa_option(kind: u8, client: IpAddr, port: u16) -> Vec<u8> {
    let mut o = vec![kind, 0];
    o.extend_from_slice(&port.to_be_bytes());
    match client {
        IpAddr::V4(a) => o.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => o.extend_from_slice(&a.octets()),
    }
    o[1] = o.len() as u8;
    o
}

/// SYN options: MSS 1460 (a real balancer sends one) then the TOA option, padded with NOPs.
pub fn syn_options(toa: &[u8]) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4];
    o.extend_from_slice(toa);
    pad(o)
}

/// Pads options to a multiple of 4 with NOP (kind 1).
pub fn pad(mut o: Vec<u8>) -> Vec<u8> {
    while !o.len().is_multiple_of(4) {
        o.push(1);
    }
    o
}

/// The whole IPv4 datagram for `s`, checksums filled in.
pub fn build(s: &Segment) -> Vec<u8> {
    let tcp_len = TCP_HEADER + s.options.len();
    let total = IPV4_HEADER + tcp_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64;
    p[9] = PROTO_TCP;
    p[12..16].copy_from_slice(&s.src.octets());
    p[16..20].copy_from_slice(&s.dst.octets());
    let c = checksum(&[&p[..IPV4_HEADER]]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut p[IPV4_HEADER..];
    t[0..2].copy_from_slice(&s.sport.to_be_bytes());
    t[2..4].copy_from_slice(&s.dport.to_be_bytes());
    t[4..8].copy_from_slice(&s.seq.to_be_bytes());
    t[8..12].copy_from_slice(&s.ack.to_be_bytes());
    t[12] = ((tcp_len / 4) as u8) << 4;
    t[13] = s.flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t[TCP_HEADER..].copy_from_slice(&s.options);
    let pseudo = pseudo_header(s.src, s.dst, tcp_len);
    let c = checksum(&[&pseudo, t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    p
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, tcp_len: usize) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..4].copy_from_slice(&src.octets());
    h[4..8].copy_from_slice(&dst.octets());
    h[9] = PROTO_TCP;
    h[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    h
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                None => odd = Some(b),
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Parses an IPv4/TCP datagram read from the TUN device (options left out); None for anything
/// else (IPv6 router solicitations, truncated data) so the caller just reads on.
pub fn parse(p: &[u8]) -> Option<Segment> {
    if p.len() < IPV4_HEADER || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < IPV4_HEADER || p[9] != PROTO_TCP || total > p.len() || total < ihl + TCP_HEADER {
        return None;
    }
    let t = &p[ihl..total];
    let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    Some(Segment {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        seq: word(4),
        ack: word(8),
        flags: t[13],
        options: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn syn() -> Segment {
        Segment {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(198, 51, 100, 1),
            sport: 50000,
            dport: 80,
            seq: 1000,
            ack: 0,
            flags: FLAG_SYN,
            options: syn_options(&toa_option(
                200,
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)),
                40077,
            )),
        }
    }

    #[test]
    fn toa_options_have_the_wire_layout() {
        assert_eq!(
            toa_option(200, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)), 40077),
            vec![200, 8, 0x9c, 0x8d, 192, 0, 2, 77]
        );
        let o = toa_option(
            253,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x77)),
            1,
        );
        assert_eq!((o[0], o[1], o.len()), (253, 20, 20));
        assert_eq!(&o[2..6], &[0, 1, 0x20, 0x01]);
        assert_eq!(syn_options(&o).len(), 24);
        assert_eq!(pad(vec![1, 2, 3]).len(), 4);
    }

    #[test]
    fn built_segments_verify_and_parse_back() {
        let p = build(&syn());
        assert_eq!(p.len(), 20 + 20 + 12);
        // A correct checksum makes the sum over the covered bytes 0.
        assert_eq!(checksum(&[&p[..20]]), 0);
        let pseudo = pseudo_header(syn().src, syn().dst, p.len() - 20);
        assert_eq!(checksum(&[&pseudo, &p[20..]]), 0);
        let r = parse(&p).expect("parse");
        assert_eq!(
            (r.sport, r.dport, r.seq, r.flags),
            (50000, 80, 1000, FLAG_SYN)
        );
        assert_eq!(p[20 + 12] >> 4, 8, "data offset counts the options");
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, checksum 220d.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03], &[0xf4, 0xf5, 0xf6, 0xf7]]),
            0x220d
        );
        assert_eq!(checksum(&[&[0x01]]), !0x0100);
    }

    #[test]
    fn anything_but_ipv4_tcp_is_ignored() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x60; 60]), None);
        let mut p = build(&syn());
        p[9] = 17;
        assert_eq!(parse(&p), None);
        let p = build(&syn());
        assert_eq!(parse(&p[..30]), None);
    }
}
