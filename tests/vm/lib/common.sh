# shellcheck shell=bash source-path=SCRIPTDIR
# Shared helpers for the QEMU guest harness (tests/vm/). Source it; it is `set -euo pipefail` safe.
# Everything downloaded goes to $TOA_CACHE_DIR (outside the repository).

TOA_VM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOA_VM_DIR=$(cd "$TOA_VM_LIB_DIR/.." && pwd)
TOA_REPO_DIR=$(cd "$TOA_VM_DIR/../.." && pwd)
export TOA_VM_LIB_DIR TOA_VM_DIR TOA_REPO_DIR

# shellcheck source=../../lib/deps.sh
. "$TOA_REPO_DIR/tests/lib/deps.sh"

# Optional read-only seed of already downloaded .deb files (speeds up a developer machine;
# scripts never depend on it: anything missing is fetched with apt-get download).
TOA_SEED_DEBS=${TOA_SEED_DEBS:-/root/.cache/toa-dev/debs}

toa_log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
toa_die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# toa_fetch_debs DEST_DIR APT_GET_CMD PKG...
# Makes sure DEST_DIR holds one .deb per PKG. APT_GET_CMD is the word list that runs apt-get
# (e.g. "apt-get" or "suite_apt bullseye apt-get"), so other Debian suites use their own lists.
# Prints the .deb paths, one per line, in PKG order.
toa_fetch_debs() {
	local dest=$1 apt_cmd=$2 p f seed
	shift 2
	mkdir -p "$dest"
	for p in "$@"; do
		f=$(find "$dest" -maxdepth 1 -name "${p}_*.deb" | sort | tail -n1)
		if [ -z "$f" ] && [ -d "$TOA_SEED_DEBS" ]; then
			seed=$(find "$TOA_SEED_DEBS" -maxdepth 1 -name "${p}_*.deb" | sort | tail -n1)
			if [ -n "$seed" ]; then
				cp "$seed" "$dest/"
				f="$dest/$(basename "$seed")"
			fi
		fi
		if [ -z "$f" ]; then
			toa_log "downloading $p"
			# apt-get download writes into the current directory.
			# shellcheck disable=SC2086
			(cd "$dest" && $apt_cmd download -qq "$p" >/dev/null 2>"$dest/.apt-$p.err") ||
				toa_die "apt-get download $p failed: $(tail -n3 "$dest/.apt-$p.err") (check the apt sources / network to the Debian archive)"
			rm -f "$dest/.apt-$p.err"
			f=$(find "$dest" -maxdepth 1 -name "${p}_*.deb" | sort | tail -n1)
			[ -n "$f" ] || toa_die "apt-get download $p produced no ${p}_*.deb in $dest"
		fi
		printf '%s\n' "$f"
	done
}

# toa_apt_depends APT_CACHE_CMD PKG: prints the direct Depends of PKG (first alternative only).
toa_apt_depends() {
	local apt_cmd=$1 pkg=$2
	# shellcheck disable=SC2086
	$apt_cmd depends "$pkg" 2>/dev/null | awk '/^  Depends:/ { gsub(/[<>]/, "", $2); print $2 }'
}

# toa_host_installed PKG: true when PKG is installed on this machine.
toa_host_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
