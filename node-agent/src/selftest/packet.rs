//! IPv4/TCP and IPv6/TCP segments for the self-test's "balancer": a SYN and a final ACK
//! carrying a TOA option, and the parse of the server's SYN-ACK. Layouts: RFC 791 (IPv4
//! header), RFC 8200 (IPv6 header; section 8.1: the TCP checksum over the IPv6 pseudo-header),
//! RFC 9293 (TCP header, checksum over the pseudo-header), DESIGN.md (TOA: kind, length 8 with
//! port and IPv4 address, or length 20 with port and IPv6 address, both in network order).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const TCP_HEADER: usize = 20;
const PROTO_TCP: u8 = 6;
pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_RST: u8 = 0x04;
pub const FLAG_ACK: u8 = 0x10;

/// One TCP segment (the balancer's, or the node's answer as [`parse`] reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Source and destination: both IPv4 or both IPv6 (the transport).
    pub src: IpAddr,
    pub dst: IpAddr,
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

/// The whole IPv4 or IPv6 datagram for `s`, checksums filled in; an error when its source
/// and destination are of different families.
pub fn build(s: &Segment) -> Result<Vec<u8>, String> {
    let tcp_len = TCP_HEADER + s.options.len();
    let (mut p, pseudo, ip_len) = match (s.src, s.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let total = IPV4_HEADER + tcp_len;
            let mut p = vec![0u8; total];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[6] = 0x40; // don't fragment
            p[8] = 64;
            p[9] = PROTO_TCP;
            p[12..16].copy_from_slice(&src.octets());
            p[16..20].copy_from_slice(&dst.octets());
            let c = checksum(&[&p[..IPV4_HEADER]]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            (p, pseudo_header(src, dst, tcp_len).to_vec(), IPV4_HEADER)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut p = vec![0u8; IPV6_HEADER + tcp_len];
            p[0] = 0x60; // version 6, traffic class 0, flow label 0
            p[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            p[6] = PROTO_TCP;
            p[7] = 64; // hop limit
            p[8..24].copy_from_slice(&src.octets());
            p[24..40].copy_from_slice(&dst.octets());
            (p, pseudo_header_v6(src, dst, tcp_len).to_vec(), IPV6_HEADER)
        }
        (src, dst) => {
            return Err(format!(
                "a segment from {src} to {dst} mixes IPv4 and IPv6 addresses"
            ))
        }
    };
    let t = &mut p[ip_len..];
    t[0..2].copy_from_slice(&s.sport.to_be_bytes());
    t[2..4].copy_from_slice(&s.dport.to_be_bytes());
    t[4..8].copy_from_slice(&s.seq.to_be_bytes());
    t[8..12].copy_from_slice(&s.ack.to_be_bytes());
    t[12] = ((tcp_len / 4) as u8) << 4;
    t[13] = s.flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t[TCP_HEADER..].copy_from_slice(&s.options);
    let c = checksum(&[&pseudo, t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Ok(p)
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, tcp_len: usize) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..4].copy_from_slice(&src.octets());
    h[4..8].copy_from_slice(&dst.octets());
    h[9] = PROTO_TCP;
    h[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    h
}

/// RFC 8200 section 8.1: source, destination, upper-layer packet length (32 bits), three zero
/// bytes, next header.
fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, tcp_len: usize) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0..16].copy_from_slice(&src.octets());
    h[16..32].copy_from_slice(&dst.octets());
    h[32..36].copy_from_slice(&(tcp_len as u32).to_be_bytes());
    h[39] = PROTO_TCP;
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

/// Parses an IPv4/TCP or IPv6/TCP datagram read from the TUN device (options left out); None
/// for anything else (IPv6 router solicitations and MLD reports, UDP, truncated data) so the
/// caller just reads on. IPv6 extension headers are not walked: the node's SYN-ACK and RST
/// carry none.
pub fn parse(p: &[u8]) -> Option<Segment> {
    let (src, dst, t) = match p.first()? >> 4 {
        4 => {
            if p.len() < IPV4_HEADER {
                return None;
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if ihl < IPV4_HEADER || p[9] != PROTO_TCP || total > p.len() || total < ihl + TCP_HEADER
            {
                return None;
            }
            (
                IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15])),
                IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19])),
                &p[ihl..total],
            )
        }
        6 => {
            if p.len() < IPV6_HEADER || p[6] != PROTO_TCP {
                return None;
            }
            let total = IPV6_HEADER + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if total > p.len() || total < IPV6_HEADER + TCP_HEADER {
                return None;
            }
            let addr = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&p[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            (addr(8), addr(24), &p[IPV6_HEADER..total])
        }
        _ => return None,
    };
    let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    Some(Segment {
        src,
        dst,
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

    fn syn() -> Segment {
        Segment {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
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
        let p = build(&syn()).expect("IPv4");
        assert_eq!(p.len(), 20 + 20 + 12);
        // A correct checksum makes the sum over the covered bytes 0.
        assert_eq!(checksum(&[&p[..20]]), 0);
        let pseudo = pseudo_header(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(198, 51, 100, 1),
            p.len() - 20,
        );
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
        let mut p = build(&syn()).expect("IPv4");
        p[9] = 17;
        assert_eq!(parse(&p), None);
        let p = build(&syn()).expect("IPv4");
        assert_eq!(parse(&p[..30]), None);
    }

    /// The same SYN over IPv6 transport (the IPv4 client's option).
    fn syn6() -> Segment {
        Segment {
            src: "fd00:10::1".parse().expect("addr"),
            dst: "2001:db8::1".parse().expect("addr"),
            seq: 0x1000_c350,
            ..syn()
        }
    }

    #[test]
    fn ipv6_segments_have_the_rfc8200_layout_and_checksum() {
        let p = build(&syn6()).expect("IPv6");
        // The expected datagram, written out by hand: the IPv6 header, then TCP with the
        // checksum 0x8f7d, computed separately (Python, RFC 8200 8.1 pseudo-header: the two
        // addresses, the length 32 as 4 bytes, 3 zero bytes, next header 6).
        let want: Vec<u8> = [
            &[0x60, 0, 0, 0, 0, 32, 6, 64][..],
            &[0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[
                0xc3, 0x50, 0, 80, 0x10, 0, 0xc3, 0x50, 0, 0, 0, 0, 0x80, 0x02, 0xff, 0xff,
            ],
            &[0x8f, 0x7d, 0, 0],
            &[2, 4, 0x05, 0xb4, 200, 8, 0x9c, 0x8d, 192, 0, 2, 77],
        ]
        .concat();
        assert_eq!(p, want);
        // The receiver's check: the sum over pseudo-header and segment is 0 ...
        let src: Ipv6Addr = "fd00:10::1".parse().expect("addr");
        let dst: Ipv6Addr = "2001:db8::1".parse().expect("addr");
        assert_eq!(checksum(&[&pseudo_header_v6(src, dst, 32), &p[40..]]), 0);
        // ... and not 0 with the IPv4-style pseudo-header (what a wrong layout would pass).
        assert_ne!(
            checksum(&[
                &pseudo_header(
                    Ipv4Addr::new(0xfd, 0, 0, 0x10),
                    Ipv4Addr::new(0x20, 1, 0xd, 0xb8),
                    32
                ),
                &p[40..]
            ]),
            0
        );
        let r = parse(&p).expect("parse");
        assert_eq!((r.src, r.dst), (syn6().src, syn6().dst));
        assert_eq!(
            (r.sport, r.dport, r.seq, r.ack, r.flags),
            (50000, 80, 0x1000_c350, 0, FLAG_SYN)
        );
    }

    #[test]
    fn ipv6_non_tcp_and_truncated_datagrams_are_ignored() {
        let p = build(&syn6()).expect("IPv6");
        assert_eq!(parse(&p[..50]), None, "truncated");
        let mut icmp = p.clone();
        icmp[6] = 58; // a router solicitation
        assert_eq!(parse(&icmp), None);
        let mut hop_by_hop = p.clone();
        hop_by_hop[6] = 0; // an MLD report starts with a hop-by-hop header
        assert_eq!(parse(&hop_by_hop), None);
        let mut long = p.clone();
        long[5] = 200; // payload length beyond the datagram
        assert_eq!(parse(&long), None);
        let mixed = Segment {
            dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            ..syn6()
        };
        assert!(build(&mixed).expect_err("mixed").contains("mixes"));
    }
}
