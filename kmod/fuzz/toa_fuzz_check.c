// SPDX-License-Identifier: GPL-2.0
/*
 * Differential check of toa_parse_options() (the module's own source, built for
 * userspace) against a reference written differently: it first splits the option list
 * into records, then picks the TOA. Any disagreement, or any read outside the input
 * (AddressSanitizer), aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../toa_parse.h"
#include "toa_fuzz_check.h"

struct ref_result {
	int found;
	uint8_t type;
	uint32_t offset;
	uint32_t last_offset;
	uint8_t last_type;
	uint32_t malformed;
	uint32_t duplicates;
};

static int ref_in(const uint32_t *set, unsigned int kind)
{
	return (set[kind / 32] & (1u << (kind % 32))) != 0;
}

static void ref_parse(const uint8_t *opt, size_t len, const struct toa_kinds *k,
		      struct ref_result *r)
{
	size_t starts[4096], lens[4096], n = 0, pos = 0, i;

	memset(r, 0, sizeof(*r));
	/* Pass 1: delimit records (kind != NOP). */
	while (pos < len && n < 4096) {
		if (opt[pos] == 0)
			break;
		if (opt[pos] == 1) {
			pos += 1;
			continue;
		}
		if (pos + 1 >= len || opt[pos + 1] < 2 || pos + opt[pos + 1] > len) {
			r->malformed += 1;
			break;
		}
		starts[n] = pos;
		lens[n] = opt[pos + 1];
		n++;
		pos += opt[pos + 1];
	}
	if (n == 4096 && pos < len)
		abort();	/* inputs are bounded below so this cannot happen */
	/* Pass 2: classify records. */
	for (i = 0; i < n; i++) {
		unsigned int kind = opt[starts[i]];
		int as4 = ref_in(k->ipv4, kind), as6 = ref_in(k->nat64, kind);
		uint8_t type = 0;

		if (as4 && lens[i] == 8)
			type = TOA_TYPE_IPV4;
		else if (as6 && lens[i] == 20)
			type = TOA_TYPE_NAT64;
		else if (as4 || as6)
			r->malformed += 1;
		if (!type)
			continue;
		r->last_type = type;
		r->last_offset = (uint32_t)starts[i];
		if (r->found) {
			r->duplicates += 1;
		} else {
			r->found = 1;
			r->type = type;
			r->offset = (uint32_t)starts[i];
		}
	}
}

static void fail(const char *what, const uint8_t *data, size_t size);

/*
 * Reference for toa_addr_check(), written from the address ranges as numbers (IPv4 as a
 * 32-bit value, IPv6 as two 64-bit halves) rather than byte tests.
 */
static void ref_check_addr(const struct toa_addr *a, const uint8_t *data, size_t size)
{
	enum toa_addr_verdict want = TOA_ADDR_OK;
	unsigned int i;

	if (a->type == TOA_TYPE_IPV4) {
		uint32_t v = ((uint32_t)a->addr[0] << 24) | ((uint32_t)a->addr[1] << 16) |
			     ((uint32_t)a->addr[2] << 8) | a->addr[3];

		if (v <= 0x00ffffffu)
			want = TOA_ADDR_UNSPECIFIED;
		else if (v >= 0x7f000000u && v <= 0x7fffffffu)
			want = TOA_ADDR_LOOPBACK;
		else if (v >= 0xe0000000u && v <= 0xefffffffu)
			want = TOA_ADDR_MULTICAST;
		else if (v >= 0xf0000000u)
			want = TOA_ADDR_BROADCAST;
	} else {
		uint64_t hi = 0, lo = 0;

		for (i = 0; i < 8; i++) {
			hi = (hi << 8) | a->addr[i];
			lo = (lo << 8) | a->addr[8 + i];
		}
		if (!hi && !lo)
			want = TOA_ADDR_UNSPECIFIED;
		else if (!hi && lo == 1)
			want = TOA_ADDR_LOOPBACK;
		else if (hi >> 56 == 0xff)
			want = TOA_ADDR_MULTICAST;
		else if (!hi && lo >> 32 == 0xffffu)
			want = TOA_ADDR_V4MAPPED;
	}
	if (toa_addr_check(a) != want)
		fail("address verdict", data, size);
}

static void fail(const char *what, const uint8_t *data, size_t size)
{
	size_t i;

	fprintf(stderr, "parser mismatch: %s; input:", what);
	for (i = 0; i < size; i++)
		fprintf(stderr, " %02x", data[i]);
	fprintf(stderr, "\n");
	abort();
}

/*
 * Reference for toa_parse_port_list(): tokens cut at each comma with memchr, each token
 * trimmed, then read with strtoul on a terminated copy after a character-class check.
 * Returns entries, or -1 with the bad token's span.
 */
static int ref_ports(const char *s, size_t len, struct toa_port_range *out, unsigned int max,
		     size_t *boff, size_t *blen)
{
	size_t pos = 0, blank = 0;
	unsigned int n = 0;

	while (blank < len && (s[blank] == ' ' || s[blank] == '\t' || s[blank] == '\n'))
		blank++;
	if (blank == len)
		return 0;
	for (;;) {
		const char *comma = memchr(s + pos, ',', len - pos);
		size_t tend = comma ? (size_t)(comma - s) : len, a = pos, b = tend, k, dashes = 0;
		char lo_txt[16], hi_txt[16], *dash;
		unsigned long lo, hi;

		while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\n'))
			a++;
		while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\n'))
			b--;
		*boff = a;
		*blen = b - a;
		if (n == max || b == a || b - a > 11)
			return -1;
		for (k = a; k < b; k++) {
			if (s[k] == '-')
				dashes++;
			else if (s[k] < '0' || s[k] > '9')
				return -1;
		}
		if (dashes > 1)
			return -1;
		memset(lo_txt, 0, sizeof(lo_txt));
		memcpy(lo_txt, s + a, b - a);
		dash = strchr(lo_txt, '-');
		if (dash) {
			*dash = 0;
			strcpy(hi_txt, dash + 1);
		} else {
			strcpy(hi_txt, lo_txt);
		}
		if (!lo_txt[0] || !hi_txt[0] || strlen(lo_txt) > 5 || strlen(hi_txt) > 5)
			return -1;
		lo = strtoul(lo_txt, NULL, 10);
		hi = strtoul(hi_txt, NULL, 10);
		if (lo < 1 || lo > 65535 || hi < lo || hi > 65535)
			return -1;
		out[n].lo = (uint16_t)lo;
		out[n].hi = (uint16_t)hi;
		n++;
		if (!comma)
			return (int)n;
		pos = tend + 1;
	}
}

static void check_ports(const uint8_t *data, size_t size)
{
	struct toa_port_range got[8], want[8];
	size_t go = 0, gl = 0, wo = 0, wl = 0;
	char *copy = malloc(size);	/* exact size, no terminator: ASan sees any overread */
	int n, r, i;

	if (!copy && size)
		abort();
	if (size)
		memcpy(copy, data, size);
	n = toa_parse_port_list(copy, size, got, 8, &go, &gl);
	free(copy);
	r = ref_ports((const char *)data, size, want, 8, &wo, &wl);
	if (n != r)
		fail("ports: entry count", data, size);
	if (n < 0 && (go != wo || gl != wl))
		fail("ports: bad entry span", data, size);
	for (i = 0; i < n; i++)
		if (got[i].lo != want[i].lo || got[i].hi != want[i].hi)
			fail("ports: entry", data, size);
}

void toa_fuzz_check_one(const uint8_t *data, size_t size)
{
	struct toa_parse_result res;
	struct ref_result ref;
	struct toa_kinds k;
	const uint8_t *opt;
	size_t len, i;
	int found;

	if (size > 8192)
		return;
	/* The same bytes as a `ports` parameter value. */
	check_ports(data, size);
	toa_kinds_clear(&k);
	toa_kinds_add(k.ipv4, 200);
	toa_kinds_add(k.nat64, 253);
	if (size >= 1 && data[0] >= TOA_KIND_MIN)
		toa_kinds_add(k.ipv4, data[0]);
	if (size >= 2 && data[1] >= TOA_KIND_MIN)
		toa_kinds_add(k.nat64, data[1]);
	opt = size >= 2 ? data + 2 : data + size;
	len = size >= 2 ? size - 2 : 0;

	/* The parser gets an exact-size heap copy so ASan sees any overread. */
	{
		/* malloc(0): a zero-length input gets a zero-length buffer, so any read is caught */
		uint8_t *copy = malloc(len);

		if (!copy && len)
			abort();
		if (len)
			memcpy(copy, opt, len);
		found = toa_parse_options(copy, len, &k, &res);
		free(copy);
	}
	ref_parse(opt, len, &k, &ref);

	if (found != ref.found)
		fail("found", data, size);
	if (res.malformed != ref.malformed)
		fail("malformed count", data, size);
	if (res.duplicates != ref.duplicates)
		fail("duplicate count", data, size);
	if (!found) {
		if (res.toa.type != TOA_TYPE_NONE)
			fail("type set without result", data, size);
		return;
	}
	if (res.toa.type != ref.type || res.offset != ref.offset)
		fail("type/offset", data, size);
	if (res.last.type != ref.last_type || res.last_offset != ref.last_offset)
		fail("last type/offset", data, size);
	if (res.last.port != ((opt[res.last_offset + 2] << 8) | opt[res.last_offset + 3]))
		fail("last port", data, size);
	for (i = 0; i < 16; i++) {
		uint8_t want = 0;

		if (i < (res.last.type == TOA_TYPE_IPV4 ? 4u : 16u))
			want = opt[res.last_offset + 4 + i];
		if (res.last.addr[i] != want)
			fail("last address bytes", data, size);
	}
	ref_check_addr(&res.toa, data, size);
	ref_check_addr(&res.last, data, size);
	/* Decoded fields are exactly the option's bytes. */
	if (res.toa.kind != opt[res.offset])
		fail("kind", data, size);
	if (res.toa.port != ((opt[res.offset + 2] << 8) | opt[res.offset + 3]))
		fail("port", data, size);
	for (i = 0; i < 16; i++) {
		uint8_t want = 0;

		if (i < (res.toa.type == TOA_TYPE_IPV4 ? 4u : 16u))
			want = opt[res.offset + 4 + i];
		if (res.toa.addr[i] != want)
			fail("address bytes", data, size);
	}
}
