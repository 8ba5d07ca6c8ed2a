# shellcheck shell=bash
# A local, signed apt mirror of one Debian suite for the build-root tests (sourced; needs
# tests/vm/lib/suites.sh): tests/buildroot/local.sh (the agent's build-root code on this machine)
# and tests/vm/agent.sh (the image's agent in a guest, reaching the mirror through QEMU's
# restricted user network).
#
#   mirror_needs                      the tools (apt-utils for apt-ftparchive, gpg, python3)
#   mirror_build SUITE KVER WORK      WORK/repo: the suite's debootstrap .debs (the harness's
#                                     minbase root of SUITE with gcc and make), plus
#                                     linux-headers-KVER, gcc-N (the kernel's) and make with
#                                     all they depend on; indexed with apt-ftparchive and
#                                     signed with a key made for this run (WORK/gnupg).
#                                     Sets MIRROR_GCC_MAJOR (N) and MIRROR_DEBS (count).
#   mirror_export_key WORK FILE [UID] the signing key (or the key of UID) as a binary keyring
#   mirror_other_key WORK FILE        a second key that signs nothing, as a keyring
#   mirror_serve WORK                 python3 -m http.server on a free loopback port; sets
#                                     MIRROR_PORT and MIRROR_PID
#   mirror_stop [WORK]                stops that server (MIRROR_PID) and WORK's gpg-agent
#   mirror_free_port                  a loopback port nothing listens on (at the time of asking)

mirror_needs() {
	need_apt apt-utils
	need_apt gpg
	need_apt python3
}

_mirror_die() {
	echo "mirror: error: $*" >&2
	return 1
}

mirror_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mirror_build() {
	local suite=$1 kver=$2 work=$3 deps closure names fetched
	local -a debs
	rm -rf "$work"
	mkdir -p "$work/repo/pool" "$work/gnupg" || _mirror_die "cannot create $work" || return 1
	chmod 700 "$work/gnupg"
	# The kernel's gcc major, from what its headers depend on: linux-compiler-gcc-N-x86 (up to
	# Debian 13) or gcc-N-for-host (sid).
	deps=$(suite_apt "$suite" apt-cache depends "linux-headers-$kver") ||
		_mirror_die "apt-cache depends linux-headers-$kver failed in $suite" || return 1
	MIRROR_GCC_MAJOR=$(awk '$1 == "Depends:" && $2 ~ /^(linux-compiler-)?gcc-[0-9]+/ { print $2; exit }' <<<"$deps" |
		sed -E 's/^(linux-compiler-)?gcc-([0-9]+).*/\2/')
	[ -n "$MIRROR_GCC_MAJOR" ] || _mirror_die "linux-headers-$kver depends on no gcc-N package in $suite: $deps" || return 1
	# What the agent asks for (buildroot.rs: gcc-N, make, linux-headers-KVER) with everything
	# they depend on, as apt resolves it against an empty system (the suite's private apt).
	closure=$(suite_apt "$suite" apt-get -qq --print-uris install "linux-headers-$kver" "gcc-$MIRROR_GCC_MAJOR" make) ||
		_mirror_die "apt cannot resolve linux-headers-$kver gcc-$MIRROR_GCC_MAJOR make in $suite: $closure" || return 1
	names=$(awk '{ n = $2; sub(/_.*/, "", n); print n }' <<<"$closure")
	[ -n "$names" ] || _mirror_die "apt resolved nothing for linux-headers-$kver in $suite" || return 1
	# shellcheck disable=SC2086 # one package name per word
	fetched=$(suite_fetch "$suite" $names) || _mirror_die "cannot fetch the packages of linux-headers-$kver" || return 1
	mapfile -t debs <<<"$fetched"
	if [ ! -d "$TOA_CACHE_DIR/debootstrap-debs/$suite" ]; then
		# The harness's minbase root of the suite fills that cache (with gcc-N and make).
		suite_root "$suite" >/dev/null || _mirror_die "suite_root $suite failed" || return 1
	fi
	cp "${debs[@]}" "$work/repo/pool/" || _mirror_die "cannot copy the packages of linux-headers-$kver" || return 1
	# The minbase packages the closure does not already hold (cp -n's exit status for a
	# skipped file differs between coreutils releases: test, then copy).
	local f
	for f in "$TOA_CACHE_DIR/debootstrap-debs/$suite"/*.deb; do
		[ -e "$work/repo/pool/${f##*/}" ] || cp "$f" "$work/repo/pool/" ||
			_mirror_die "cannot copy $f" || return 1
	done
	# shellcheck disable=SC2034 # the caller's
	MIRROR_DEBS=$(find "$work/repo/pool" -name '*.deb' | wc -l)
	mkdir -p "$work/repo/dists/$suite/main/binary-amd64"
	(cd "$work/repo" && apt-ftparchive packages pool >"dists/$suite/main/binary-amd64/Packages") ||
		_mirror_die "apt-ftparchive packages failed" || return 1
	gzip -9k "$work/repo/dists/$suite/main/binary-amd64/Packages" || return 1
	(cd "$work/repo/dists/$suite" && apt-ftparchive \
		-o "APT::FTPArchive::Release::Suite=$suite" -o "APT::FTPArchive::Release::Codename=$suite" \
		-o APT::FTPArchive::Release::Components=main -o APT::FTPArchive::Release::Architectures=amd64 \
		release . >Release.new) || _mirror_die "apt-ftparchive release failed" || return 1
	mv "$work/repo/dists/$suite/Release.new" "$work/repo/dists/$suite/Release" || return 1
	# A signing key for this run only; nodes trust it through signed-by. gpg starts an agent
	# for this home: mirror_stop ends it.
	GNUPGHOME=$work/gnupg gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
		--quick-gen-key "toa build-root test mirror <mirror@example.invalid>" ed25519 sign 1d ||
		_mirror_die "gpg --quick-gen-key failed" || return 1
	GNUPGHOME=$work/gnupg gpg --batch --quiet --yes --clearsign -o "$work/repo/dists/$suite/InRelease" \
		"$work/repo/dists/$suite/Release" || _mirror_die "cannot sign InRelease" || return 1
	GNUPGHOME=$work/gnupg gpg --batch --quiet --yes --armor --detach-sign -o "$work/repo/dists/$suite/Release.gpg" \
		"$work/repo/dists/$suite/Release" || _mirror_die "cannot sign Release" || return 1
	echo "$suite" >"$work/suite"
}

mirror_export_key() {
	local work=$1 out=$2 uid=${3:-mirror@example.invalid}
	mkdir -p "$(dirname "$out")"
	GNUPGHOME=$work/gnupg gpg --batch --export "$uid" >"$out.tmp" && [ -s "$out.tmp" ] ||
		_mirror_die "cannot export the key of $uid" || return 1
	mv "$out.tmp" "$out"
}

mirror_other_key() {
	local work=$1 out=$2
	GNUPGHOME=$work/gnupg gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
		--quick-gen-key "toa other key <other@example.invalid>" ed25519 sign 1d ||
		_mirror_die "gpg --quick-gen-key (other) failed" || return 1
	mirror_export_key "$work" "$out" other@example.invalid
}

mirror_stop() {
	local work=${1:-}
	if [ -n "${MIRROR_PID:-}" ]; then
		kill "$MIRROR_PID" 2>/dev/null || true
		wait "$MIRROR_PID" 2>/dev/null || true
	fi
	MIRROR_PID='' MIRROR_PORT=''
	if [ -n "$work" ] && [ -d "$work/gnupg" ]; then
		GNUPGHOME=$work/gnupg gpgconf --kill gpg-agent 2>/dev/null || true
	fi
}

mirror_serve() {
	local work=$1 suite
	suite=$(cat "$work/suite") || _mirror_die "$work holds no mirror (run mirror_build)" || return 1
	MIRROR_PORT=$(mirror_free_port) || return 1
	python3 -m http.server --bind 127.0.0.1 --directory "$work/repo" "$MIRROR_PORT" >"$work/http.log" 2>&1 &
	# shellcheck disable=SC2034 # the caller's
	MIRROR_PID=$!
	for _ in $(seq 100); do
		if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MIRROR_PORT/dists/$suite/InRelease')" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	_mirror_die "the mirror on 127.0.0.1:$MIRROR_PORT did not answer in 10 s ($(tail -n 3 "$work/http.log" | tr '\n' ' '))"
}
