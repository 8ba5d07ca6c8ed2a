#!/usr/bin/env bash
# Unit tests and fuzzing of the module's pure code (option parser, IPv4/TCP header location,
# ports/kinds/trusted_sources parsers, trust rule, address checks), built for userspace from
# the module's own toa_parse.c (the same source the kernel module compiles).
#
#   kmod/fuzz/run.sh [SECONDS]     (fuzzing time, default 30)
#
# Steps: build the unit driver (ASan+UBSan) and run its cases; build the libFuzzer target
# (clang -fsanitize=fuzzer,address,undefined), replay the seed corpus, fuzz for SECONDS.
# Without libFuzzer a standalone random-mutation driver with the same checks is used.
# Build outputs and new corpus entries go to kmod/fuzz/out/ (not in git).
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -euo pipefail
shopt -s inherit_errexit

FUZZ_SECONDS=${1:-30}
case $FUZZ_SECONDS in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]  (SECONDS must be a whole number, got '$FUZZ_SECONDS')" >&2
	exit 2
	;;
esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KMOD=$(cd "$HERE/.." && pwd)
REPO=$(cd "$KMOD/.." && pwd)
OUT=$HERE/out
mkdir -p "$OUT"

# shellcheck source=../../tests/lib/deps.sh
. "$REPO/tests/lib/deps.sh"

# What the fuzz suite installs before first use: clang, and its sanitizer/libFuzzer runtime
# (Debian ships ASan, UBSan and libFuzzer for clang N in libclang-rt-N-dev).
fuzz_needs() {
	local version
	need_apt clang
	version=$(clang -dumpversion)
	need_apt "libclang-rt-${version%%.*}-dev"
}
toa_deps_step fuzz_needs

passed=0
failed=0
result() { # result NAME STATUS
	if [ "$2" -eq 0 ]; then
		echo "ok - $1"
		passed=$((passed + 1))
	else
		echo "not ok - $1"
		failed=$((failed + 1))
	fi
}

CFLAGS=(-std=gnu11 -O1 -g -Wall -Wextra -Werror -fno-omit-frame-pointer
	-fno-sanitize-recover=all)
PARSER=("$KMOD/toa_parse.c")

# 1. Unit driver: every case counts.
rc=0
clang "${CFLAGS[@]}" -fsanitize=address,undefined -o "$OUT/toa_unit" \
	"$HERE/toa_unit.c" "${PARSER[@]}" >"$OUT/build-unit.log" 2>&1 || rc=$?
result "build unit driver" "$rc"
if [ "$rc" -eq 0 ]; then
	rc=0
	"$OUT/toa_unit" >"$OUT/unit.log" 2>&1 || rc=$?
	grep -E '^(ok|not ok) - ' "$OUT/unit.log" || true
	last=$(tail -n1 "$OUT/unit.log")
	if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
		passed=$((passed + BASH_REMATCH[1]))
		failed=$((failed + BASH_REMATCH[2]))
	else
		cat "$OUT/unit.log"
		result "unit driver summary line" 1
	fi
	[ "$rc" -eq 0 ] || [ "$failed" -gt 0 ] || result "unit driver exit status $rc" 1
else
	cat "$OUT/build-unit.log"
fi

# 2. Is libFuzzer there? Debian ships its runtime in libclang-rt-N-dev.
have_libfuzzer() {
	printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' >"$OUT/probe.c"
	clang -fsanitize=fuzzer,address,undefined -o "$OUT/probe" "$OUT/probe.c" >/dev/null 2>&1
}
# Work copy of the corpus: libFuzzer adds new inputs to its first directory.
mkdir -p "$OUT/corpus"
cp "$HERE"/corpus/* "$OUT/corpus/"

CHECK=("$HERE/toa_fuzz_check.c")
if have_libfuzzer; then
	rc=0
	clang "${CFLAGS[@]}" -fsanitize=fuzzer,address,undefined -o "$OUT/toa_fuzz" \
		"$HERE/toa_fuzz.c" "${CHECK[@]}" "${PARSER[@]}" >"$OUT/build-fuzz.log" 2>&1 || rc=$?
	result "build libFuzzer target" "$rc"
	if [ "$rc" -eq 0 ]; then
		rc=0
		"$OUT/toa_fuzz" -runs=0 "$HERE/corpus" >"$OUT/replay.log" 2>&1 || rc=$?
		result "replay seed corpus ($(find "$HERE/corpus" -type f | wc -l) files)" "$rc"
		[ "$rc" -eq 0 ] || tail -n 20 "$OUT/replay.log"
		rc=0
		"$OUT/toa_fuzz" -max_total_time="$FUZZ_SECONDS" -max_len=128 -timeout=5 \
			-artifact_prefix="$OUT/" -print_final_stats=1 \
			"$OUT/corpus" >"$OUT/fuzz.log" 2>&1 || rc=$?
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/fuzz.log")
		result "libFuzzer ${FUZZ_SECONDS}s (${execs:-?} inputs, no crash, no mismatch)" "$rc"
		[ "$rc" -eq 0 ] || tail -n 30 "$OUT/fuzz.log"
	else
		cat "$OUT/build-fuzz.log"
	fi
else
	echo "# libFuzzer runtime unavailable: using the standalone mutation driver" >&2
	rc=0
	clang "${CFLAGS[@]}" -fsanitize=address,undefined -o "$OUT/toa_fuzz_standalone" \
		"$HERE/toa_fuzz_standalone.c" "${CHECK[@]}" "${PARSER[@]}" \
		>"$OUT/build-fuzz.log" 2>&1 || rc=$?
	result "build standalone fuzz driver" "$rc"
	if [ "$rc" -eq 0 ]; then
		rc=0
		"$OUT/toa_fuzz_standalone" "$FUZZ_SECONDS" "$HERE"/corpus/* >"$OUT/fuzz.log" 2>&1 || rc=$?
		result "standalone fuzz ${FUZZ_SECONDS}s: $(tail -n1 "$OUT/fuzz.log")" "$rc"
	else
		cat "$OUT/build-fuzz.log"
	fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
