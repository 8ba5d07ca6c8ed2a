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
	unsigned int j;

	res->toa.type = TOA_TYPE_NONE;
	res->toa.kind = 0;
	res->toa.port = 0;
	for (j = 0; j < 16; j++)
		res->toa.addr[j] = 0;
	res->offset = 0;
	res->last = res->toa;
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

/* Decimal 1..65535 in s[0..len), digits only. Returns 0 when invalid. */
static uint32_t toa_port_value(const char *s, size_t len)
{
	uint32_t v = 0;
	size_t i;

	if (!len || len > 5)
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	return v <= 65535 ? v : 0;
}

int toa_parse_port_list(const char *s, size_t len, struct toa_port_range *out, unsigned int max,
			size_t *bad_off, size_t *bad_len)
{
	size_t i = 0, start, end, dash, j;
	unsigned int n = 0;
	uint32_t lo, hi;

	while (i < len && toa_is_blank(s[i]))
		i++;
	if (i == len)
		return 0;
	for (;;) {
		/* one entry: s[start..end) without the blanks around it */
		start = i;
		while (i < len && s[i] != ',')
			i++;
		end = i;
		while (start < end && toa_is_blank(s[start]))
			start++;
		while (end > start && toa_is_blank(s[end - 1]))
			end--;
		*bad_off = start;
		*bad_len = end - start;
		if (n == max)
			return -1;
		dash = end;
		for (j = start; j < end; j++) {
			if (s[j] == '-') {
				dash = j;
				break;
			}
		}
		lo = toa_port_value(s + start, dash - start);
		hi = dash == end ? lo : toa_port_value(s + dash + 1, end - dash - 1);
		if (!lo || !hi || hi < lo)
			return -1;
		out[n].lo = (uint16_t)lo;
		out[n].hi = (uint16_t)hi;
		n++;
		if (i == len)
			return (int)n;
		i++;	/* the comma */
	}
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
