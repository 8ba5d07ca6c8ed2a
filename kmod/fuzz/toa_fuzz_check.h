/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Checks shared by the fuzz target and the standalone driver: run the module's parser on
 * one input and compare it with an independent reference walk. Input format:
 *   byte 0: an extra IPv4 TOA kind (added to the default 200)
 *   byte 1: an extra NAT64 TOA kind (added to the default 253)
 *   rest:   the TCP option bytes
 * (Kinds 0 and 1 in bytes 0/1 add nothing: EOL/NOP can never be TOA kinds.)
 */
#ifndef TOA_FUZZ_CHECK_H
#define TOA_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Aborts (crash for the fuzzer) when the parser disagrees with the reference. */
void toa_fuzz_check_one(const uint8_t *data, size_t size);

#endif
