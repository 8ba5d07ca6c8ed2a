// SPDX-License-Identifier: GPL-2.0
/*
 * Differential check of toa_parse_options() (the module's own source, built for
 * userspace) against a reference written differently: it first splits the option list
 * into records, then picks the TOA. Any disagreement, or any read outside the input
 * (AddressSanitizer), aborts.
 */
#include <arpa/inet.h>
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


/* An exact-size heap copy (no terminator): ASan sees a read past the end; size 0 too. */
static char *exact_copy(const uint8_t *data, size_t size)
{
	char *copy = malloc(size);

	if (!copy && size)
		abort();
	if (size)
		memcpy(copy, data, size);
	return copy;
}

/* Splits at commas with strtok-free index scanning: returns the entry spans, or -1 if > max. */
static int ref_split(const char *s, size_t len, size_t *starts, size_t *ends, int max)
{
	int n = 0;
	size_t pos = 0;

	for (;;) {
		const char *comma = memchr(s + pos, ',', len - pos);
		size_t e = comma ? (size_t)(comma - s) : len, a = pos;

		while (a < e && strchr(" \t\n", s[a]) && s[a])
			a++;
		while (e > a && strchr(" \t\n", s[e - 1]) && s[e - 1])
			e--;
		if (n == max)
			return -1;
		starts[n] = a;
		ends[n] = e;
		n++;
		if (!comma)
			return n;
		pos = (size_t)(comma - s) + 1;
	}
}

static int ref_all_blank(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n')
			return 0;
	return 1;
}

/*
 * Reference for toa_parse_kind_list(): entries split first, each read with strtoul from
 * a terminated copy after a digits-only check, duplicates dropped with a seen[] table.
 */
static int ref_kinds(const char *s, size_t len, uint8_t *out, unsigned int max, size_t *boff,
		     size_t *blen)
{
	static size_t st[8192], en[8192];
	unsigned char seen[256] = { 0 };
	unsigned int n = 0;
	int parts, i;

	if (ref_all_blank(s, len))
		return 0;
	parts = ref_split(s, len, st, en, 8192);
	for (i = 0; i < parts; i++) {
		char txt[8];
		size_t l = en[i] - st[i], k;
		unsigned long v;

		*boff = st[i];
		*blen = l;
		if (!l || l > 3)
			return -1;
		for (k = 0; k < l; k++)
			if (s[st[i] + k] < '0' || s[st[i] + k] > '9')
				return -1;
		memcpy(txt, s + st[i], l);
		txt[l] = 0;
		v = strtoul(txt, NULL, 10);
		if (v < 2 || v > 255)
			return -1;
		if (seen[v])
			continue;
		if (n == max)
			return -1;
		seen[v] = 1;
		out[n++] = (uint8_t)v;
	}
	return (int)n;
}

static void check_kinds(const uint8_t *data, size_t size)
{
	uint8_t got[256], want[256];
	size_t go = 0, gl = 0, wo = 0, wl = 0;
	char *copy = exact_copy(data, size);
	/* a small max too, so that "too many" is reached */
	unsigned int max = size && (data[0] & 1) ? 3 : 256;
	int n = toa_parse_kind_list(copy, size, got, max, &go, &gl);
	int r = ref_kinds((const char *)data, size, want, max, &wo, &wl);

	free(copy);
	if (n != r)
		fail("kinds: entry count", data, size);
	if (n < 0 && (go != wo || gl != wl))
		fail("kinds: bad entry span", data, size);
	if (n > 0 && memcmp(got, want, (size_t)n))
		fail("kinds: entries", data, size);
}

/*
 * Reference for one trusted_sources entry: libc inet_pton() on a terminated copy of the
 * address part, strtoul for the prefix, host bits tested on a 32-bit value (IPv4) or bit
 * by bit from the right (IPv6).
 */
static enum toa_cidr_error ref_cidr(const char *s, size_t len, struct toa_cidr *c)
{
	const char *slash = memchr(s, '/', len);
	size_t alen = slash ? (size_t)(slash - s) : len, plen = slash ? len - alen - 1 : 0, k;
	char *txt;
	int v6, max, ok;
	long prefix;

	memset(c, 0, sizeof(*c));
	/* a NUL byte in the address is never valid; inet_pton needs a terminated copy */
	if (memchr(s, 0, alen))
		return TOA_CIDR_BAD_ADDRESS;
	txt = malloc(alen + 1);
	if (!txt)
		abort();
	memcpy(txt, s, alen);
	txt[alen] = 0;
	v6 = strchr(txt, ':') != NULL;
	ok = inet_pton(v6 ? AF_INET6 : AF_INET, txt, c->addr) == 1;
	free(txt);
	if (!ok)
		return TOA_CIDR_BAD_ADDRESS;
	max = v6 ? 128 : 32;
	prefix = max;
	if (slash) {
		char p[4];

		if (!plen || plen > 3)
			return TOA_CIDR_BAD_PREFIX;
		for (k = 0; k < plen; k++)
			if (slash[1 + k] < '0' || slash[1 + k] > '9')
				return TOA_CIDR_BAD_PREFIX;
		memcpy(p, slash + 1, plen);
		p[plen] = 0;
		prefix = strtol(p, NULL, 10);
		if (prefix > max)
			return TOA_CIDR_BAD_PREFIX;
	}
	if (!v6) {
		uint32_t a = ((uint32_t)c->addr[0] << 24) | ((uint32_t)c->addr[1] << 16) |
			     ((uint32_t)c->addr[2] << 8) | c->addr[3];
		uint32_t host = prefix == 32 ? 0 : 0xffffffffu >> prefix;

		if (a & host)
			return TOA_CIDR_HOST_BITS;
	} else {
		for (k = 128; (long)k > prefix; k--)
			if ((c->addr[(k - 1) >> 3] >> (7 - ((k - 1) & 7))) & 1)
				return TOA_CIDR_HOST_BITS;
	}
	c->family = v6 ? TOA_CIDR_V6 : TOA_CIDR_V4;
	c->prefix = (uint8_t)prefix;
	return TOA_CIDR_OK;
}

static int ref_cidrs(const char *s, size_t len, struct toa_cidr *out, unsigned int max,
		     size_t *boff, size_t *blen, enum toa_cidr_error *why)
{
	static size_t st[8192], en[8192];
	int parts, i;

	*why = TOA_CIDR_OK;
	if (ref_all_blank(s, len))
		return 0;
	parts = ref_split(s, len, st, en, 8192);
	for (i = 0; i < parts; i++) {
		*boff = st[i];
		*blen = en[i] - st[i];
		if ((unsigned int)i == max) {
			*why = TOA_CIDR_TOO_MANY;
			return -1;
		}
		*why = ref_cidr(s + st[i], en[i] - st[i], &out[i]);
		if (*why != TOA_CIDR_OK)
			return -1;
	}
	return parts;
}

/* Reference trust rule: 32-bit masks, as the module computed it before. */
static int ref_trusted(const struct toa_cidr *list, unsigned int n, int accept_any,
		       const uint8_t a[4])
{
	uint32_t v = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) | ((uint32_t)a[2] << 8) | a[3];
	unsigned int i;

	if (!n)
		return accept_any;
	for (i = 0; i < n; i++) {
		uint32_t net, mask;

		if (list[i].family != TOA_CIDR_V4)
			continue;
		net = ((uint32_t)list[i].addr[0] << 24) | ((uint32_t)list[i].addr[1] << 16) |
		      ((uint32_t)list[i].addr[2] << 8) | list[i].addr[3];
		mask = list[i].prefix ? 0xffffffffu << (32 - list[i].prefix) : 0;
		if ((v & mask) == net)
			return 1;
	}
	return 0;
}

/* Reference IPv6 trust rule: bit by bit over the prefix, IPv6 entries only. */
static int ref_trusted6(const struct toa_cidr *list, unsigned int n, int accept_any,
			const uint8_t a[16])
{
	unsigned int i, bit;

	if (!n)
		return accept_any;
	for (i = 0; i < n; i++) {
		int match = 1;

		if (list[i].family != TOA_CIDR_V6)
			continue;
		for (bit = 0; bit < list[i].prefix; bit++)
			if (((a[bit / 8] ^ list[i].addr[bit / 8]) >> (7 - bit % 8)) & 1)
				match = 0;
		if (match)
			return 1;
	}
	return 0;
}

/* The IPv6 trust rule on each entry's network, its neighbour and an input address. */
static void check_trust6(const struct toa_cidr *list, unsigned int n, const uint8_t *data,
			 size_t size)
{
	uint8_t probe[16];
	unsigned int i, bit;
	size_t k;

	memset(probe, 0, sizeof(probe));
	for (k = 0; k < 16 && k < size; k++)
		probe[k] = data[size - 1 - k];
	for (i = 0; i <= 2 * n + 1; i++) {
		uint8_t a[16];

		memcpy(a, probe, 16);
		if (i < n) {
			/* an IPv4 entry's bytes as an IPv6 address: IPv4 entries never match */
			memcpy(a, list[i].addr, 16);
		} else if (i >= n && i - n < n && list[i - n].family == TOA_CIDR_V6 &&
			   list[i - n].prefix) {
			bit = list[i - n].prefix - 1u;
			memcpy(a, list[i - n].addr, 16);
			a[bit / 8] ^= (uint8_t)(0x80 >> (bit % 8));
		}
		if (toa_trusted_v6(list, n, 0, a) != ref_trusted6(list, n, 0, a) ||
		    toa_trusted_v6(list, n, 1, a) != ref_trusted6(list, n, 1, a))
			fail("trust verdict (IPv6)", data, size);
	}
}

static void check_trust(const struct toa_cidr *list, unsigned int n, const uint8_t *data,
			size_t size)
{
	uint8_t probe[4] = { 0, 0, 0, 0 };
	unsigned int i, bit;
	size_t k;

	/* an address from the input's last bytes, each entry's own network, and neighbours */
	for (k = 0; k < 4 && k < size; k++)
		probe[k] = data[size - 1 - k];
	for (i = 0; i <= 2 * n + 1; i++) {
		uint8_t a[4];

		memcpy(a, probe, 4);
		if (i < n && list[i].family == TOA_CIDR_V4) {
			memcpy(a, list[i].addr, 4);
		} else if (i >= n && i - n < n && list[i - n].family == TOA_CIDR_V4 &&
			   list[i - n].prefix) {
			/* flip the last bit inside the prefix: outside this entry */
			bit = list[i - n].prefix - 1u;
			memcpy(a, list[i - n].addr, 4);
			a[bit / 8] ^= (uint8_t)(0x80 >> (bit % 8));
		}
		if (toa_trusted_v4(list, n, 0, a) != ref_trusted(list, n, 0, a) ||
		    toa_trusted_v4(list, n, 1, a) != ref_trusted(list, n, 1, a))
			fail("trust verdict", data, size);
	}
}

static void check_cidrs(const uint8_t *data, size_t size)
{
	static struct toa_cidr got[64], want[64];
	size_t go = 0, gl = 0, wo = 0, wl = 0;
	enum toa_cidr_error gw, ww;
	char *copy = exact_copy(data, size);
	unsigned int max = size && (data[0] & 1) ? 2 : 64;
	int n = toa_parse_cidr_list(copy, size, got, max, &go, &gl, &gw);
	int r = ref_cidrs((const char *)data, size, want, max, &wo, &wl, &ww);
	int i;

	free(copy);
	if (n != r)
		fail("cidrs: entry count", data, size);
	if (n < 0 && (go != wo || gl != wl || gw != ww))
		fail("cidrs: bad entry span or reason", data, size);
	for (i = 0; i < n; i++)
		if (got[i].family != want[i].family || got[i].prefix != want[i].prefix ||
		    memcmp(got[i].addr, want[i].addr, 16))
			fail("cidrs: entry", data, size);
	if (n >= 0) {
		check_trust(got, (unsigned int)n, data, size);
		check_trust6(got, (unsigned int)n, data, size);
	}
}

/*
 * Reference for toa_locate_v4(): each field read through a bounds-checked byte getter
 * that fails the whole lookup on any index past the input, then the length rules.
 */
struct ref_buf {
	const uint8_t *p;
	size_t n;
	int bad;
};

static unsigned int rb(struct ref_buf *b, size_t i)
{
	if (i >= b->n) {
		b->bad = 1;
		return 0;
	}
	return b->p[i];
}

static void check_locate(const uint8_t *data, size_t size)
{
	struct ref_buf b = { data, size > TOA_SEG_MAX ? TOA_SEG_MAX : size, 0 };
	struct toa_seg_v4 seg;
	uint8_t *copy = (uint8_t *)exact_copy(data, size);
	int got = toa_locate_v4(copy, size, &seg);
	unsigned int ver = rb(&b, 0) >> 4, ihl = (rb(&b, 0) & 15) * 4, tot = rb(&b, 2) << 8 | rb(&b, 3);
	unsigned int frag = (rb(&b, 6) << 8 | rb(&b, 7)) & 0x3fff, proto = rb(&b, 9);
	unsigned int doff = 0;
	int want;

	free(copy);
	if (size < 20) {
		if (got != -1)
			fail("locate: accepted fewer than 20 bytes", data, size);
		return;
	}
	want = ver == 4 && ihl >= 20 && proto == 6 && !frag;
	if (want) {
		doff = (rb(&b, ihl + 12) >> 4) * 4;
		/* the TCP header's last byte must exist in the input */
		rb(&b, ihl + (doff ? doff : 20) - 1);
		want = !b.bad && doff >= 20 && tot >= ihl + doff;
	}
	if (got != (want ? 0 : -1))
		fail("locate: verdict", data, size);
	if (!want)
		return;
	if (memcmp(seg.saddr, data + 12, 4) || memcmp(seg.daddr, data + 16, 4) ||
	    seg.sport != (data[ihl] << 8 | data[ihl + 1]) ||
	    seg.dport != (data[ihl + 2] << 8 | data[ihl + 3]) ||
	    seg.seq != ((uint32_t)data[ihl + 4] << 24 | (uint32_t)data[ihl + 5] << 16 |
			(uint32_t)data[ihl + 6] << 8 | data[ihl + 7]) ||
	    seg.flags != data[ihl + 13] || seg.opt_off != ihl + 20 || seg.opt_len != doff - 20 ||
	    seg.payload != tot - ihl - doff)
		fail("locate: fields", data, size);
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

/*
 * Reference for toa_locate_tcp() (the TCP side of IPv6 segments): the input is the TCP
 * header, its first two bytes read big-endian a second time as the TCP length the IPv6
 * layer would give (so short, exact and long lengths all occur).
 */
static void check_locate_tcp(const uint8_t *data, size_t size)
{
	struct ref_buf b = { data, size > TOA_SEG_MAX ? TOA_SEG_MAX : size, 0 };
	struct toa_seg_v4 seg;
	uint8_t *copy = (uint8_t *)exact_copy(data, size);
	uint32_t tcp_len = size >= 2 ? (uint32_t)(data[0] << 8 | data[1]) : 0;
	int got = toa_locate_tcp(copy, size, tcp_len, &seg);
	unsigned int doff;
	int want;

	free(copy);
	doff = (rb(&b, 12) >> 4) * 4;
	rb(&b, 19);
	if (!b.bad && doff >= 20)
		rb(&b, doff - 1);
	want = !b.bad && doff >= 20 && tcp_len >= doff;
	if (got != (want ? 0 : -1))
		fail("locate_tcp: verdict", data, size);
	if (!want)
		return;
	if (seg.sport != (data[0] << 8 | data[1]) || seg.dport != (data[2] << 8 | data[3]) ||
	    seg.seq != ((uint32_t)data[4] << 24 | (uint32_t)data[5] << 16 |
			(uint32_t)data[6] << 8 | data[7]) ||
	    seg.flags != data[13] || seg.opt_off != 20 || seg.opt_len != doff - 20 ||
	    seg.payload != tcp_len - doff)
		fail("locate_tcp: fields", data, size);
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
	/* The same bytes as a `ports`, kinds and trusted_sources value, and as a packet. */
	check_ports(data, size);
	check_kinds(data, size);
	check_cidrs(data, size);
	check_locate(data, size);
	check_locate_tcp(data, size);
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
