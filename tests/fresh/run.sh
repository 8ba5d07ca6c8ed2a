#!/usr/bin/env bash
# Fresh-machine check: the README's two commands on a machine that has only what a new machine
# of this project's kind has, with empty caches.
#
#   tests/fresh/run.sh [--with-changes] [--keep] [STEP...]
#
# It builds (once, cached) a `debootstrap --variant=minbase` root of Debian 12 plus the packages
# in tests/fresh/machine-packages.txt, lays a throw-away overlay on it, mounts this machine's
# toolchains where a new machine has them (Go /usr/local/go, rustup /root/.rustup +
# /root/.cargo/bin, pyenv /root/.pyenv, Node.js /usr/bin/node + /usr/lib/node_modules; the
# writable ones as overlays, so nothing here changes), removes from them what this project
# installs (its pip packages, extra rustup targets), clones this repository into the root and
# runs the steps there with an empty ~/.cache/toa-operator and cargo registry:
#
#   demo   bash tests/vm/demo.sh                           (must end with `demo finished`)
#   fuzz   bash tests/run-all.sh fuzz                      (must end with `N passed, 0 failed`)
#   kmod   TOA_DEFAULT_KERNELS=6.1 bash tests/run-all.sh kmod
#   deps   TOA_DEPS_ONLY=1 bash tests/run-all.sh           (every suite's dependency step)
#   chart, rust, agent: bash tests/run-all.sh SUITE (not in the default: they take long)
#   demo-warm: the demo again, caches warm (for timings)
#   damage: after demo: truncates a cached guest layer and the built agent, empties a kernel
#          package, runs the demo again: each must be reported, rebuilt, and the demo finish
#   base   only build (or check) the cached base root
#
# Default steps: demo fuzz kmod deps (in that order: a full run comes before the steps that
# install other suites' tools, so a tool it uses without declaring it is missing there).
# Every command a script runs that is not installed is reported by name (tests/lib/deps.sh's
# command_not_found_handle), also when the failure itself was swallowed somewhere.
# --with-changes also applies the checkout's uncommitted changes (git diff HEAD) to the clone.
# --keep leaves the work directory (root, logs) in place; TOA_FRESH_WORK=DIR runs in DIR, and a
# kept DIR given again keeps its caches (a warm run, e.g. the damage step after a demo).
# Everything runs in a private mount namespace: its mounts vanish when it ends, also when it is
# killed; an EXIT trap unmounts and removes the work directory before that.
# Ends with `N passed, M failed` (one per step, one failure per missing tool).
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../lib/deps.sh
. "$REPO/tests/lib/deps.sh"
# shellcheck source=../vm/lib/suites.sh
. "$REPO/tests/vm/lib/suites.sh"

fresh_needs() {
	# debootstrap: the root; git: the clone; util-linux (unshare, mount) is Essential.
	need_apt debootstrap git
}
toa_deps_step fresh_needs

usage() {
	echo "usage: $0 [--with-changes] [--keep] [base|demo|demo-warm|damage|fuzz|kmod|deps|chart|rust|agent]..." >&2
	exit 2
}
with_changes=
keep=
only_base=
steps=()
for a in "$@"; do
	case $a in
	--with-changes) with_changes=1 ;;
	--keep) keep=1 ;;
	demo | demo-warm | damage | fuzz | kmod | deps | chart | rust | agent) steps+=("$a") ;;
	base) only_base=1 ;;
	*) usage ;;
	esac
done
[ ${#steps[@]} -gt 0 ] || steps=(demo fuzz kmod deps)

# Mounts live in a private mount namespace: gone with the last process, whatever happens.
if [ -z "${_TOA_FRESH_NS:-}" ]; then
	exec unshare --mount --propagation private -- env _TOA_FRESH_NS=1 bash "$0" "$@"
fi

log() { printf '[fresh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
	printf 'fresh: error: %s\n' "$*" >&2
	exit 1
}

FRESH_CACHE=$TOA_CACHE_DIR/fresh
mkdir -p "$FRESH_CACHE"
mapfile -t machine_pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/machine-packages.txt")
[ ${#machine_pkgs[@]} -gt 0 ] || die "tests/fresh/machine-packages.txt lists no package"

# The base root is the machine image, not the project's state: cached, keyed by its recipe.
BASE_RECIPE=2
base_key=$(printf '%s\n' "$BASE_RECIPE" "$(_suite_debootstrap_version)" "${machine_pkgs[@]}" | sha256sum | cut -c1-12)
BASE=$FRESH_CACHE/base-bookworm-$base_key

# base_root_ok DIR: the marker, every machine package installed, a working compiler.
base_root_ok() {
	local dir=$1 p status
	[ -f "$dir/.toa-fresh-ok" ] || return 1
	for p in "${machine_pkgs[@]}"; do
		status=$(dpkg-query --admindir="$dir/var/lib/dpkg" -W -f='${Status}' "$p" 2>/dev/null) || return 1
		[ "$status" = "install ok installed" ] || return 1
	done
	toa_elf_file "$dir/usr/bin/x86_64-linux-gnu-gcc-12"
}

# copy_machine_config ROOT: what this machine's image configures for its package clients
# (apt sources and options, CA certificates, pip/npm/git/go settings, DNS), copied as is.
copy_machine_config() {
	local root=$1 f
	# debootstrap writes its own sources.list: the machine's sources replace it.
	rm -f "$root/etc/apt/sources.list"
	for f in /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/apt.conf.d /etc/apt/trusted.gpg.d \
		/etc/apt/keyrings /etc/resolv.conf /etc/hosts /etc/ssl/certs /usr/local/share/ca-certificates \
		/etc/pip.conf /etc/npmrc /usr/etc/npmrc /root/.npmrc /root/.gitconfig /root/.config/go/env \
		/root/.bashrc /root/.profile /opt/wheels; do
		[ -e "$f" ] || continue
		mkdir -p "$root$(dirname "$f")"
		rm -rf "${root:?}$f"
		cp -a "$f" "$root$f"
	done
}

# in_root ROOT CMD...: CMD inside ROOT with /proc, /sys and /dev (mounted by mount_system).
mount_system() {
	local root=$1
	mount -t proc proc "$root/proc"
	mount --rbind /sys "$root/sys"
	mount --rbind /dev "$root/dev"
}

build_base_root() {
	local tmp=$BASE.tmp.$$ main keyring t0=$SECONDS
	log "building the new-machine root $BASE (debootstrap minbase + ${machine_pkgs[*]})"
	read -r main _ keyring < <(_suite_host_archives)
	[ -n "${main:-}" ] || die "cannot read the Debian archive from this machine's apt sources"
	rm -rf "$tmp"
	mkdir -p "$FRESH_CACHE/debootstrap-debs"
	if ! debootstrap --variant=minbase --keyring="$keyring" --cache-dir="$FRESH_CACHE/debootstrap-debs" \
		bookworm "$tmp" "$main" >"$tmp.log" 2>&1; then
		tail -n 20 "$tmp.log" >&2
		die "debootstrap of the base root failed (log: $tmp.log)"
	fi
	copy_machine_config "$tmp"
	printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
	chmod 755 "$tmp/usr/sbin/policy-rc.d"
	mount_system "$tmp"
	if ! chroot "$tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
		sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" && apt-get clean' \
		apt "${machine_pkgs[@]}" >>"$tmp.log" 2>&1; then
		umount -R "$tmp/proc" "$tmp/sys" "$tmp/dev" || true
		tail -n 20 "$tmp.log" >&2
		die "installing the machine packages into the base root failed (log: $tmp.log)"
	fi
	umount -R "$tmp/proc" "$tmp/sys" "$tmp/dev"
	rm -f "$tmp/usr/sbin/policy-rc.d"
	rm -rf "$tmp"/var/lib/apt/lists/*
	touch "$tmp/.toa-fresh-ok"
	base_root_ok "$tmp" || die "the new base root $tmp fails its own check"
	rm -rf "$BASE"
	mv -T "$tmp" "$BASE"
	rm -f "$tmp.log"
	log "base root ready in $((SECONDS - t0))s ($(du -sm "$BASE" | cut -f1) MB)"
}

if [ -d "$BASE" ] && ! base_root_ok "$BASE"; then
	log "cache: base root $BASE is incomplete or damaged: rebuilding it"
	rm -rf "$BASE"
fi
[ -d "$BASE" ] || build_base_root
if [ -n "$only_base" ]; then
	log "base root $BASE is ready"
	exit 0
fi

WORK=${TOA_FRESH_WORK:-}
[ -n "$WORK" ] || WORK=$(mktemp -d /tmp/toa-fresh.XXXXXX)
mkdir -p "$WORK"
ROOT=$WORK/root
LOGS=$WORK/logs

# Stops what still runs inside the root (by pid), unmounts everything under it, removes the
# work directory. Runs on every exit, also after a failure or a signal.
cleanup() {
	local rc=$? pid link
	trap - EXIT INT TERM
	for link in /proc/[0-9]*/root; do
		pid=${link#/proc/}
		pid=${pid%/root}
		[ "$pid" = $$ ] && continue
		if [ "$(readlink "$link" 2>/dev/null)" = "$ROOT" ]; then kill -9 "$pid" 2>/dev/null || true; fi
	done
	if mountpoint -q "$ROOT"; then
		umount -R "$ROOT" 2>/dev/null || umount -R -l "$ROOT" || true
	fi
	if [ -z "$keep" ]; then
		rm -rf "$WORK"
	else
		log "kept $WORK (logs in $LOGS)"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$ROOT" "$LOGS" "$WORK/upper" "$WORK/ovl"
mount -t overlay fresh-root -o "lowerdir=$BASE,upperdir=$WORK/upper,workdir=$WORK/ovl" "$ROOT"

# overlay_dir SRC: SRC (of this machine) at the same path in the root, writable through an
# overlay whose changes stay in the work directory.
overlay_dir() {
	local src=$1 name
	name=$(printf '%s' "$src" | tr '/' '_')
	mkdir -p "$WORK/tc$name.upper" "$WORK/tc$name.work" "$ROOT$src"
	# redirect_dir=on: rustup renames directories of the lower layer (target remove).
	mount -t overlay "fresh$name" -o "redirect_dir=on,lowerdir=$src,upperdir=$WORK/tc$name.upper,workdir=$WORK/tc$name.work" "$ROOT$src"
}
bind_ro() {
	local src=$1
	if [ -d "$src" ]; then mkdir -p "$ROOT$src"; else
		mkdir -p "$(dirname "$ROOT$src")"
		: >"$ROOT$src"
	fi
	mount --bind "$src" "$ROOT$src"
	mount -o remount,bind,ro "$ROOT$src"
}

log "work directory $WORK; toolchains from this machine"
copy_machine_config "$ROOT"
for d in /usr/local/go /root/.cargo/bin; do
	[ -d "$d" ] || die "this machine has no $d: it is not a machine of this project's kind"
	bind_ro "$d"
done
[ -f /root/.cargo/env ] && cp /root/.cargo/env "$ROOT/root/.cargo/env"
for d in /root/.rustup /root/.pyenv /usr/lib/node_modules; do
	[ -d "$d" ] || die "this machine has no $d: it is not a machine of this project's kind"
	overlay_dir "$d"
done
bind_ro /usr/bin/node
for f in npm npx corepack; do
	if [ -L "/usr/bin/$f" ]; then ln -sfn "$(readlink "/usr/bin/$f")" "$ROOT/usr/bin/$f"; fi
done
mount_system "$ROOT"

# The environment of this machine, without anything that points at this machine's caches.
envs=(HOME=/root TOA_MISSING_TOOLS_LOG=/root/missing-tools.log)
while IFS= read -r -d '' kv; do
	case ${kv%%=*} in
	TOA_* | _TOA_* | HOME | PWD | OLDPWD | SHLVL | _ | CARGO_TARGET_DIR | CARGO_HOME | RUSTUP_HOME | \
		GOPATH | GOCACHE | GOMODCACHE | KUBECONFIG | TMPDIR) ;;
	*) envs+=("$kv") ;;
	esac
done < <(env -0)

# in_root CMD: runs the shell command CMD in the clone inside the root.
in_root() {
	chroot "$ROOT" /usr/bin/env -i "${envs[@]}" bash -c "cd /root/toa-operator && $1"
}

# What this project installs into the machine's toolchains is removed again in the overlay,
# so the scripts must install it themselves: its pip packages and extra rustup targets.
mapfile -t project_pip < <(grep -rhoE '^[[:space:]]*need_pip [a-zA-Z0-9 ._-]+' "$REPO/tests" "$REPO/kmod" "$REPO/images" 2>/dev/null |
	sed -E 's/^[[:space:]]*need_pip //' | tr ' ' '\n' | sed '/^$/d' | sort -u)
reset_script='set -euo pipefail
host=$(rustc -vV | sed -n "s/^host: //p")
for t in $(rustup target list --installed); do
	[ "$t" = "$host" ] || { echo "fresh: rustup target remove $t"; rustup target remove "$t" >/dev/null; }
done
installed=$(python3 -m pip list --format=freeze 2>/dev/null | sed "s/==.*//" | tr "A-Z_" "a-z-")
remove=()
for p in "$@"; do
	if grep -qx "$(tr "A-Z_" "a-z-" <<<"$p")" <<<"$installed"; then remove+=("$p"); fi
done
if [ ${#remove[@]} -gt 0 ]; then
	echo "fresh: pip uninstall ${remove[*]}"
	python3 -m pip uninstall -y -q "${remove[@]}" >/dev/null 2>&1
fi'
chroot "$ROOT" /usr/bin/env -i "${envs[@]}" bash -c "$reset_script" reset "${project_pip[@]}"
if [ -z "${TOA_FRESH_WORK:-}" ] && { [ -d "$ROOT/root/.cache/toa-operator" ] || [ -d "$ROOT/root/.cargo/registry" ]; }; then
	die "the root's caches are not empty"
fi

log "cloning $REPO ($(git -C "$REPO" rev-parse --short HEAD)) into the root"
if [ -n "${TOA_FRESH_WORK:-}" ] && [ -d "$ROOT/root/toa-operator/.git" ]; then
	# A kept work directory given again: its clone, caches and builds stay (a warm run).
	git -C "$ROOT/root/toa-operator" fetch -q "$REPO" HEAD
else
	git clone -q --no-hardlinks "$REPO" "$ROOT/root/toa-operator"
fi
git -C "$ROOT/root/toa-operator" checkout -q "$(git -C "$REPO" rev-parse HEAD)"
if [ -n "$with_changes" ]; then
	git -C "$REPO" diff --binary HEAD >"$WORK/changes.patch"
	if [ -s "$WORK/changes.patch" ]; then
		git -C "$ROOT/root/toa-operator" apply "$WORK/changes.patch"
		log "applied the checkout's uncommitted changes: $(git -C "$ROOT/root/toa-operator" diff --stat | tail -n1)"
	fi
fi

passed=0
failed=0
timings=()
# run_step NAME CMD CHECK_REGEX...: CMD must exit 0 and its output must match every CHECK_REGEX.
run_step() {
	local name=$1 cmd=$2 t0=$SECONDS rc=0 secs re matched=1
	shift 2
	log "step $name: $cmd"
	in_root "$cmd" 2>&1 | tee "$LOGS/$name.log" || rc=$?
	secs=$((SECONDS - t0))
	timings+=("$(printf '%-10s %5ss  exit %s' "$name" "$secs" "$rc")")
	for re in "$@"; do
		if ! grep -Eq "$re" "$LOGS/$name.log"; then
			echo "# fresh $name: the output has no line matching /$re/"
			matched=
		fi
	done
	if [ "$rc" -eq 0 ] && [ -n "$matched" ]; then
		echo "ok - fresh $name: $cmd (${secs}s)"
		passed=$((passed + 1))
	else
		echo "not ok - fresh $name: $cmd (exit $rc, ${secs}s; log: $LOGS/$name.log)"
		failed=$((failed + 1))
	fi
}

# damage: a cached guest layer truncated, a kernel package emptied, the built agent truncated;
# the demo must say so for each, rebuild them and finish (run it after demo).
damage_script='set -euo pipefail
c=$HOME/.cache/toa-operator
layer=$(find "$c/agent-guest" -name "base-*.cpio" -print -quit)
deb=$(find "$c/debs/bookworm" -name "linux-image-*.deb" -print -quit)
agent=target/x86_64-unknown-linux-musl/release/toa-node-agent
[ -n "$layer" ] && [ -n "$deb" ] && [ -f "$agent" ] || { echo "damage: run the demo step first"; exit 1; }
truncate -s $(($(stat -c %s "$layer") / 2)) "$layer"
: >"$deb"
truncate -s 100000 "$agent"
echo "damage: truncated $layer, emptied $deb, truncated $agent"
bash tests/vm/demo.sh
# The demo keeps the guest build'"'"'s log lines (the layer'"'"'s among them) in its initrd.log.
grep "cache:" "$c/vm-run/demo-6.1/initrd.log" || true'

for s in "${steps[@]}"; do
	case $s in
	demo | demo-warm) run_step "$s" "bash tests/vm/demo.sh" '^demo finished' ;;
	fuzz) run_step fuzz "bash tests/run-all.sh fuzz" '^[0-9]+ passed, 0 failed$' ;;
	kmod) run_step kmod "TOA_DEFAULT_KERNELS=6.1 bash tests/run-all.sh kmod" '^[0-9]+ passed, 0 failed$' ;;
	deps) run_step deps "TOA_DEPS_ONLY=1 bash tests/run-all.sh" '^[0-9]+ passed, 0 failed$' ;;
	chart | rust) run_step "$s" "bash tests/run-all.sh $s" '^[0-9]+ passed, 0 failed$' ;;
	damage) run_step damage "$damage_script" '^demo finished' 'cache: guest layer .*base-.*cpio does not list' \
		'cache: .*linux-image-.*\.deb differs from the archive' 'cache: built agent .* is not a whole static binary' ;;
	agent) run_step agent "TOA_AGENT_DEFAULT_KERNELS=6.1 bash tests/run-all.sh agent" '^[0-9]+ passed, 0 failed$' ;;
	esac
done

# Every tool a script ran without installing it first, by name (also when swallowed).
if [ -s "$ROOT/root/missing-tools.log" ]; then
	while read -r tool where; do
		echo "not ok - missing tool: $tool (run by $where before any need_* installed it)"
		failed=$((failed + 1))
	done < <(sort -u "$ROOT/root/missing-tools.log")
fi

echo "# fresh-machine steps (work directory $WORK):"
printf '#   %s\n' "${timings[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
