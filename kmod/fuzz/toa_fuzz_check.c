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
		if (r->found) {
			r->duplicates += 1;
		} else {
			r->found = 1;
			r->type = type;
			r->offset = (uint32_t)starts[i];
		}
	}
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
		uint8_t *copy = malloc(len ? len : 1);

		if (!copy)
			abort();
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
