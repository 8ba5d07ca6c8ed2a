# shellcheck shell=bash source-path=SCRIPTDIR
# The kernel-upgrade scenario (tests/vm/agent.sh --upgrade), run inside the guest by /init
# (toamode=upgrade). Two boots of the same node: the harness attaches one persistent disk
# (virtio, /dev/vda) to both; it holds the DaemonSet's hostCachePath (/var/lib/toa-operator,
# the agent's module cache) and this test's notes, so the cache survives the "reboot".
#   toaboot=1 (first kernel):  formats the disk; the agent builds and loads; a restart adopts
#                              (its prune pass records the build as used); notes on the disk.
#   toaboot=2 (newer kernel):  the agent must build and load for the new kernel directly,
#                              never load or unload anything of the old one, keep the old
#                              kernel's cache entry (default cacheMaxAgeDays 30, and 0 = keep
#                              forever) and remove it once it is unused for longer than a
#                              configured age (cacheMaxAgeDays 1, the guest clock moved 2 days on).
# Prints `ok - NAME` / `not ok - NAME: why`, `# figure ...` and `N passed, M failed`.
# shellcheck source=common.sh
. /agent-test/common.sh

finish() {
	echo "# agent log (tail):"
	tail -n 8 "$AGENT_LOG" | sed 's/^/#   /'
	sync
	umount /var/lib/toa-operator 2>/dev/null
	umount /node 2>/dev/null
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" -eq 0 ]
	exit
}

REL=$(uname -r)
BOOT=${toaboot:-1}
NODE=/node
NOTES=$NODE/toa-test/boot1.env
: >/run/make-calls
make_calls() { wc -l </run/make-calls; }
echo "# boot $BOOT of the node: kernel $REL, agent ${toarun:-direct}"

# start_with_age DAYS|default: the agent with the DaemonSet's args for agent.cacheMaxAgeDays
# (under crun: the runtime config generated from an agent config with that value).
start_with_age() {
	if [ "$1" = default ]; then
		start_agent
	elif [ "${toarun:-direct}" = image ]; then
		AGENT_OCI_CONFIG=age$1 start_agent
	else
		start_agent --cache-max-age-days "$1"
	fi
}

# must_reach_loaded NAME FIGURE: the started agent builds and loads (cold, up to 900 s); the
# boot's remaining checks need a loaded module, so a failure ends the boot.
must_reach_loaded() {
	local t
	if t=$(wait_phase Loaded 900); then
		ok "$1"
		figure "$2" "$t"
	else
		nok "$1" "phase $(status_field .phase) $(status_field .reason): $(status_field .message)"
		dump_log
		finish
	fi
}

# entries: one line per cache entry on the node disk: ID RELEASE SRCVERSION
entries() {
	local d
	for d in "$CACHE"/modules/*/; do
		[ -f "$d/meta.json" ] || continue
		printf '%s %s\n' "$(basename "$d")" "$(jq -r '"\(.release) \(.srcversion)"' "$d/meta.json")"
	done
}
entry_of_release() { entries | awk -v r="$1" '$2 == r { print $1 }'; }
vermagic_of() { modinfo -F vermagic "$CACHE/modules/$1/toa.ko" 2>/dev/null; }

# ---------------------------------------------------------------- the node disk
DISK_MODS=$(tr '\n' ' ' </usr/lib/toa-guest/disk/modules.order)
for m in $DISK_MODS; do
	insmod "/usr/lib/toa-guest/disk/$m.ko" || echo "# insmod $m failed"
done
for _ in $(seq 1 100); do
	[ -b /dev/vda ] && break
	sleep 0.1
done
if [ ! -b /dev/vda ]; then
	nok "node disk: /dev/vda present" "no virtio disk (modules: $DISK_MODS)"
	finish
fi
mkdir -p "$NODE"
if [ "$BOOT" = 1 ]; then
	check "boot 1: node disk formatted (ext4)" "$(mkfs.ext4 -q -F -L toa-node /dev/vda 2>&1)" \
		mkfs.ext4 -q -F -L toa-node /dev/vda
fi
if ! mount -t ext4 /dev/vda "$NODE"; then
	nok "boot $BOOT: node disk mounted" "mount /dev/vda failed"
	finish
fi
mkdir -p "$NODE/var-lib-toa-operator" "$NODE/toa-test" /var/lib/toa-operator
mount --bind "$NODE/var-lib-toa-operator" /var/lib/toa-operator
check "boot $BOOT: the DaemonSet's hostCachePath /var/lib/toa-operator is on the node disk" \
	"$(grep ' /var/lib/toa-operator ' /proc/mounts)" grep -q '^/dev/vda /var/lib/toa-operator ' /proc/mounts

write_desired Loaded "module:" "  trustedSources: [10.0.0.0/16]"

# ---------------------------------------------------------------- boot 1: the old kernel
if [ "$BOOT" = 1 ]; then
	check "boot 1: the cache starts empty" "$(entries)" test -z "$(entries)"
	start_agent
	must_reach_loaded "boot 1: cold start reaches Loaded" boot1_build_load_seconds
	SV1=$(status_field .module.srcversion)
	ID1=$(entry_of_release "$REL")
	check "boot 1: module source Built, one cache entry for $REL on the node disk" \
		"source $(status_field .module.source), entries: $(entries | tr '\n' ';')" \
		test "$(status_field .module.source)" = Built -a "$(entries | wc -l)" -eq 1 -a -n "$ID1"
	check "boot 1: the cached build is the loaded one and has $REL's vermagic" \
		"srcversion loaded $(cat /sys/module/toa/srcversion) status $SV1; vermagic '$(vermagic_of "$ID1")'" \
		test "$(cat /sys/module/toa/srcversion)" = "$SV1" -a "${SV1:-x}" = "$(entries | awk '{ print $3 }')" \
		-a "$(vermagic_of "$ID1" | cut -d' ' -f1)" = "$REL"
	# A restart: adopts, and its first prune pass records the running release's build as used.
	stop_agent || true
	: >/run/make-calls
	start_agent
	if wait_phase Loaded 120 >/dev/null; then ok "boot 1: restart reaches Loaded"; else
		nok "boot 1: restart reaches Loaded" "phase $(status_field .phase): $(status_field .message)"
		dump_log
	fi
	check "boot 1: restart adopts (no compiler run), the build is marked used" \
		"source $(status_field .module.source), make calls $(make_calls), $(ls "$CACHE/modules/$ID1")" \
		test "$(status_field .module.source)" = Adopted -a "$(make_calls)" -eq 0 -a -f "$CACHE/modules/$ID1/last-used"
	stop_agent || true
	{
		echo "REL1=$REL"
		echo "SV1=$SV1"
		echo "ID1=$ID1"
		echo "SUM1=$(sha256sum "$CACHE/modules/$ID1/toa.ko" | cut -d' ' -f1)"
		echo "BOOTID1=$(cat /proc/sys/kernel/random/boot_id)"
	} >"$NOTES.tmp"
	mv "$NOTES.tmp" "$NOTES"
	# The module stays loaded until the machine goes down, as on a node that reboots.
	finish
fi

# ---------------------------------------------------------------- boot 2: the new kernel
if [ ! -f "$NOTES" ]; then
	nok "boot 2: the first boot's notes are on the node disk" "no $NOTES (did boot 1 fail?)"
	finish
fi
# shellcheck source=/dev/null
. "$NOTES"
check "boot 2: a different kernel than boot 1 ($REL1)" "both $REL" test "$REL" != "$REL1"
check "boot 2: the first boot's build is still in the cache" "entries: $(entries | tr '\n' ';')" \
	test "$(entry_of_release "$REL1")" = "$ID1"
check "boot 2: nothing loaded before the agent starts" "$(ls -d /sys/module/toa 2>&1)" test ! -e /sys/module/toa

start_agent
must_reach_loaded "boot 2: the agent reaches Loaded on $REL" boot2_build_load_seconds
SV2=$(status_field .module.srcversion)
ID2=$(entry_of_release "$REL")
check "boot 2: module source Built (not Cache, not Adopted), the compiler ran" \
	"source $(status_field .module.source), make calls $(make_calls)" \
	test "$(status_field .module.source)" = Built -a "$(make_calls)" -ge 1
# srcversion digests the module's sources only: the 6.1 and 6.12 builds of one source share it.
# What tells them apart is the file (and its vermagic, checked below).
check "boot 2: the loaded module is the new build (a new file in the cache), not the $REL1 one" \
	"loaded $(cat /sys/module/toa/srcversion 2>/dev/null), status $SV2, entry '$ID2' (boot 1: '$ID1'), sha256 $(sha256sum "$CACHE/modules/$ID2/toa.ko" 2>/dev/null | cut -c1-12) (boot 1: ${SUM1:0:12})" \
	test -n "$SV2" -a "$(cat /sys/module/toa/srcversion 2>/dev/null)" = "$SV2" -a -n "$ID2" -a "$ID2" != "$ID1" \
	-a "$(sha256sum "$CACHE/modules/$ID2/toa.ko" 2>/dev/null | cut -d' ' -f1)" != "$SUM1"
check "boot 2: the new cache entry is for $REL and has its vermagic" \
	"entry '$ID2', srcversion $(entries | awk -v i="$ID2" '$1 == i { print $3 }'), vermagic '$(vermagic_of "$ID2")'" \
	test -n "$ID2" -a "$(entries | awk -v i="$ID2" '$1 == i { print $3 }')" = "$SV2" \
	-a "$(vermagic_of "$ID2" | cut -d' ' -f1)" = "$REL"
check "boot 2: status names the new kernel and boot" "$(jq -c .kernel "$STATUS")" \
	test "$(status_field .kernel.release)" = "$REL" \
	-a "$(status_field .kernel.bootId)" = "$(cat /proc/sys/kernel/random/boot_id)" \
	-a "$(status_field .kernel.bootId)" != "$BOOTID1"
check "boot 2: the agent built for $REL (log)" "$(grep -i 'building the toa module' "$AGENT_LOG" | tail -n 1)" \
	grep -q "building the toa module.*$REL\|$REL.*building the toa module" "$AGENT_LOG"
check "boot 2: one load, no unload, no refused load (dmesg, log)" \
	"loads $(loads_logged), unloads $(unloads_logged), log: $(grep -iE 'unload|refused|version magic' "$AGENT_LOG" | tail -n 2)" \
	test "$(loads_logged)" -eq 1 -a "$(unloads_logged)" -eq 0 \
	-a "$(grep -ciE 'toa module unloaded|finit_module refused|Unloading' "$AGENT_LOG")" -eq 0 \
	-a "$(dmesg | grep -ciE 'toa: (disagrees|version magic)|toa: .*invalid module format')" -eq 0
scrape >/run/toa/upgrade.prom
check "boot 2: metrics: one build, one load from Built, nothing else loaded" \
	"$(grep -E '^toa_module_(builds|loads)_total' /run/toa/upgrade.prom | tr '\n' ' ')" \
	test "$(metric 'toa_module_builds_total{outcome="success"}' /run/toa/upgrade.prom)" = 1 \
	-a "$(grep -E '^toa_module_loads_total' /run/toa/upgrade.prom | awk '$2 != 0' | wc -l)" -eq 1 \
	-a "$(metric 'toa_module_loads_total{outcome="success",source="Built",backend="module"}' /run/toa/upgrade.prom)" = 1
check "boot 2: self-test passed on the new build" "$(jq -c .selfTest "$STATUS")" \
	test "$(status_field .selfTest.result)" = Passed -a "$(status_field .selfTest.srcversion)" = "$SV2"
check "boot 2: the $REL1 build is kept (default cacheMaxAgeDays 30), untouched" \
	"entries: $(entries | tr '\n' ';')" \
	test "$(entry_of_release "$REL1")" = "$ID1" \
	-a "$(sha256sum "$CACHE/modules/$ID1/toa.ko" 2>/dev/null | cut -d' ' -f1)" = "$SUM1"

# ---------------------------------------------------------------- cache age
# Two days pass (the guest clock moves on; the agent's timers are monotonic).
stop_agent || true
date -s "@$(($(date +%s) + 2 * 86400 + 3600))" >/dev/null
echo "# the guest clock moved 2 days and 1 hour on: $(date -u)"
: >/run/make-calls
start_with_age 0
if wait_phase Loaded 120 >/dev/null; then ok "cacheMaxAgeDays 0: restart reaches Loaded (adopted)"; else
	nok "cacheMaxAgeDays 0: restart reaches Loaded (adopted)" "phase $(status_field .phase): $(status_field .message)"
	dump_log
fi
check "cacheMaxAgeDays 0 (keep forever): the $REL1 build unused for 2 days stays" \
	"entries: $(entries | tr '\n' ';')" test "$(entry_of_release "$REL1")" = "$ID1"
stop_agent || true
start_with_age default
if wait_phase Loaded 120 >/dev/null; then ok "default cacheMaxAgeDays: restart reaches Loaded"; else
	nok "default cacheMaxAgeDays: restart reaches Loaded" "phase $(status_field .phase): $(status_field .message)"
	dump_log
fi
check "default cacheMaxAgeDays 30: the $REL1 build unused for 2 days stays" \
	"entries: $(entries | tr '\n' ';')" test "$(entry_of_release "$REL1")" = "$ID1"
stop_agent || true
start_with_age 1
if wait_phase Loaded 120 >/dev/null; then ok "cacheMaxAgeDays 1: restart reaches Loaded"; else
	nok "cacheMaxAgeDays 1: restart reaches Loaded" "phase $(status_field .phase): $(status_field .message)"
	dump_log
fi
check "cacheMaxAgeDays 1: the $REL1 build unused for 2 days is removed" \
	"entries: $(entries | tr '\n' ';')" test -z "$(entry_of_release "$REL1")" -a ! -e "$CACHE/modules/$ID1"
check "cacheMaxAgeDays 1: the agent logged the removal" \
	"$(grep -i 'removed a cached build' "$AGENT_LOG" | tail -n 1)" \
	grep -q "removed a cached build of another kernel release.*$REL1\|$REL1.*removed a cached build of another kernel release" "$AGENT_LOG"
check "cacheMaxAgeDays 1: the running kernel's build stays, still loaded, adopted, no build, no reload" \
	"entries: $(entries | tr '\n' ';'), source $(status_field .module.source), make calls $(make_calls), loads $(loads_logged)" \
	test "$(entry_of_release "$REL")" = "$ID2" -a "$(cat /sys/module/toa/srcversion 2>/dev/null)" = "$SV2" \
	-a "$(status_field .module.source)" = Adopted -a "$(make_calls)" -eq 0 -a "$(loads_logged)" -eq 1 \
	-a "$(unloads_logged)" -eq 0
stop_agent || true
finish
