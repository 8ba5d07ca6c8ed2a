// SPDX-License-Identifier: GPL-2.0
/*
 * TCP option parser for TOA. Shared verbatim by the module and the userspace fuzzer
 * (kmod/fuzz/), so it may only use the types from toa_parse_compat.h and no library calls.
 */
#include "toa_parse.h"

void toa_kinds_clear(struct toa_kinds *k)
{
	unsigned int i;

	for (i = 0; i < 8; i++) {
		k->ipv4[i] = 0;
		k->nat64[i] = 0;
	}
}

void toa_kinds_add(uint32_t *set, uint8_t kind)
{
	set[kind >> 5] |= (uint32_t)1 << (kind & 31);
}

int toa_kinds_has(const uint32_t *set, uint8_t kind)
{
	return (set[kind >> 5] >> (kind & 31)) & 1;
}

static void toa_decode(const uint8_t *o, uint8_t type, struct toa_addr *out)
{
	unsigned int n = type == TOA_TYPE_IPV4 ? 4 : 16;
	unsigned int i;

	out->type = type;
	out->kind = o[0];
	out->port = (uint16_t)((o[2] << 8) | o[3]);
	for (i = 0; i < 16; i++)
		out->addr[i] = i < n ? o[4 + i] : 0;
}

int toa_parse_options(const uint8_t *opt, size_t len, const struct toa_kinds *kinds,
		      struct toa_parse_result *res)
{
	size_t i = 0;

	/* Only what a walk without TOA leaves: toa and last are written whole when found. */
	res->toa.type = TOA_TYPE_NONE;
	res->offset = 0;
	res->last.type = TOA_TYPE_NONE;
	res->last_offset = 0;
	res->malformed = 0;
	res->duplicates = 0;

	while (i < len) {
		uint8_t kind = opt[i];
		uint8_t olen, type;
		int is4, is6;

		if (kind == TOA_OPT_EOL)
			break;
		if (kind == TOA_OPT_NOP) {
			i++;
			continue;
		}
		/* Every other kind has a length byte that covers kind and length. */
		if (len - i < 2) {
			res->malformed++;
			break;
		}
		olen = opt[i + 1];
		if (olen < 2 || olen > len - i) {
			res->malformed++;
			break;
		}

		is4 = toa_kinds_has(kinds->ipv4, kind);
		is6 = toa_kinds_has(kinds->nat64, kind);
		type = TOA_TYPE_NONE;
		if (is4 && olen == TOA_IPV4_OPT_LEN)
			type = TOA_TYPE_IPV4;
		else if (is6 && olen == TOA_NAT64_OPT_LEN)
			type = TOA_TYPE_NAT64;
		else if (is4 || is6)
			res->malformed++;

		if (type != TOA_TYPE_NONE) {
			if (res->toa.type == TOA_TYPE_NONE) {
				toa_decode(opt + i, type, &res->toa);
				res->offset = (uint32_t)i;
			} else {
				res->duplicates++;
			}
			toa_decode(opt + i, type, &res->last);
			res->last_offset = (uint32_t)i;
		}
		i += olen;
	}
	return res->toa.type != TOA_TYPE_NONE;
}

static enum toa_addr_verdict toa_addr_check_v4(const uint8_t *a)
{
	if (a[0] == 0)
		return TOA_ADDR_UNSPECIFIED;
	if (a[0] == 127)
		return TOA_ADDR_LOOPBACK;
	if ((a[0] & 0xf0) == 0xe0)
		return TOA_ADDR_MULTICAST;
	if ((a[0] & 0xf0) == 0xf0)
		return TOA_ADDR_BROADCAST;
	return TOA_ADDR_OK;
}

enum toa_addr_verdict toa_addr_check(const struct toa_addr *a)
{
	unsigned int i, zero10 = 1, zero15 = 1;

	if (a->type == TOA_TYPE_IPV4)
		return toa_addr_check_v4(a->addr);
	for (i = 0; i < 10; i++)
		zero10 &= a->addr[i] == 0;
	for (i = 0; i < 15; i++)
		zero15 &= a->addr[i] == 0;
	if (zero15 && a->addr[15] == 0)
		return TOA_ADDR_UNSPECIFIED;
	if (zero15 && a->addr[15] == 1)
		return TOA_ADDR_LOOPBACK;
	if (a->addr[0] == 0xff)
		return TOA_ADDR_MULTICAST;
	if (zero10 && a->addr[10] == 0xff && a->addr[11] == 0xff)
		return TOA_ADDR_V4MAPPED;
	return TOA_ADDR_OK;
}

static int toa_is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n';
}

/*
 * The next entry of a comma list: from *pos, cut at the next comma (or the end) and
 * trimmed of blanks; *pos moves past the comma. Returns 0 when the list ended after the
 * previous entry (callers check for the empty list first).
 */
static int toa_list_next(const char *s, size_t len, size_t *pos, int *done, size_t *start,
			 size_t *end)
{
	size_t i = *pos;

	if (*done)
		return 0;
	*start = i;
	while (i < len && s[i] != ',')
		i++;
	*end = i;
	while (*start < *end && toa_is_blank(s[*start]))
		(*start)++;
	while (*end > *start && toa_is_blank(s[*end - 1]))
		(*end)--;
	if (i == len)
		*done = 1;
	else
		*pos = i + 1;
	return 1;
}

static int toa_list_empty(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len && toa_is_blank(s[i]))
		i++;
	return i == len;
}

/* Decimal digits only, s[0..len), at most @maxdigits; -1 when not. */
static int32_t toa_decimal(const char *s, size_t len, size_t maxdigits)
{
	int32_t v = 0;
	size_t i;

	if (!len || len > maxdigits)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

int toa_parse_kind_list(const char *s, size_t len, uint8_t *out, unsigned int max,
			size_t *bad_off, size_t *bad_len)
{
	size_t pos = 0, a, b;
	unsigned int n = 0, j;
	int done = 0, dup;
	int32_t v;

	if (toa_list_empty(s, len))
		return 0;
	while (toa_list_next(s, len, &pos, &done, &a, &b)) {
		*bad_off = a;
		*bad_len = b - a;
		v = toa_decimal(s + a, b - a, 3);
		if (v < TOA_KIND_MIN || v > TOA_KIND_MAX)
			return -1;
		dup = 0;
		for (j = 0; j < n; j++)
			dup |= out[j] == v;
		if (dup)
			continue;
		if (n == max)
			return -1;
		out[n++] = (uint8_t)v;
	}
	return (int)n;
}

/* Dotted quad s[0..len): four parts 0..255, no leading zeros (as inet_pton). */
static int toa_pton4(const char *s, size_t len, uint8_t *out)
{
	size_t i = 0, start;
	unsigned int part;
	int32_t v;

	for (part = 0; part < 4; part++) {
		start = i;
		while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 4)
			i++;
		v = toa_decimal(s + start, i - start, 3);
		if (v < 0 || v > 255 || (i - start > 1 && s[start] == '0'))
			return -1;
		out[part] = (uint8_t)v;
		if (part < 3) {
			if (i >= len || s[i] != '.')
				return -1;
			i++;
		}
	}
	return i == len ? 0 : -1;
}

static int toa_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* IPv6 text s[0..len) (RFC 4291 section 2.2, as inet_pton). */
static int toa_pton6(const char *s, size_t len, uint8_t *out)
{
	uint8_t tmp[16];
	size_t i = 0, g = 0, start, k;
	long gap = -1;
	uint32_t v;

	for (k = 0; k < 16; k++)
		tmp[k] = 0;
	if (len >= 1 && s[0] == ':') {
		if (len < 2 || s[1] != ':')
			return -1;
		gap = 0;
		i = 2;
	}
	while (i < len) {
		start = i;
		v = 0;
		while (i < len && toa_hex(s[i]) >= 0 && i - start < 5) {
			v = (v << 4) | (uint32_t)toa_hex(s[i]);
			i++;
		}
		if (i < len && s[i] == '.') {
			/* a dotted IPv4 tail: the last 4 bytes */
			if (g + 4 > 16 || toa_pton4(s + start, len - start, tmp + g))
				return -1;
			g += 4;
			break;
		}
		if (i == start || i - start > 4 || g + 2 > 16)
			return -1;
		tmp[g++] = (uint8_t)(v >> 8);
		tmp[g++] = (uint8_t)v;
		if (i == len)
			break;
		if (s[i] != ':')
			return -1;
		i++;
		if (i < len && s[i] == ':') {
			if (gap >= 0)
				return -1;
			gap = (long)g;
			i++;
		} else if (i == len) {
			return -1;	/* a single trailing ':' */
		}
	}
	if (gap >= 0) {
		size_t tail = g - (size_t)gap;

		if (g == 16)
			return -1;	/* "::" must stand for at least one group */
		for (k = 0; k < tail; k++)
			tmp[15 - k] = tmp[g - 1 - k];
		for (k = (size_t)gap; k < 16 - tail; k++)
			tmp[k] = 0;
	} else if (g != 16) {
		return -1;
	}
	for (k = 0; k < 16; k++)
		out[k] = tmp[k];
	return 0;
}

static enum toa_cidr_error toa_parse_cidr(const char *s, size_t len, struct toa_cidr *c)
{
	size_t alen = 0, k;
	int v6 = 0;
	unsigned int max;
	int32_t prefix;

	while (alen < len && s[alen] != '/')
		alen++;
	for (k = 0; k < alen; k++)
		v6 |= s[k] == ':';
	for (k = 0; k < 16; k++)
		c->addr[k] = 0;
	if (v6 ? toa_pton6(s, alen, c->addr) : toa_pton4(s, alen, c->addr))
		return TOA_CIDR_BAD_ADDRESS;
	max = v6 ? 128 : 32;
	prefix = (int32_t)max;
	if (alen < len) {
		prefix = toa_decimal(s + alen + 1, len - alen - 1, 3);
		if (prefix < 0 || prefix > (int32_t)max)
			return TOA_CIDR_BAD_PREFIX;
	}
	for (k = (size_t)prefix; k < max; k++)
		if (c->addr[k / 8] & (0x80 >> (k % 8)))
			return TOA_CIDR_HOST_BITS;
	c->family = v6 ? TOA_CIDR_V6 : TOA_CIDR_V4;
	c->prefix = (uint8_t)prefix;
	return TOA_CIDR_OK;
}

int toa_parse_cidr_list(const char *s, size_t len, struct toa_cidr *out, unsigned int max,
			size_t *bad_off, size_t *bad_len, enum toa_cidr_error *why)
{
	size_t pos = 0, a, b;
	unsigned int n = 0;
	int done = 0;

	*why = TOA_CIDR_OK;
	if (toa_list_empty(s, len))
		return 0;
	while (toa_list_next(s, len, &pos, &done, &a, &b)) {
		*bad_off = a;
		*bad_len = b - a;
		if (n == max) {
			*why = TOA_CIDR_TOO_MANY;
			return -1;
		}
		*why = toa_parse_cidr(s + a, b - a, &out[n]);
		if (*why != TOA_CIDR_OK)
			return -1;
		n++;
	}
	return (int)n;
}

/* Whether an entry of @family in list[0..n) contains @saddr (4 or 16 bytes). */
static int toa_trusted_family(const struct toa_cidr *list, unsigned int n, int accept_any,
			      uint8_t family, const uint8_t *saddr)
{
	unsigned int i, k, full, rem;
	int match;

	if (!n)
		return accept_any;
	for (i = 0; i < n; i++) {
		if (list[i].family != family)
			continue;
		full = list[i].prefix / 8;
		rem = list[i].prefix % 8;
		match = 1;
		for (k = 0; k < full; k++)
			match &= saddr[k] == list[i].addr[k];
		if (rem)
			match &= ((saddr[full] ^ list[i].addr[full]) & (0xff00 >> rem) & 0xff) == 0;
		if (match)
			return 1;
	}
	return 0;
}

int toa_trusted_v4(const struct toa_cidr *list, unsigned int n, int accept_any,
		   const uint8_t saddr[4])
{
	return toa_trusted_family(list, n, accept_any, TOA_CIDR_V4, saddr);
}

int toa_trusted_v6(const struct toa_cidr *list, unsigned int n, int accept_any,
		   const uint8_t saddr[16])
{
	return toa_trusted_family(list, n, accept_any, TOA_CIDR_V6, saddr);
}

int toa_parse_port_list(const char *s, size_t len, struct toa_port_range *out, unsigned int max,
			size_t *bad_off, size_t *bad_len)
{
	size_t pos = 0, start, end, dash;
	unsigned int n = 0;
	int done = 0;
	int32_t lo, hi;

	if (toa_list_empty(s, len))
		return 0;
	while (toa_list_next(s, len, &pos, &done, &start, &end)) {
		*bad_off = start;
		*bad_len = end - start;
		if (n == max)
			return -1;
		dash = start;
		while (dash < end && s[dash] != '-')
			dash++;
		lo = toa_decimal(s + start, dash - start, 5);
		hi = dash == end ? lo : toa_decimal(s + dash + 1, end - dash - 1, 5);
		if (lo < 1 || hi > 65535 || hi < lo)
			return -1;
		out[n].lo = (uint16_t)lo;
		out[n].hi = (uint16_t)hi;
		n++;
	}
	return (int)n;
}

static uint16_t toa_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

int toa_locate_v4(const uint8_t *buf, size_t len, struct toa_seg_v4 *seg)
{
	uint32_t ihl, doff, tot, frag;
	unsigned int i;

	if (len < 20 || (buf[0] >> 4) != 4)
		return -1;
	ihl = (uint32_t)(buf[0] & 15) * 4;
	tot = toa_be16(buf + 2);
	frag = toa_be16(buf + 6);
	/* a fragment (MF set or an offset) has no or only part of a TCP header */
	if (ihl < 20 || buf[9] != 6 || (frag & 0x3fff))
		return -1;
	/* the fixed TCP header: inside the buffer and the datagram */
	if (len < ihl + 20 || tot < ihl + 20)
		return -1;
	doff = (uint32_t)(buf[ihl + 12] >> 4) * 4;
	if (doff < 20 || len < ihl + doff || tot < ihl + doff)
		return -1;
	for (i = 0; i < 4; i++) {
		seg->saddr[i] = buf[12 + i];
		seg->daddr[i] = buf[16 + i];
	}
	seg->sport = toa_be16(buf + ihl);
	seg->dport = toa_be16(buf + ihl + 2);
	seg->seq = ((uint32_t)buf[ihl + 4] << 24) | ((uint32_t)buf[ihl + 5] << 16) |
		   ((uint32_t)buf[ihl + 6] << 8) | buf[ihl + 7];
	seg->flags = buf[ihl + 13];
	seg->opt_off = ihl + 20;
	seg->opt_len = doff - 20;
	seg->payload = tot - ihl - doff;
	return 0;
}

int toa_locate_tcp(const uint8_t *buf, size_t len, uint32_t tcp_len, struct toa_seg_v4 *seg)
{
	uint32_t doff;

	/* the fixed TCP header: inside the buffer and the segment */
	if (len < 20 || tcp_len < 20)
		return -1;
	doff = (uint32_t)(buf[12] >> 4) * 4;
	if (doff < 20 || len < doff || tcp_len < doff)
		return -1;
	seg->sport = toa_be16(buf);
	seg->dport = toa_be16(buf + 2);
	seg->seq = ((uint32_t)buf[4] << 24) | ((uint32_t)buf[5] << 16) |
		   ((uint32_t)buf[6] << 8) | buf[7];
	seg->flags = buf[13];
	seg->opt_off = 20;
	seg->opt_len = doff - 20;
	seg->payload = tcp_len - doff;
	return 0;
}
