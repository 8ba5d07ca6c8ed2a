/* SPDX-License-Identifier: GPL-2.0 */
/*
 * TCP option parser for TOA (TCP Option Address).
 *
 * Pure function over a byte buffer: no kernel calls, no allocation, only fixed-width
 * types, so the same source is built into the module and into the userspace fuzzer.
 */
#ifndef TOA_PARSE_H
#define TOA_PARSE_H

#include "toa_parse_compat.h"

#define TOA_OPT_EOL		0
#define TOA_OPT_NOP		1
#define TOA_IPV4_OPT_LEN	8	/* kind, len, port(2), IPv4(4) */
#define TOA_NAT64_OPT_LEN	20	/* kind, len, port(2), IPv6(16) */
#define TOA_KIND_MIN		2	/* 0 (EOL) and 1 (NOP) carry no length byte */
#define TOA_KIND_MAX		255

enum toa_addr_type {
	TOA_TYPE_NONE = 0,
	TOA_TYPE_IPV4 = 1,
	TOA_TYPE_NAT64 = 2,
};

/* Accepted option kinds: one bit per kind, for each address type. */
struct toa_kinds {
	uint32_t ipv4[8];
	uint32_t nat64[8];
};

/* A decoded TOA option. */
struct toa_addr {
	uint8_t type;		/* enum toa_addr_type */
	uint8_t kind;		/* option kind it came from */
	uint16_t port;		/* host byte order */
	uint8_t addr[16];	/* network byte order; IPv4 uses the first 4 bytes */
};

struct toa_parse_result {
	struct toa_addr toa;	/* first valid TOA; only type (NONE) is set when there is none */
	uint32_t offset;	/* offset of that option in the buffer */
	struct toa_addr last;	/* last valid TOA (the first one when there is only one) */
	uint32_t last_offset;	/* offset of that option in the buffer */
	uint32_t malformed;	/* malformed options seen (see toa_parse_options) */
	uint32_t duplicates;	/* valid TOA options after the first one */
};

/* Why a decoded address cannot be a real client (toa_addr_check). */
enum toa_addr_verdict {
	TOA_ADDR_OK = 0,
	TOA_ADDR_UNSPECIFIED,	/* 0.0.0.0/8, :: */
	TOA_ADDR_LOOPBACK,	/* 127.0.0.0/8, ::1 */
	TOA_ADDR_MULTICAST,	/* 224.0.0.0/4, ff00::/8 */
	TOA_ADDR_BROADCAST,	/* 255.255.255.255 (and the rest of 240.0.0.0/4, reserved) */
	TOA_ADDR_V4MAPPED,	/* ::ffff:0:0/96 in a NAT64 option */
};

void toa_kinds_clear(struct toa_kinds *k);
void toa_kinds_add(uint32_t *set, uint8_t kind);
int toa_kinds_has(const uint32_t *set, uint8_t kind);

/*
 * Walk the TCP option list opt[0..len) and find the first valid TOA option.
 * Returns 1 when one was found (res->toa filled), 0 otherwise.
 *
 * Malformed (counted in res->malformed):
 *  - a kind byte without a length byte, a length < 2, or a length running past the end:
 *    the rest of the list cannot be delimited, parsing stops (one count);
 *  - an option whose kind is a configured TOA kind but whose length is not the one
 *    for that type (8 for IPv4, 20 for NAT64): skipped, parsing goes on.
 * EOL ends the list; NOP is skipped; any other option is skipped by its length.
 */
int toa_parse_options(const uint8_t *opt, size_t len, const struct toa_kinds *kinds,
		      struct toa_parse_result *res);

/* A local port or an inclusive range of them (parameter `ports`). */
struct toa_port_range {
	uint16_t lo, hi;
};

/*
 * Parses a `ports` value: comma-separated ports 1..65535 and LOW-HIGH ranges (LOW <= HIGH),
 * spaces and tabs allowed around each entry, s[0..len) (no terminator needed). An empty
 * or all-blank value is 0 entries (every port). Returns the number of entries written to
 * out[0..max), or -1 with bad_off and bad_len set to the offending entry (a bad number or
 * range, an empty entry, or entry max + 1).
 */
int toa_parse_port_list(const char *s, size_t len, struct toa_port_range *out, unsigned int max,
			size_t *bad_off, size_t *bad_len);

/*
 * Classifies a decoded address: TOA_ADDR_OK, or the reason it cannot be a real client
 * (a balancer never writes such an address; a client that forges one wants the
 * application to see a local or special peer). Pure function, fuzzed like the parser.
 */
enum toa_addr_verdict toa_addr_check(const struct toa_addr *a);

/*
 * Parses an option-kinds value: comma-separated decimal kinds TOA_KIND_MIN..TOA_KIND_MAX,
 * blanks (space, tab, newline) allowed around each entry, s[0..len) (no terminator
 * needed). Duplicates are dropped, the order is kept. An empty or all-blank value is 0
 * entries. Returns the number of kinds written to out[0..max), or -1 with bad_off and
 * bad_len set to the offending entry (not a number in range, an empty entry, or the entry
 * that would be number max + 1).
 */
int toa_parse_kind_list(const char *s, size_t len, uint8_t *out, unsigned int max,
			size_t *bad_off, size_t *bad_len);

/* A trusted network (parameter `trusted_sources`). */
#define TOA_CIDR_V4	4
#define TOA_CIDR_V6	6
struct toa_cidr {
	uint8_t family;		/* TOA_CIDR_V4 or TOA_CIDR_V6 */
	uint8_t prefix;		/* 0..32 or 0..128 */
	uint8_t addr[16];	/* network byte order, IPv4 in addr[0..3]; bits past prefix 0 */
};

/* Why a trusted_sources entry was refused (toa_parse_cidr_list). */
enum toa_cidr_error {
	TOA_CIDR_OK = 0,
	TOA_CIDR_BAD_ADDRESS,	/* not an IPv4 dotted quad or IPv6 address */
	TOA_CIDR_BAD_PREFIX,	/* the part after '/' is not 0..32 (IPv4) or 0..128 (IPv6) */
	TOA_CIDR_HOST_BITS,	/* address bits set past the prefix */
	TOA_CIDR_TOO_MANY,	/* more than max entries */
};

/*
 * Parses a trusted_sources value: comma-separated ADDRESS[/PREFIX] entries, blanks around
 * each allowed, s[0..len). IPv4: four decimal parts 0..255 without leading zeros; IPv6:
 * the RFC 4291 text forms (groups of 1..4 hex digits, one "::", a dotted IPv4 tail);
 * the same grammar as inet_pton(). No prefix = a host (/32, /128). An empty or all-blank
 * value is 0 entries. Returns the number of entries written to out[0..max), or -1 with
 * the offending entry's span and *why set.
 */
int toa_parse_cidr_list(const char *s, size_t len, struct toa_cidr *out, unsigned int max,
			size_t *bad_off, size_t *bad_len, enum toa_cidr_error *why);

/*
 * Trust rule for the IPv4 source of a segment (network byte order): with no entries,
 * trusted only when accept_any; else trusted when an IPv4 entry contains it (IPv6
 * entries never match an IPv4 source).
 */
int toa_trusted_v4(const struct toa_cidr *list, unsigned int n, int accept_any,
		   const uint8_t saddr[4]);

/*
 * The same for the IPv6 source of a segment: trusted when an IPv6 entry contains it (IPv4
 * entries never match an IPv6 source), or, with no entries at all, when accept_any.
 */
int toa_trusted_v6(const struct toa_cidr *list, unsigned int n, int accept_any,
		   const uint8_t saddr[16]);

/* TCP flags byte (offset 13 of the TCP header). */
#define TOA_TCP_FIN	0x01
#define TOA_TCP_SYN	0x02
#define TOA_TCP_RST	0x04
#define TOA_TCP_ACK	0x10

/* Enough for an IPv4 header with options (<= 60) and a TCP header with options (<= 60). */
#define TOA_SEG_MAX	120

/* The headers of an IPv4 TCP segment, located by toa_locate_v4(). */
struct toa_seg_v4 {
	uint8_t saddr[4];	/* network byte order */
	uint8_t daddr[4];
	uint16_t sport;		/* host byte order */
	uint16_t dport;
	uint32_t seq;
	uint8_t flags;		/* TOA_TCP_* bits */
	uint32_t opt_off;	/* offset of the TCP option bytes in the buffer */
	uint32_t opt_len;	/* (doff - 5) * 4 */
	uint32_t payload;	/* TCP payload bytes, from the IPv4 total length */
};

/*
 * Locates the TCP header of the segment whose IPv4 header starts at buf[0]; len bytes of
 * it are available (at most TOA_SEG_MAX are looked at). Returns 0 with *seg filled, or -1
 * when it is not an unfragmented IPv4 TCP segment whose IPv4 and TCP headers (options
 * included) lie inside both buf[0..len) and the IPv4 total length. Nothing outside
 * buf[0..len) is read.
 */
int toa_locate_v4(const uint8_t *buf, size_t len, struct toa_seg_v4 *seg);

/*
 * Locates the TCP header that starts at buf[0] (IPv6: after the extension headers); len
 * bytes of it are available, tcp_len is the TCP segment's length as the IP layer gives it
 * (header and payload). Returns 0 with every field of *seg but the addresses filled
 * (opt_off is relative to buf), or -1 when the TCP header (options included) does not lie
 * inside both buf[0..len) and tcp_len. Nothing outside buf[0..len) is read.
 */
int toa_locate_tcp(const uint8_t *buf, size_t len, uint32_t tcp_len, struct toa_seg_v4 *seg);

#endif /* TOA_PARSE_H */
