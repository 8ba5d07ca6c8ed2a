// SPDX-License-Identifier: GPL-2.0
/* libFuzzer entry point for the TOA option parser (see toa_fuzz_check.c). */
#include "toa_fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	toa_fuzz_check_one(data, size);
	return 0;
}
