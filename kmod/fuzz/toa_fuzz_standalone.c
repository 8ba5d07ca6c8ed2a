// SPDX-License-Identifier: GPL-2.0
/*
 * Standalone fuzz driver for toolchains without libFuzzer: replays every file given on
 * the command line, then mutates them randomly (byte flips, inserts, truncation) for
 * SECONDS seconds:  toa_fuzz_standalone SECONDS FILE...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "toa_fuzz_check.h"

#define MAX_IN 256

int main(int argc, char **argv)
{
	static uint8_t seeds[512][MAX_IN];
	static size_t seed_len[512];
	unsigned long long iters = 0;
	unsigned int nseeds = 0;
	time_t end;
	int i;

	if (argc < 2) {
		fprintf(stderr, "usage: %s SECONDS [FILE...]\n", argv[0]);
		return 2;
	}
	end = time(NULL) + atoi(argv[1]);
	for (i = 2; i < argc && nseeds < 512; i++) {
		FILE *f = fopen(argv[i], "rb");

		if (!f) {
			perror(argv[i]);
			return 2;
		}
		seed_len[nseeds] = fread(seeds[nseeds], 1, MAX_IN, f);
		fclose(f);
		toa_fuzz_check_one(seeds[nseeds], seed_len[nseeds]);
		nseeds++;
	}
	srand((unsigned int)time(NULL));
	while (time(NULL) < end) {
		uint8_t buf[MAX_IN];
		size_t len = 0, k;
		int m;

		if (nseeds) {
			unsigned int s = (unsigned int)rand() % nseeds;

			len = seed_len[s];
			memcpy(buf, seeds[s], len);
		}
		for (m = rand() % 8; m >= 0; m--) {
			switch (rand() % 4) {
			case 0:	/* overwrite a byte */
				if (len)
					buf[rand() % len] = (uint8_t)rand();
				break;
			case 1:	/* insert a byte */
				if (len < MAX_IN) {
					k = len ? (size_t)rand() % len : 0;
					memmove(buf + k + 1, buf + k, len - k);
					buf[k] = (uint8_t)rand();
					len++;
				}
				break;
			case 2:	/* truncate */
				if (len)
					len = (size_t)rand() % len;
				break;
			default:	/* small length-like values where options have lengths */
				if (len)
					buf[rand() % len] = (uint8_t)(rand() % 24);
				break;
			}
		}
		toa_fuzz_check_one(buf, len);
		iters++;
	}
	printf("standalone fuzz: %llu inputs, %u seeds, no mismatch\n", iters, nseeds);
	return 0;
}
