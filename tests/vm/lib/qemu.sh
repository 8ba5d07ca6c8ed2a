# shellcheck shell=bash source-path=SCRIPTDIR
# QEMU for the guest harness, fetched from Debian without installing it: installing
# qemu-system-x86 here would remove the machine's newer qemu-utils (Breaks), so the packages
# and the shared libraries the host lacks are unpacked into $TOA_CACHE_DIR/qemu.
#
#   qemu_prepare                 -> exports QEMU_BIN, QEMU_ROOT (fetches on first use)
#   qemu_run VMLINUX INITRD MEM_MB TIMEOUT_S SERIAL_LOG [APPEND_WORD...]
#                                -> boots under TCG, serial console into SERIAL_LOG,
#                                   returns QEMU's status (124 when the timeout hit);
#                                   QEMU_EXTRA_ARGS (word list) is appended to the command

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

QEMU_CACHE=${QEMU_CACHE:-$TOA_CACHE_DIR/qemu}

_qemu_missing_libs() {
	local out
	out=$(LD_LIBRARY_PATH="$QEMU_ROOT/usr/lib/x86_64-linux-gnu:$QEMU_ROOT/lib/x86_64-linux-gnu" \
		ldd "$QEMU_ROOT/usr/bin/qemu-system-x86_64") || toa_die "ldd $QEMU_ROOT/usr/bin/qemu-system-x86_64 failed: $out"
	awk '/not found/ { print $1 }' <<<"$out"
}

# qemu_needs: only Essential tools (dpkg -x, ldd, timeout); the QEMU packages are unpacked, and
# the shared libraries this machine lacks are fetched along with them.
qemu_needs() { :; }

# _qemu_ok ROOT: the unpacked QEMU in ROOT is complete and runs.
_qemu_ok() {
	# (.complete beside ROOT: the marker of caches written before the marker moved inside)
	{ [ -f "$1/.complete" ] || [ -f "$1/../.complete" ]; } && toa_elf_file "$1/usr/bin/qemu-system-x86_64" &&
		QEMU_ROOT=$1 _qemu_env "$1/usr/bin/qemu-system-x86_64" --version >/dev/null 2>&1
}

qemu_prepare() {
	qemu_needs
	QEMU_ROOT="$QEMU_CACHE/root"
	QEMU_BIN="$QEMU_ROOT/usr/bin/qemu-system-x86_64"
	export QEMU_ROOT QEMU_BIN
	if [ -e "$QEMU_ROOT" ]; then
		_qemu_ok "$QEMU_ROOT" && return 0
		toa_cache_rebuild "QEMU in $QEMU_ROOT" "is incomplete or does not run"
	fi
	toa_log "preparing QEMU in $QEMU_CACHE"
	# Unpacked under a temporary name, renamed once it runs.
	local final=$QEMU_ROOT
	QEMU_ROOT=$QEMU_CACHE/root.tmp.$$
	rm -rf "$QEMU_ROOT"
	mkdir -p "$QEMU_ROOT" "$QEMU_CACHE/debs"
	_toa_apt_update_once
	local deb debs pkg missing round=0
	local -a queue=(qemu-system-x86 qemu-system-common qemu-system-data seabios)
	local -A seen=()
	for pkg in "${queue[@]}"; do seen[$pkg]=1; done
	while :; do
		debs=$(toa_fetch_debs "$QEMU_CACHE/debs" apt-get "${queue[@]}")
		for deb in $debs; do
			dpkg -x "$deb" "$QEMU_ROOT"
		done
		missing=$(_qemu_missing_libs)
		[ -z "$missing" ] && break
		round=$((round + 1))
		[ "$round" -le 6 ] || toa_die "QEMU still misses shared libraries after $round rounds: $(echo "$missing" | tr '\n' ' ')"
		# Next round: library dependencies (direct Depends of what we unpacked) that this machine
		# does not have installed. ldd tells when we are done; the package lists tell what to get.
		local -a next=()
		local p d deps
		for p in "${queue[@]}"; do
			deps=$(toa_apt_depends apt-cache "$p")
			for d in $deps; do
				case $d in lib*) ;; *) continue ;; esac
				[ -n "${seen[$d]:-}" ] && continue
				seen[$d]=1
				toa_host_installed "$d" && continue
				next+=("$d")
			done
		done
		[ ${#next[@]} -gt 0 ] || toa_die "QEMU misses $(echo "$missing" | tr '\n' ' ') and no uninstalled library package depends remain to fetch"
		toa_log "QEMU needs libraries: $(echo "$missing" | tr '\n' ' ') -> fetching ${next[*]}"
		queue=("${next[@]}")
	done
	touch "$QEMU_ROOT/.complete"
	_qemu_ok "$QEMU_ROOT" || toa_die "unpacked QEMU in $QEMU_ROOT does not run"
	rm -rf "$final"
	mv -T "$QEMU_ROOT" "$final"
	QEMU_ROOT=$final
}

_qemu_env() {
	LD_LIBRARY_PATH="$QEMU_ROOT/usr/lib/x86_64-linux-gnu:$QEMU_ROOT/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"
}

# qemu_run VMLINUX INITRD MEM_MB TIMEOUT_S SERIAL_LOG [APPEND_WORD...]
qemu_run() {
	local vmlinux=$1 initrd=$2 mem=$3 tmo=$4 log=$5
	shift 5
	[ -n "${QEMU_BIN:-}" ] || qemu_prepare
	[ -r "$vmlinux" ] || toa_die "qemu_run: kernel $vmlinux not readable (run kernel_prepare first)"
	[ -r "$initrd" ] || toa_die "qemu_run: initrd $initrd not readable"
	local rc=0
	# shellcheck disable=SC2086 # QEMU_EXTRA_ARGS is a word list
	# thread=single: multi-threaded TCG hit a stale int3 from live code patching (kprobes) about
	# once in 30 boots on 6.12 (ENVIRONMENT.md). panic=-1 + -no-reboot: a panic ends QEMU at once.
	# no_timer_check: on a loaded host TCG runs slowly enough for the kernel's IO-APIC timer check
	# to fail and panic at boot ("IO-APIC + timer doesn't work!"; seen on 6.1 and 7.2 guests).
	_qemu_env timeout -k 5 "$tmo" "$QEMU_BIN" \
		-L "$QEMU_ROOT/usr/share/qemu" -L "$QEMU_ROOT/usr/share/seabios" \
		-accel tcg,thread=single -smp 2 -m "$mem" \
		-nographic -nodefaults -serial stdio -no-reboot -net none \
		-kernel "$vmlinux" -initrd "$initrd" ${QEMU_EXTRA_ARGS:-} \
		-append "console=ttyS0 panic=-1 quiet no_timer_check $*" \
		</dev/null >"$log" 2>&1 || rc=$?
	return "$rc"
}
