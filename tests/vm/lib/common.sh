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
# Makes sure DEST_DIR holds the archive's current .deb of each PKG, checked against the size and
# SHA256 the archive's index gives (a cached .deb that differs, e.g. truncated, is downloaded
# again, with a log line). APT_GET_CMD is the word list that runs apt-get (e.g. "apt-get").
# Downloads go to a temporary directory and are renamed once checked.
# Prints the .deb paths, one per line, in PKG order.
toa_fetch_debs() {
	local dest=$1 apt_cmd=$2 uris p line name size sum f seed tmp
	shift 2
	mkdir -p "$dest"
	if ! uris=$(toa_deb_uris "$apt_cmd" "$@"); then
		# A fresh machine (or old lists): the packages are unknown until apt-get update.
		_toa_apt_update_once
		uris=$(toa_deb_uris "$apt_cmd" "$@") ||
			toa_die "apt-get download --print-uris $* failed: $uris (check the apt sources / network to the Debian archive)"
	fi
	for p in "$@"; do
		line=$(awk -v p="$p" 'index($2, p "_") == 1 { print $2, $3, $4; exit }' <<<"$uris")
		[ -n "$line" ] || toa_die "the archive's index names no .deb for $p: $uris"
		read -r name size sum <<<"$line"
		f=$dest/$name
		if [ -e "$f" ] && ! toa_deb_ok "$f" "$size" "$sum"; then
			toa_log "cache: $f differs from the archive's size/SHA256 (truncated or damaged): downloading it again"
			rm -f "$f"
		fi
		seed=$TOA_SEED_DEBS/$name
		if [ ! -e "$f" ] && [ -f "$seed" ] && toa_deb_ok "$seed" "$size" "$sum"; then
			cp "$seed" "$f.tmp.$$"
			mv "$f.tmp.$$" "$f"
		fi
		if [ ! -e "$f" ]; then
			toa_log "downloading $p"
			tmp=$(mktemp -d "$dest/.download.XXXXXX")
			# apt-get download writes into the current directory.
			# shellcheck disable=SC2086
			if ! (cd "$tmp" && $apt_cmd download -qq "$p" >/dev/null 2>"$tmp/err"); then
				toa_log "apt-get download $p: $(tail -n3 "$tmp/err")"
				rm -rf "$tmp"
				toa_die "apt-get download $p failed (check the apt sources / network to the Debian archive)"
			fi
			if ! toa_deb_ok "$tmp/$name" "$size" "$sum"; then
				rm -rf "$tmp"
				toa_die "apt-get download $p gave no $name of $size bytes with $sum"
			fi
			mv "$tmp/$name" "$f"
			rm -rf "$tmp"
		fi
		printf '%s\n' "$f"
	done
}

# toa_deb_uris APT_GET_CMD PKG...: the archive's "'URI' FILE SIZE SHA256:HEX" line per PKG.
toa_deb_uris() {
	local apt_cmd=$1
	shift
	# shellcheck disable=SC2086
	$apt_cmd download --print-uris -qq "$@" 2>&1
}

# toa_apt_depends APT_CACHE_CMD PKG: prints the direct Depends of PKG (first alternative only).
toa_apt_depends() {
	local apt_cmd=$1 pkg=$2
	# shellcheck disable=SC2086
	$apt_cmd depends "$pkg" 2>/dev/null | awk '/^  Depends:/ { gsub(/[<>]/, "", $2); print $2 }'
}

# toa_host_installed PKG: true when PKG is installed on this machine.
toa_host_installed() { toa_apt_installed "$1"; }

# toa_cache_rebuild WHAT REASON: the log line for a cache entry that failed its check on read.
toa_cache_rebuild() { toa_log "cache: $1 $2: rebuilding it"; }
