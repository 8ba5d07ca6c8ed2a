# shellcheck shell=bash source-path=SCRIPTDIR
# Guest-side pieces shared by tests/vm/*.sh: the static test driver and the /init script.
#
#   toatest_build OUT            -> static tests/vm/guest/toatest.c (warnings are errors)
#   guest_write_init DIR CMD...  -> DIR/init: mounts, loads DIR/etc/modules.order, brings up
#                                   lo, prints `TOA-GUEST-KERNEL <release>`, runs CMD, prints
#                                   `TOA-GUEST-EXIT <rc>`, the kernel log's error lines, and
#                                   powers off

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# toatest_needs: a C compiler and a static libc.
toatest_needs() { need_apt gcc libc6-dev; }

toatest_build() {
	local out=$1 src="$TOA_VM_DIR/guest/toatest.c" sum built
	toatest_needs
	# Keyed by the source's checksum: checkouts sharing one cache (other branches, other
	# worktrees) never run each other's driver, which an mtime check allowed.
	sum=$(sha256sum "$src") || toa_die "cannot read $src"
	built=$TOA_CACHE_DIR/toatest/toatest-${sum:0:16}
	if [ -e "$built" ] && ! { toa_elf_file "$built" && [ -x "$built" ]; }; then
		toa_cache_rebuild "$built" "is not an executable whole ELF file (truncated?)"
		rm -f "$built"
	fi
	if [ ! -e "$built" ]; then
		mkdir -p "${built%/*}"
		gcc -static -O2 -Wall -Wextra -Werror -pthread -o "$built.tmp.$$" "$src" ||
			toa_die "building $src failed"
		toa_elf_file "$built.tmp.$$" || toa_die "gcc left no whole ELF file in $built.tmp.$$"
		mv "$built.tmp.$$" "$built" || toa_die "cannot rename $built.tmp.$$"
	fi
	mkdir -p "$(dirname "$out")"
	cp "$built" "$out.tmp.$$" && mv "$out.tmp.$$" "$out" || toa_die "cannot copy $built to $out"
}

guest_write_init() {
	local dir=$1
	shift
	{
		cat <<'EOI'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules.order); do
	insmod "/lib/modules/$m.ko" || echo "TOA-GUEST-ERROR insmod $m failed"
done
ip link set lo up
echo "TOA-GUEST-KERNEL $(uname -r)"
EOI
		printf '%q ' "$@"
		echo
		cat <<'EOI'
echo "TOA-GUEST-EXIT $?"
dmesg | grep -E 'BUG:|WARNING:|Oops|Call Trace|general protection|Kernel panic' | sed 's/^/TOA-GUEST-KLOG /'
poweroff -f
EOI
	} >"$dir/init"
	chmod 755 "$dir/init"
}

# guest_judge_boot RC RELEASE KVER SUMMARY EXIT_SEEN SERIAL_LOG: after a guest run, prints a
# `not ok` line for each way the boot itself went wrong (timeout, QEMU error, /init never
# reached, wrong kernel, suite never finished) and sets GUEST_BOOT_FAILS to their number, so
# every suite judges a boot the same way whatever its scenarios are.
guest_judge_boot() {
	local rc=$1 release=$2 kver=$3 summary=$4 exit_seen=$5 log=$6
	local tag=${release:-$kver}
	GUEST_BOOT_FAILS=0
	if [ "$rc" -eq 124 ]; then
		echo "not ok - [$tag] guest timed out (serial log: $log)"
		GUEST_BOOT_FAILS=$((GUEST_BOOT_FAILS + 1))
	elif [ "$rc" -ne 0 ]; then
		echo "not ok - [$tag] QEMU exited with status $rc (serial log: $log)"
		GUEST_BOOT_FAILS=$((GUEST_BOOT_FAILS + 1))
	fi
	if [ -z "$release" ]; then
		echo "not ok - [$kver] guest never reached /init (serial log: $log)"
		GUEST_BOOT_FAILS=$((GUEST_BOOT_FAILS + 1))
	elif [ "$release" != "$kver" ]; then
		echo "not ok - [$release] guest runs $release, expected $kver"
		GUEST_BOOT_FAILS=$((GUEST_BOOT_FAILS + 1))
	fi
	if [ -z "$summary" ] || [ -z "$exit_seen" ]; then
		echo "not ok - [$tag] guest suite did not finish (no summary line; serial log: $log)"
		tail -n 15 "$log" | sed 's/^/#   /'
		GUEST_BOOT_FAILS=$((GUEST_BOOT_FAILS + 1))
	fi
}
