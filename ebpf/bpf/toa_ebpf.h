/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layout shared by the BPF programs (toa.bpf.c) and the Rust loader (ebpf/src/maps.rs, which
 * mirrors these structs with #[repr(C)] and checks their sizes in a test). Change both.
 */
#ifndef TOA_EBPF_H
#define TOA_EBPF_H

#define TOA_SO_GET_LOOKUP	4096
#define TOA_MAX_TRUSTED		64
#define TOA_IPV4_OPT_LEN	8
#define TOA_NAT64_OPT_LEN	20

/* Counters: the same names and order as kmod/toa.h enum toa_counter (/proc/net/toa_stats). */
enum toa_counter {
	TOA_CNT_SYN_RECV_SOCK_TOA,
	TOA_CNT_SYN_RECV_SOCK_NO_TOA,
	TOA_CNT_GETNAME_TOA_OK,
	TOA_CNT_GETNAME_TOA_MISMATCH,
	TOA_CNT_GETNAME_TOA_EMPTY,
	TOA_CNT_IP6_ADDRESS_ALLOC,
	TOA_CNT_IP6_ADDRESS_FREE,
	TOA_CNT_IP4_ADDRESS_ALLOC,
	TOA_CNT_IP4_ADDRESS_FREE,
	TOA_CNT_TOA_UNTRUSTED,
	TOA_CNT_TOA_MALFORMED,
	TOA_CNT_SYN_PENDING_STORED,
	TOA_CNT_SYN_PENDING_DROPPED,
	TOA_CNT_GETSOCKOPT_OK,
	TOA_CNT_GETSOCKOPT_EMPTY,
	TOA_CNT_TOA_REFUSED_ADDRESS,
	TOA_CNT_TOA_AMBIGUOUS,
	TOA_CNT_ACK_PENDING_STORED,
	TOA_CNT_ATTACH_FALLBACK,
	TOA_CNT_ENTRIES_RECLAIMED,
	TOA_CNT_MAX
};

enum toa_type {
	TOA_TYPE_NONE = 0,
	TOA_TYPE_IPV4 = 1,
	TOA_TYPE_NAT64 = 2,
};

enum toa_dup_rule {
	TOA_DUP_REJECT = 0,
	TOA_DUP_FIRST = 1,
	TOA_DUP_LAST = 2,
};

/* One IPv4 CIDR of trusted_sources, both in network byte order. */
struct toa_cidr4 {
	__u32 addr;
	__u32 mask;
};

/* One IPv6 CIDR of trusted_sources: address and mask as four network-order words each. */
struct toa_cidr6 {
	__u32 addr[4];
	__u32 mask[4];
};

/*
 * The runtime parameters (the module's parameters under /sys/module/toa/parameters), one element of the array map
 * toa_config. All zero = nothing configured: no kind is a TOA kind, so nothing is parsed.
 */
struct toa_config {
	__u32 ipv4_kinds[8];	/* bit k: kind k carries an IPv4 TOA (length 8) */
	__u32 nat64_kinds[8];	/* bit k: kind k carries a NAT64 TOA (length 20) */
	__u32 n_trusted;	/* entries used in trusted4 */
	__u8 accept_any;	/* accept_any_source: every source while n_trusted == n_trusted6 == 0 */
	__u8 dup_rule;		/* enum toa_dup_rule */
	__u16 n_ports;		/* 0: every local port is in scope, else the ports bitmap */
	struct toa_cidr4 trusted4[TOA_MAX_TRUSTED];
	__u32 ports[2048];	/* bit p: local port p is in scope */
	/*
	 * IPv6 entries of trusted_sources, matched against IPv6 balancers only (IPv4 ones,
	 * and IPv4-mapped peers of dual-stack listeners, against trusted4 only), as in the module.
	 * At the end so that the IPv4 layout above keeps its offsets.
	 */
	__u32 n_trusted6;	/* entries used in trusted6 */
	__u32 pad6;
	struct toa_cidr6 trusted6[TOA_MAX_TRUSTED];
};

/* Per-socket entry in the BPF_MAP_TYPE_SK_STORAGE map toa_sk (freed with the socket). */
struct toa_sk_entry {
	__u8 type;		/* enum toa_type */
	__u8 kind;		/* the option kind it came from */
	__u16 port;		/* client port, network byte order */
	__u8 addr[16];		/* IPv4 in the first 4 bytes, or the NAT64 client IPv6 */
};

/* What getsockopt(IPPROTO_IP, TOA_SO_GET_LOOKUP) returns (kmod/toa.h). */
struct toa_nat64_peer {
	__u8 saddr[16];
	__u16 sport;		/* network byte order */
	__u16 pad;
};

#endif
