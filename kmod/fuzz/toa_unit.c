// SPDX-License-Identifier: GPL-2.0
/*
 * Deterministic unit tests of the module's pure code (toa_parse.c built for userspace):
 * the option parser with each malformed case, address checks, the ports, kinds and
 * trusted_sources parsers, the trust rule and the IPv4/TCP header location. Ends with "N passed, M failed"
 * and exits non-zero on any failure.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../toa_parse.h"

struct unit_case {
	const char *name;
	const char *hex;	/* option bytes, hex, spaces ignored */
	const char *ipv4;	/* extra IPv4 kinds besides 200 ("" = none; "-" = no 200 either) */
	const char *nat64;	/* extra NAT64 kinds besides 253 */
	int found;
	uint8_t type;
	const char *addr;	/* expected address bytes, hex (4 or 16 bytes) */
	uint16_t port;
	uint32_t offset;
	uint32_t malformed;
	uint32_t duplicates;
};

#define V4 "c8 08 1f 90 c0 00 02 0a"	/* kind 200: 192.0.2.10:8080 */
#define V4B "c8 08 00 50 c6 33 64 07"	/* kind 200: 198.51.100.7:80 */
#define N64 "fd 14 30 39 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01"	/* [2001:db8::1]:12345 */
#define A4 "c0 00 02 0a"
#define A6 "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01"

static const struct unit_case cases[] = {
	{ "ipv4 alone", V4, "", "", 1, TOA_TYPE_IPV4, A4, 8080, 0, 0, 0 },
	{ "nat64 alone", N64, "", "", 1, TOA_TYPE_NAT64, A6, 12345, 0, 0, 0 },
	{ "empty list", "", "", "", 0, 0, "", 0, 0, 0, 0 },
	{ "nop padding only", "01 01 01 01", "", "", 0, 0, "", 0, 0, 0, 0 },
	{ "among mss sackperm ts wscale",
	  "02 04 05 b4 04 02 08 0a 00 00 00 01 00 00 00 00 01 03 03 07 " V4, "", "", 1,
	  TOA_TYPE_IPV4, A4, 8080, 20, 0, 0 },
	{ "before other options", V4 " 02 04 05 b4 01 01 04 02", "", "", 1, TOA_TYPE_IPV4, A4,
	  8080, 0, 0, 0 },
	{ "eol ends the list", "00 " V4, "", "", 0, 0, "", 0, 0, 0, 0 },
	{ "length 0", "c8 00 1f 90 c0 00 02 0a", "", "", 0, 0, "", 0, 0, 1, 0 },
	{ "length 1", "01 05 01 " V4, "", "", 0, 0, "", 0, 0, 1, 0 },
	{ "overlong length", "c8 1e 1f 90 c0 00 02 0a", "", "", 0, 0, "", 0, 0, 1, 0 },
	{ "length past the end", "02 04 05 b4 c8 08 1f 90 c0 00", "", "", 0, 0, "", 0, 0, 1, 0 },
	{ "truncated: kind without length", "01 01 c8", "", "", 0, 0, "", 0, 0, 1, 0 },
	{ "truncated after valid toa", V4 " 02", "", "", 1, TOA_TYPE_IPV4, A4, 8080, 0, 1, 0 },
	{ "wrong length for ipv4 kind", "c8 06 1f 90 c0 00", "", "", 0, 0, "", 0, 0, 1, 0 },
	{ "wrong length then valid", "c8 0a 1f 90 c0 00 02 0a 00 00 " V4B, "", "", 1,
	  TOA_TYPE_IPV4, "c6 33 64 07", 80, 10, 1, 0 },
	{ "nat64 kind with length 8", "fd 08 1f 90 c0 00 02 0a", "", "", 0, 0, "", 0, 0, 1, 0 },
	{ "ipv4 kind with length 20", "c8 14 30 39 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01",
	  "", "", 0, 0, "", 0, 0, 1, 0 },
	{ "duplicate ipv4: first wins", V4 " " V4B, "", "", 1, TOA_TYPE_IPV4, A4, 8080, 0, 0, 1 },
	{ "three ipv4: first kept, two duplicates", V4 " " V4B " " V4B, "", "", 1, TOA_TYPE_IPV4, A4,
	  8080, 0, 0, 2 },
	{ "ipv4 then nat64: first wins", V4 " " N64, "", "", 1, TOA_TYPE_IPV4, A4, 8080, 0, 0,
	  1 },
	{ "nat64 then ipv4: first wins", N64 " " V4, "", "", 1, TOA_TYPE_NAT64, A6, 12345, 0, 0,
	  1 },
	{ "unconfigured kind ignored", V4, "-", "", 0, 0, "", 0, 0, 0, 0 },
	{ "unconfigured kind wrong length not malformed", "c8 06 1f 90 c0 00", "-", "", 0, 0, "",
	  0, 0, 0, 0 },
	{ "extra kind 254 length 8", "fe 08 1f 90 c0 00 02 0a", "254", "254", 1, TOA_TYPE_IPV4,
	  A4, 8080, 0, 0, 0 },
	{ "extra kind 254 length 20",
	  "fe 14 30 39 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01", "254", "254", 1,
	  TOA_TYPE_NAT64, A6, 12345, 0, 0, 0 },
	{ "kind 254 not configured", "fe 08 1f 90 c0 00 02 0a", "", "", 0, 0, "", 0, 0, 0, 0 },
	{ "malformed structure stops before toa", "02 00 " V4, "", "", 0, 0, "", 0, 0, 1, 0 },
	{ "toa at the end of 40 bytes",
	  "01 01 08 0a 00 00 00 01 00 00 00 00 01 01 08 0a 00 00 00 02 00 00 00 00 01 01 01 01 01 01 01 01 " V4,
	  "", "", 1, TOA_TYPE_IPV4, A4, 8080, 32, 0, 0 },
};

static size_t hex_decode(const char *hex, uint8_t *out, size_t max)
{
	size_t n = 0;

	while (*hex) {
		unsigned int b;

		if (*hex == ' ') {
			hex++;
			continue;
		}
		if (n == max || sscanf(hex, "%2x", &b) != 1) {
			fprintf(stderr, "bad hex in test table: %s\n", hex);
			exit(2);
		}
		out[n++] = (uint8_t)b;
		hex += 2;
	}
	return n;
}

static void add_kinds(uint32_t *set, const char *list)
{
	char buf[64], *tok, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", list);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		toa_kinds_add(set, (uint8_t)atoi(tok));
}

static int run_case(const struct unit_case *c)
{
	uint8_t opt[256], addr[16];
	struct toa_parse_result r;
	struct toa_kinds k;
	size_t len = hex_decode(c->hex, opt, sizeof(opt));
	size_t alen = hex_decode(c->addr, addr, sizeof(addr));
	int found, ok;

	toa_kinds_clear(&k);
	if (strcmp(c->ipv4, "-") != 0) {
		toa_kinds_add(k.ipv4, 200);
		add_kinds(k.ipv4, c->ipv4);
	}
	toa_kinds_add(k.nat64, 253);
	add_kinds(k.nat64, c->nat64);

	found = toa_parse_options(opt, len, &k, &r);
	ok = found == c->found && r.malformed == c->malformed && r.duplicates == c->duplicates;
	if (ok && c->found)
		ok = r.toa.type == c->type && r.toa.port == c->port && r.offset == c->offset &&
		     memcmp(r.toa.addr, addr, alen) == 0;
	/* without duplicates the last valid option is the first one */
	if (ok && c->found && !c->duplicates)
		ok = r.last_offset == r.offset && !memcmp(&r.last, &r.toa, sizeof(r.toa));
	printf("%s - %s (found=%d type=%u port=%u offset=%u malformed=%u duplicates=%u)\n",
	       ok ? "ok" : "not ok", c->name, found, r.toa.type, r.toa.port, r.offset,
	       r.malformed, r.duplicates);
	return ok;
}

/* Addresses a balancer never writes: toa_addr_check() verdicts. */
struct addr_case {
	uint8_t type;
	const char *addr;	/* hex, 4 or 16 bytes */
	enum toa_addr_verdict want;
};

static const struct addr_case addr_cases[] = {
	{ TOA_TYPE_IPV4, A4, TOA_ADDR_OK },
	{ TOA_TYPE_IPV4, "00 00 00 00", TOA_ADDR_UNSPECIFIED },
	{ TOA_TYPE_IPV4, "00 01 02 03", TOA_ADDR_UNSPECIFIED },
	{ TOA_TYPE_IPV4, "7f 00 00 01", TOA_ADDR_LOOPBACK },
	{ TOA_TYPE_IPV4, "7f ff ff ff", TOA_ADDR_LOOPBACK },
	{ TOA_TYPE_IPV4, "80 00 00 00", TOA_ADDR_OK },
	{ TOA_TYPE_IPV4, "df ff ff ff", TOA_ADDR_OK },
	{ TOA_TYPE_IPV4, "e0 00 00 01", TOA_ADDR_MULTICAST },
	{ TOA_TYPE_IPV4, "ef ff ff ff", TOA_ADDR_MULTICAST },
	{ TOA_TYPE_IPV4, "ff ff ff ff", TOA_ADDR_BROADCAST },
	{ TOA_TYPE_NAT64, A6, TOA_ADDR_OK },
	{ TOA_TYPE_NAT64, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", TOA_ADDR_UNSPECIFIED },
	{ TOA_TYPE_NAT64, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01", TOA_ADDR_LOOPBACK },
	{ TOA_TYPE_NAT64, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 02", TOA_ADDR_OK },
	{ TOA_TYPE_NAT64, "ff 02 00 00 00 00 00 00 00 00 00 00 00 00 00 01", TOA_ADDR_MULTICAST },
	{ TOA_TYPE_NAT64, "00 00 00 00 00 00 00 00 00 00 ff ff cb 00 71 01", TOA_ADDR_V4MAPPED },
	{ TOA_TYPE_NAT64, "00 64 ff 9b 00 00 00 00 00 00 00 00 cb 00 71 01", TOA_ADDR_OK },
};

static int run_addr_case(const struct addr_case *c)
{
	struct toa_addr a;
	enum toa_addr_verdict got;

	memset(&a, 0, sizeof(a));
	a.type = c->type;
	hex_decode(c->addr, a.addr, sizeof(a.addr));
	got = toa_addr_check(&a);
	printf("%s - address %s -> verdict %d (want %d)\n", got == c->want ? "ok" : "not ok",
	       c->addr, got, c->want);
	return got == c->want;
}

/* `ports` values: expected readback ("" = no entries) or NULL for a rejected value. */
static const struct {
	const char *in, *want, *bad;
} port_cases[] = {
	{ "", "", NULL },
	{ "  ", "", NULL },
	{ "80", "80-80", NULL },
	{ " 443, 8000-8080 ,9000-9000", "443-443,8000-8080,9000-9000", NULL },
	{ "1,65535", "1-1,65535-65535", NULL },
	{ "0", NULL, "0" },
	{ "65536", NULL, "65536" },
	{ "9000-8000", NULL, "9000-8000" },
	{ "80,http", NULL, "http" },
	{ "1-", NULL, "1-" },
	{ "-5", NULL, "-5" },
	{ "80,,81", NULL, "" },
	{ "80,", NULL, "" },
	{ "1-2-3", NULL, "1-2-3" },
	{ "+80", NULL, "+80" },
	{ "000080", NULL, "000080" },
	{ "1,2,3,4,5", NULL, "5" },	/* max 4 in this table */
};

static int run_port_case(unsigned int i)
{
	struct toa_port_range r[4];
	char got[128] = "", bad[64] = "";
	size_t off = 0, len = 0;
	int n = toa_parse_port_list(port_cases[i].in, strlen(port_cases[i].in), r, 4, &off, &len);
	int j, ok;

	for (j = 0; j < n; j++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%u-%u", j ? "," : "", r[j].lo,
			 r[j].hi);
	if (n < 0)
		snprintf(bad, sizeof(bad), "%.*s", (int)len, port_cases[i].in + off);
	ok = port_cases[i].want ? n >= 0 && !strcmp(got, port_cases[i].want) :
				  n < 0 && !strcmp(bad, port_cases[i].bad);
	printf("%s - ports '%s' -> %s%s%s\n", ok ? "ok" : "not ok", port_cases[i].in,
	       n < 0 ? "rejected at '" : got, n < 0 ? bad : "", n < 0 ? "'" : "");
	return ok;
}

/* Kinds, CIDR lists, trust and header location: the documented cases. */
static const struct {
	const char *in;
	const char *want;	/* kinds written, comma list; NULL: rejected */
	const char *bad;	/* the entry named when rejected */
} kind_cases[] = {
	{ "\t200, 254,200 ,9 ", "200,254,9", NULL },
	{ "", "", NULL },
	{ "200,300", NULL, "300" },
	{ "200,9z", NULL, "9z" },
	{ "1", NULL, "1" },
	{ "200,,201", NULL, "" },
	{ "+200", NULL, "+200" },
	{ "0200", NULL, "0200" },
};

static int run_kind_case(unsigned int i)
{
	uint8_t k[256];
	char got[256] = "", bad[64] = "";
	size_t off = 0, len = 0;
	int n = toa_parse_kind_list(kind_cases[i].in, strlen(kind_cases[i].in), k, 256, &off, &len);
	int j, ok;

	for (j = 0; j < n; j++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%u", j ? "," : "", k[j]);
	if (n < 0)
		snprintf(bad, sizeof(bad), "%.*s", (int)len, kind_cases[i].in + off);
	ok = kind_cases[i].want ? n >= 0 && !strcmp(got, kind_cases[i].want) :
				  n < 0 && !strcmp(bad, kind_cases[i].bad);
	printf("%s - kinds '%s' -> %s\n", ok ? "ok" : "not ok", kind_cases[i].in, n < 0 ? bad : got);
	return ok;
}

static const struct {
	const char *in;
	int n;			/* entries, or -1 */
	enum toa_cidr_error why;
	const char *probe;	/* an IPv4 source, dotted */
	int trusted;		/* verdict for probe (accept_any 0) */
} cidr_cases[] = {
	{ "10.0.0.0/8, 192.0.2.7", 2, TOA_CIDR_OK, "10.200.1.1", 1 },
	{ "10.0.0.0/8, 192.0.2.7", 2, TOA_CIDR_OK, "192.0.2.8", 0 },
	{ "10.0.0.0/9", 1, TOA_CIDR_OK, "10.128.0.1", 0 },
	{ "0.0.0.0/0", 1, TOA_CIDR_OK, "203.0.113.1", 1 },
	{ "fd00::/64,2001:DB8:0:0::/64", 2, TOA_CIDR_OK, "10.0.0.1", 0 },
	{ "::ffff:10.0.0.0/104", 1, TOA_CIDR_OK, "10.0.0.1", 0 },
	{ "", 0, TOA_CIDR_OK, "10.0.0.1", 0 },
	{ "10.0.0.1/24", -1, TOA_CIDR_HOST_BITS, NULL, 0 },
	{ "10.0.0.0/33", -1, TOA_CIDR_BAD_PREFIX, NULL, 0 },
	{ "2001:db8::/129", -1, TOA_CIDR_BAD_PREFIX, NULL, 0 },
	{ "010.0.0.0/8", -1, TOA_CIDR_BAD_ADDRESS, NULL, 0 },
	{ "1:2:3:4:5:6:7:8::", -1, TOA_CIDR_BAD_ADDRESS, NULL, 0 },
	{ "1::2::3", -1, TOA_CIDR_BAD_ADDRESS, NULL, 0 },
	{ "garbage", -1, TOA_CIDR_BAD_ADDRESS, NULL, 0 },
	{ "10.0.0.0/8,", -1, TOA_CIDR_BAD_ADDRESS, NULL, 0 },
};

static int run_cidr_case(unsigned int i)
{
	struct toa_cidr c[8];
	enum toa_cidr_error why;
	size_t off = 0, len = 0;
	uint8_t a[4];
	int n = toa_parse_cidr_list(cidr_cases[i].in, strlen(cidr_cases[i].in), c, 8, &off, &len, &why);
	int ok = n == cidr_cases[i].n && why == cidr_cases[i].why;

	if (ok && n >= 0 && cidr_cases[i].probe) {
		unsigned int p[4];

		sscanf(cidr_cases[i].probe, "%u.%u.%u.%u", &p[0], &p[1], &p[2], &p[3]);
		a[0] = (uint8_t)p[0], a[1] = (uint8_t)p[1], a[2] = (uint8_t)p[2], a[3] = (uint8_t)p[3];
		ok = toa_trusted_v4(c, (unsigned int)n, 0, a) == cidr_cases[i].trusted &&
		     toa_trusted_v4(c, (unsigned int)n, 1, a) == (n ? cidr_cases[i].trusted : 1);
	}
	printf("%s - trusted_sources '%s' -> %d entries (reason %d)%s%s\n", ok ? "ok" : "not ok",
	       cidr_cases[i].in, n, why, cidr_cases[i].probe ? ", source " : "",
	       cidr_cases[i].probe ? cidr_cases[i].probe : "");
	return ok;
}

/* IPv4 + TCP headers: a SYN with an 8-byte option, then cut or altered. */
static int run_locate_cases(void)
{
	static const uint8_t syn[] = {
		0x45, 0, 0, 48, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
		0x9c, 0x40, 0x1f, 0x90, 1, 2, 3, 4, 0, 0, 0, 0, 0x70, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
		200, 8, 0x1f, 0x90, 192, 0, 2, 10,
	};
	uint8_t b[sizeof(syn)];
	struct toa_seg_v4 seg;
	int ok = 1, r;
	size_t n;

	r = toa_locate_v4(syn, sizeof(syn), &seg);
	ok &= r == 0 && seg.sport == 40000 && seg.dport == 8080 && seg.seq == 0x01020304 &&
	      seg.flags == 0x02 && seg.opt_off == 40 && seg.opt_len == 8 && seg.payload == 0;
	/* every shorter buffer lacks part of the TCP header */
	for (n = 0; n < sizeof(syn); n++) {
		uint8_t *cut = malloc(n);	/* n == 0: a zero-length buffer */

		if (!cut && n)
			abort();
		if (n)
			memcpy(cut, syn, n);
		ok &= toa_locate_v4(cut, n, &seg) == -1;
		free(cut);
	}
	memcpy(b, syn, sizeof(b));
	b[3] = 40;	/* total length shorter than the headers */
	ok &= toa_locate_v4(b, sizeof(b), &seg) == -1;
	memcpy(b, syn, sizeof(b));
	b[6] = 0x20;	/* more fragments */
	ok &= toa_locate_v4(b, sizeof(b), &seg) == -1;
	memcpy(b, syn, sizeof(b));
	b[32] = 0x40;	/* doff 4 */
	ok &= toa_locate_v4(b, sizeof(b), &seg) == -1;
	memcpy(b, syn, sizeof(b));
	b[9] = 17;	/* UDP */
	ok &= toa_locate_v4(b, sizeof(b), &seg) == -1;
	printf("%s - locate IPv4/TCP headers: whole SYN, every truncation, short total length, fragment, doff 4, UDP\n",
	       ok ? "ok" : "not ok");
	return ok;
}

/* The TCP header of an IPv6 segment (after its extension headers). */
static int run_locate_tcp_cases(void)
{
	static const uint8_t tcp[] = {
		0x9c, 0x40, 0x1f, 0x90, 1, 2, 3, 4, 0, 0, 0, 0, 0x80, 0x10, 0xfa, 0xf0, 0, 0, 0, 0,
		1, 1, 253, 20, 0x1f, 0x90, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
	};
	uint8_t b[sizeof(tcp)];
	struct toa_seg_v4 seg;
	int ok = 1, r;
	size_t n;

	/* doff 8 = 32 bytes of header; 10 more bytes of payload */
	r = toa_locate_tcp(tcp, sizeof(tcp), sizeof(tcp), &seg);
	ok &= r == 0 && seg.sport == 40000 && seg.dport == 8080 && seg.seq == 0x01020304 &&
	      seg.flags == 0x10 && seg.opt_off == 20 && seg.opt_len == 12 && seg.payload == 10;
	for (n = 0; n < 32; n++) {
		uint8_t *cut = malloc(n);

		if (!cut && n)
			abort();
		if (n)
			memcpy(cut, tcp, n);
		ok &= toa_locate_tcp(cut, n, sizeof(tcp), &seg) == -1;
		free(cut);
	}
	ok &= toa_locate_tcp(tcp, 32, 32, &seg) == 0 && seg.payload == 0;
	ok &= toa_locate_tcp(tcp, sizeof(tcp), 31, &seg) == -1;	/* TCP length short */
	memcpy(b, tcp, sizeof(b));
	b[12] = 0x40;	/* doff 4 */
	ok &= toa_locate_tcp(b, sizeof(b), sizeof(b), &seg) == -1;
	printf("%s - locate TCP header of an IPv6 segment: whole ACK, every truncation, short TCP length, doff 4\n",
	       ok ? "ok" : "not ok");
	return ok;
}

/* IPv6 sources match IPv6 entries only; IPv4 sources IPv4 entries only. */
static int run_trust6_cases(void)
{
	static const char list[] = "10.0.0.0/8,fd00::/120,2001:db8::7";
	struct toa_cidr c[8];
	size_t off, len;
	enum toa_cidr_error why;
	uint8_t a[16], v4[4] = { 10, 1, 2, 3 };
	int n = toa_parse_cidr_list(list, strlen(list), c, 8, &off, &len, &why), ok = n == 3;

	inet_pton(AF_INET6, "fd00::2", a);
	ok &= toa_trusted_v6(c, 3, 0, a) == 1;
	inet_pton(AF_INET6, "fd00::1:2", a);	/* outside the /120 */
	ok &= toa_trusted_v6(c, 3, 0, a) == 0;
	inet_pton(AF_INET6, "2001:db8::7", a);
	ok &= toa_trusted_v6(c, 3, 0, a) == 1;
	inet_pton(AF_INET6, "2001:db8::8", a);
	ok &= toa_trusted_v6(c, 3, 0, a) == 0;
	inet_pton(AF_INET6, "::ffff:10.1.2.3", a);	/* an IPv4 entry never matches IPv6 */
	ok &= toa_trusted_v6(c, 3, 0, a) == 0;
	ok &= toa_trusted_v4(c, 3, 0, v4) == 1;
	ok &= toa_trusted_v4(c + 1, 2, 0, v4) == 0;	/* IPv6 entries never match IPv4 */
	ok &= toa_trusted_v6(c, 0, 0, a) == 0 && toa_trusted_v6(c, 0, 1, a) == 1;
	printf("%s - trust rule for IPv6 sources: /120, /128, outside, IPv4-mapped, empty list with and without accept_any\n",
	       ok ? "ok" : "not ok");
	return ok;
}

int main(void)
{
	unsigned int i, passed = 0, failed = 0;

	for (i = 0; i < sizeof(port_cases) / sizeof(port_cases[0]); i++) {
		if (run_port_case(i))
			passed++;
		else
			failed++;
	}

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (run_case(&cases[i]))
			passed++;
		else
			failed++;
	}
	for (i = 0; i < sizeof(addr_cases) / sizeof(addr_cases[0]); i++) {
		if (run_addr_case(&addr_cases[i]))
			passed++;
		else
			failed++;
	}
	for (i = 0; i < sizeof(kind_cases) / sizeof(kind_cases[0]); i++) {
		if (run_kind_case(i))
			passed++;
		else
			failed++;
	}
	for (i = 0; i < sizeof(cidr_cases) / sizeof(cidr_cases[0]); i++) {
		if (run_cidr_case(i))
			passed++;
		else
			failed++;
	}
	if (run_locate_tcp_cases())
		passed++;
	else
		failed++;
	if (run_trust6_cases())
		passed++;
	else
		failed++;
	if (run_locate_cases())
		passed++;
	else
		failed++;
	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
