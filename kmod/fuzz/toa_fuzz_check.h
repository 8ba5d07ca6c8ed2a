/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Checks shared by the fuzz target and the standalone driver: run the module's pure code
 * (toa_parse.c) on one input and compare each result with an independent reference.
 * The same input is used
 *   - as option bytes: byte 0 an extra IPv4 TOA kind (added to the default 200), byte 1
 *     an extra NAT64 TOA kind (added to 253), the rest the TCP option bytes (kinds 0 and 1
 *     add nothing: EOL/NOP can never be TOA kinds); checked against a two-pass walk;
 *   - as a `ports`, an option-kinds and a `trusted_sources` parameter value; checked
 *     against split-then-strtoul references, and for CIDRs against libc inet_pton();
 *   - for the trust rule: every parsed CIDR list is asked about its own networks, their
 *     neighbours just outside the prefix and an address from the input, against 32-bit
 *     mask arithmetic (IPv4 sources) and a bit-by-bit prefix compare (IPv6 sources);
 *   - as an IPv4 packet for toa_locate_v4() (the header and bounds code of toa_skb.c),
 *     against a lookup through a bounds-checked byte reader;
 *   - as a TCP header for toa_locate_tcp() (IPv6 segments, after the extension headers),
 *     its first two bytes also the TCP length, against the same kind of reader.
 * Every function gets an exact-size heap copy, a zero-length input a zero-length buffer,
 * so AddressSanitizer sees any read past the end.
 */
#ifndef TOA_FUZZ_CHECK_H
#define TOA_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Aborts (crash for the fuzzer) when the parser disagrees with the reference. */
void toa_fuzz_check_one(const uint8_t *data, size_t size);

#endif
