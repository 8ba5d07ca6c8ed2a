# shellcheck shell=bash source-path=SCRIPTDIR
# QEMU guests as Kubernetes nodes for the cluster suite (tests/cluster/).
#
# Each node is a QEMU/TCG guest booting a real Debian kernel with the agent guest's bookworm
# userspace (gcc, make, kmod, the kernel's headers: tests/vm/agent-guest/host.sh layers). The
# harness creates its Node object (cp_create_node) and runs the real static toa-node-agent in
# it as the operator's DaemonSet pod would run: the container's args and env (NODE_NAME from
# spec.nodeName) and its hostPath volume mounts are read from the live DaemonSet object, the
# ServiceAccount token (bound to the Node), ca.crt and namespace sit under
# /var/run/secrets/kubernetes.io/serviceaccount/, KUBERNETES_SERVICE_HOST/PORT point at
# 10.0.2.100:6443. The guest's network is QEMU's user network with restrict=on: its only way
# out is the guestfwd of 10.0.2.100:6443 to the apiserver's loopback port (one socat per
# connection); the host reaches the guest through hostfwd on 127.0.0.1 only (the agent's
# metrics port and the command channel, tests/cluster/guest/ctl.sh).
#
#   nodes_prepare SERIES...         kernels, guest layers, the static agent, toatest (cached)
#   node_boot NAME SERIES           boots a guest, waits for its command channel, creates its
#                                   Node object; sets nothing global (state in $NODES_DIR/NAME)
#   node_exec NAME [TIMEOUT_S] < SCRIPT   runs a bash script in the guest, prints its output,
#                                   returns its status
#   node_prewarm NAME               builds the module once in the guest (standalone agent,
#                                   never two at once) unless the host cache has it; keeps the
#                                   cache in the guest and on the host
#   node_pod_start NAME / node_pod_stop NAME   the agent "pod" (from the live DaemonSet)
#   node_metrics_port NAME          host port of the agent's metrics (hostfwd)
#   node_kill NAME                  powers the guest off hard (QEMU killed), Node kept; its
#                                   node Lease is no longer renewed
#   nodes_stop_all                  every guest this shell started, by pid
#
# Requires tests/cluster/lib/controlplane.sh (cp_* functions, CP_* variables) after cp_start.

NODES_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODES_GUEST_DIR=$(cd "$NODES_LIB_DIR/../guest" && pwd)
# shellcheck source=../../vm/agent-guest/host.sh
. "$NODES_LIB_DIR/../../vm/agent-guest/host.sh"

NODES_CACHE=${NODES_CACHE:-$TOA_CACHE_DIR/cluster-nodes}
NODES_DIR=${NODES_DIR:-}
NODES_MEM=${TOA_NODES_GUEST_MEM:-2048}
# The guest's in-guest command port (hostfwd target) and the apiserver address it dials.
NODES_CTL_PORT=7000
NODES_AGENT_BIN=
# The node Lease (kube-node-lease) renewal period, as a kubelet's (nodeLeaseDurationSeconds 40,
# renewed every 10 s); shorter here, so a CPU-starved renewal never looks like a dead node.
NODES_LEASE_RENEW=${TOA_NODES_LEASE_RENEW:-5}
# A cold module build under TCG takes minutes; everything else is seconds.
NODES_BUILD_TIMEOUT=${TOA_NODES_BUILD_TIMEOUT:-1500}

_nodes_log() { printf '[%s] nodes: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

_nodes_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# _nodes_net_layer OUT: e1000 (and what it depends on) from the kernel package, for the
# guest's /init (/usr/lib/toa-cluster/modules.order). After kernel_prepare.
_nodes_net_layer() {
	local out=$1 stage
	stage=$(mktemp -d "$NODES_CACHE/stage-net.XXXXXX")
	initramfs_new "$stage/mods"
	initramfs_add_kmod "$stage/mods" e1000
	mkdir -p "$stage/root/usr/lib/toa-cluster"
	cp "$stage"/mods/lib/modules/*.ko "$stage/root/usr/lib/toa-cluster/"
	cp "$stage/mods/etc/modules.order" "$stage/root/usr/lib/toa-cluster/modules.order"
	toa_cpio_pack "$stage/root" "$out"
	rm -rf "$stage"
}

# _nodes_run_layer OUT: init, command channel, agent, toatest, module sources, make wrapper.
_nodes_run_layer() {
	local out=$1 stage
	stage=$(mktemp -d "$NODES_CACHE/stage-run.XXXXXX")
	mkdir -p "$stage/usr/local/bin" "$stage/usr/local/sbin" "$stage/usr/local/lib/toa-cluster" \
		"$stage/usr/share/toa-node-agent/kmod"
	install -m 0755 "$NODES_GUEST_DIR/init" "$stage/init"
	install -m 0755 "$NODES_GUEST_DIR/ctl.sh" "$stage/usr/local/lib/toa-cluster/ctl.sh"
	install -m 0755 "$AGENT_GUEST_HERE/make-wrapper" "$stage/usr/local/sbin/make"
	install -m 0755 "$NODES_AGENT_BIN" "$stage/usr/local/bin/toa-node-agent"
	install -m 0755 "$NODES_DIR/toatest" "$stage/usr/local/bin/toatest"
	install -m 0755 "$(_initramfs_busybox)" "$stage/usr/local/bin/busybox"
	# The module sources as the agent image ships them: sources only, no build outputs.
	(cd "$TOA_REPO_DIR/kmod" && tar --exclude='*.o' --exclude='*.ko' --exclude='.*.cmd' \
		--exclude='*.mod' --exclude='*.mod.c' --exclude=Module.symvers --exclude=modules.order \
		--exclude=fuzz --exclude='.tmp*' -cf - .) | (cd "$stage/usr/share/toa-node-agent/kmod" && tar -xf -)
	toa_cpio_pack "$stage" "$out" gzip
	rm -rf "$stage"
}

# The module cache saved from an earlier run is keyed by kernel and module sources (the agent
# verifies every cached file's checksum before it loads it, and rebuilds on any mismatch).
_nodes_kmod_digest() {
	(cd "$TOA_REPO_DIR/kmod" && find . -type f \( -name '*.c' -o -name '*.h' -o -name Makefile -o -name Kbuild \) \
		-not -path './fuzz/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
_nodes_modcache_file() { echo "$NODES_CACHE/modcache-$1-$(_nodes_kmod_digest).tar.gz"; }

# nodes_needs: what the guest nodes install (agent_guest_needs: the static agent, the layers,
# the kernels, QEMU) and the tools their checks use.
nodes_needs() {
	need_apt socat jq curl file
	agent_guest_needs
}

# nodes_prepare SERIES...: everything a node of these kernels needs, before any guest boots.
nodes_prepare() {
	local s t0=$SECONDS
	[ -n "$NODES_DIR" ] || NODES_DIR=$(mktemp -d "${CP_RUN_DIR:-/tmp}/nodes.XXXXXX")
	export NODES_DIR
	mkdir -p "$NODES_CACHE" "$NODES_DIR"
	nodes_needs
	qemu_prepare
	NODES_AGENT_BIN=$NODES_DIR/toa-node-agent-musl
	agent_binary "$NODES_AGENT_BIN"
	toatest_build "$NODES_DIR/toatest"
	_nodes_run_layer "$NODES_DIR/run.cpio.gz"
	for s in "$@"; do
		# kernel_prepare exports per-kernel globals: one subshell per series, results in a file.
		(
			kernel_prepare "$s"
			base=$(_agent_base_layer)
			kl=$(_agent_kernel_layer)
			net=$NODES_CACHE/net-$KVER.cpio
			[ -f "$net" ] || _nodes_net_layer "$net"
			{
				printf 'N_KVER=%q\nN_VMLINUX=%q\nN_LAYERS=%q\n' "$KVER" "$VMLINUX" "$base $kl $net"
			} >"$NODES_DIR/kernel-$s.env"
		) || toa_die "preparing kernel $s for the node guests failed"
	done
	_nodes_log "prepared kernels $* in $((SECONDS - t0))s"
}

_nodes_kernel_env() {
	[ -r "$NODES_DIR/kernel-$1.env" ] || toa_die "kernel $1 not prepared (call nodes_prepare $1 first)"
	# shellcheck source=/dev/null
	. "$NODES_DIR/kernel-$1.env"
}

node_metrics_port() { cat "$NODES_DIR/$1/metrics.port"; }
node_kver() { cat "$NODES_DIR/$1/kver"; }

# _nodes_agent_port: the metrics port of the agent in the live DaemonSet (--metrics-addr).
_nodes_agent_port() {
	local args
	args=$(cp_kubectl -n "$CP_NAMESPACE" get daemonset toa-node-agent -o json | jq -r '.spec.template.spec.containers[0].args[]')
	sed -n 's/^--metrics-addr=.*:\([0-9]\{1,5\}\)$/\1/p' <<<"$args" | tail -n1
}

# node_boot NAME SERIES [LABEL=VALUE...]: the guest, its command channel, its Node object.
node_boot() {
	local name=$1 series=$2 dir ctl mport gport pid t0=$SECONDS i
	shift 2
	_nodes_kernel_env "$series"
	qemu_prepare
	dir=$NODES_DIR/$name
	mkdir -p "$dir"
	gport=$(_nodes_agent_port)
	[ -n "$gport" ] || toa_die "the DaemonSet $CP_NAMESPACE/toa-node-agent names no --metrics-addr port"
	ctl=$(_nodes_free_port)
	mport=$(_nodes_free_port)
	echo "$ctl" >"$dir/ctl.port"
	echo "$mport" >"$dir/metrics.port"
	echo "$N_KVER" >"$dir/kver"
	local layers=() extra=""
	read -r -a layers <<<"$N_LAYERS"
	if [ -f "$(_nodes_modcache_file "$N_KVER")" ]; then
		extra=$dir/modcache.cpio
		_nodes_modcache_layer "$(_nodes_modcache_file "$N_KVER")" "$extra"
	fi
	# Uncompressed layers first: after a gzip member the kernel's unpacker may not find the next
	# archive ("Initramfs unpacking failed: invalid magic at start of compressed archive").
	cat "${layers[@]}" ${extra:+"$extra"} "$NODES_DIR/run.cpio.gz" >"$dir/initrd"
	_nodes_log "booting $name ($N_KVER, ctl 127.0.0.1:$ctl, metrics 127.0.0.1:$mport -> $gport)"
	# restrict=on: the guest reaches nothing but the guestfwd (one socat per connection, so the
	# agent's watch and its writes, and reconnections after an apiserver restart, all work).
	# A simple command (not the _qemu_env function): $! is QEMU itself, so node_kill stops it.
	LD_LIBRARY_PATH="$QEMU_ROOT/usr/lib/x86_64-linux-gnu:$QEMU_ROOT/lib/x86_64-linux-gnu" "$QEMU_BIN" \
		-L "$QEMU_ROOT/usr/share/qemu" -L "$QEMU_ROOT/usr/share/seabios" \
		-accel tcg,thread=single -smp 2 -m "$NODES_MEM" \
		-nographic -nodefaults -serial "file:$dir/serial.log" -no-reboot \
		-netdev "user,id=n0,restrict=on,net=10.0.2.0/24,guestfwd=tcp:$CP_GUEST_APISERVER_IP:$CP_GUEST_APISERVER_PORT-cmd:socat - TCP:127.0.0.1:$CP_APISERVER_PORT,hostfwd=tcp:127.0.0.1:$ctl-:$NODES_CTL_PORT,hostfwd=tcp:127.0.0.1:$mport-:$gport" \
		-device e1000,netdev=n0,romfile= \
		-kernel "$N_VMLINUX" -initrd "$dir/initrd" \
		-append "console=ttyS0 panic=-1 quiet no_timer_check toanode=$name" \
		</dev/null >"$dir/qemu.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/qemu.pid"
	for i in $(seq 1 300); do
		grep -q "TOA-NODE-READY $name" "$dir/serial.log" 2>/dev/null && break
		kill -0 "$pid" 2>/dev/null || toa_die "guest $name exited during boot: $(tail -q -n 5 "$dir/qemu.log" "$dir/serial.log" 2>&1 | tr '\n' ' ')"
		sleep 1
	done
	[ "$i" -lt 300 ] || toa_die "guest $name did not reach /init in 300 s (serial log $dir/serial.log)"
	if printf 'dmesg | grep -q "Initramfs unpacking failed"\n' | node_exec "$name" 60 >/dev/null; then
		toa_die "guest $name: the kernel could not unpack every initramfs layer (dmesg: Initramfs unpacking failed)"
	fi
	if grep -q 'TOA-GUEST-ERROR' "$dir/serial.log"; then
		toa_die "guest $name: $(grep 'TOA-GUEST-ERROR' "$dir/serial.log" | tr '\n' ' ')"
	fi
	local release
	release=$(printf 'uname -r\n' | node_exec "$name" 30 | head -n1)
	[ "$release" = "$N_KVER" ] || toa_die "guest $name runs '$release', expected $N_KVER"
	echo "$((SECONDS - t0))" >"$dir/boot.seconds"
	_nodes_log "$name up in $((SECONDS - t0))s"
	cp_create_node "$name" "$N_KVER" "Debian GNU/Linux 12 (bookworm)" \
		node.kubernetes.io/instance-type=qemu-tcg-2vcpu "$@" >/dev/null
	_nodes_lease_renewer "$name" "$pid"
}

# _nodes_lease_renewer NAME QEMU_PID: plays the kubelet's part for the node Lease: renews
# kube-node-lease/NAME (holderIdentity NAME, leaseDurationSeconds 40) every NODES_LEASE_RENEW
# seconds while QEMU runs. In the background with its output in a file (a check's output pipe
# must not stay open); its pid in $NODES_DIR/NAME/lease.pid.
_nodes_lease_renewer() {
	local name=$1 qpid=$2 dir=$NODES_DIR/$1
	(
		set +e
		# QEMU runs (not a zombie: a killed QEMU whose starter is gone may wait for a reaper)
		# and node_kill has not removed its pid file.
		while [ -e "$dir/qemu.pid" ] && state=$(ps -o stat= -p "$qpid") && [ "${state:0:1}" != Z ]; do
			cp_kubectl apply --server-side --field-manager kubelet -f - <<EOX
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: $name
  namespace: kube-node-lease
spec:
  holderIdentity: $name
  leaseDurationSeconds: 40
  renewTime: "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)"
EOX
			sleep "$NODES_LEASE_RENEW"
		done
		echo "QEMU $qpid gone: no more renewals"
	) >"$dir/lease.log" 2>&1 &
	echo "$!" >"$dir/lease.pid"
}

# _nodes_modcache_layer TGZ OUT: the saved cache directory as an initramfs layer.
_nodes_modcache_layer() {
	local tgz=$1 out=$2 stage
	stage=$(mktemp -d "$NODES_DIR/stage-cache.XXXXXX")
	mkdir -p "$stage/var/lib/toa-operator"
	tar -xzf "$tgz" -C "$stage/var/lib/toa-operator" || toa_die "unreadable module cache $tgz (delete it)"
	toa_cpio_pack "$stage" "$out"
	rm -rf "$stage"
}

# node_exec NAME [TIMEOUT_S]: stdin is a bash script run in the guest (ctl.sh); prints its
# output and returns its exit status.
node_exec() {
	local name=$1 tmo=${2:-120} port rc=0
	port=$(cat "$NODES_DIR/$name/ctl.port")
	# The script comes on our stdin; the python client forwards it, half-closes, reads to EOF,
	# prints the output and exits with the guest's status (125: channel failure).
	python3 -c '
import re, socket, sys
port, tmo, name = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
data = sys.stdin.buffer.read()
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(tmo)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
except OSError as e:
    sys.stderr.write(f"node_exec {name}: command channel: {e}\n")
    sys.exit(125)
text = buf.decode(errors="replace")
m = re.search(r"\nTOA-CTL-RC (\d+)\n$", text)
if not m:
    sys.stdout.write(text)
    sys.stderr.write(f"node_exec {name}: no exit status from the guest\n")
    sys.exit(125)
sys.stdout.write(text[: m.start()])
sys.exit(int(m.group(1)))
' "$port" "$tmo" "$1" || rc=$?
	return "$rc"
}

# _nodes_pod_script NAME: the guest-side script that sets up and starts the agent exactly as
# the live DaemonSet's pod spec says (args, env, hostPath mounts, ServiceAccount files).
_nodes_pod_script() {
	local name=$1 ds token
	ds=$(cp_kubectl -n "$CP_NAMESPACE" get daemonset toa-node-agent -o json)
	token=$(cp_node_token "$name")
	[ -n "$token" ] || toa_die "no token for node $name"
	jq -e '.spec.template.spec.containers | length == 1' >/dev/null <<<"$ds" ||
		toa_die "the DaemonSet's pod has not exactly one container"
	cat <<EOS
set -euo pipefail
mkdir -p /run/toa
# ServiceAccount volume (as the kubelet projects it).
sa=/var/run/secrets/kubernetes.io/serviceaccount
mkdir -p "\$sa"
base64 -d >"\$sa/token" <<'T'
$(printf '%s' "$token" | base64 -w0)
T
base64 -d >"\$sa/ca.crt" <<'T'
$(base64 -w0 "$CP_CA_CRT")
T
printf '%s' $(printf '%q' "$CP_NAMESPACE") >"\$sa/namespace"
EOS
	# hostPath volumes at their mount paths (read-only when the pod says so).
	jq -r '
	  .spec.template.spec as $p
	  | ($p.volumes | map({key: .name, value: .hostPath}) | from_entries) as $vols
	  | $p.containers[0].volumeMounts[]
	  | select($vols[.name] != null)
	  | [$vols[.name].path, .mountPath, (.readOnly // false | tostring), ($vols[.name].type // "")]
	  | @tsv' <<<"$ds" | while IFS=$'\t' read -r src dst ro kind; do
		printf 'node_mount %q %q %q %q\n' "$src" "$dst" "$ro" "$kind"
	done | {
		cat <<'EOS'
node_mount() {
	local src=$1 dst=$2 ro=$3 kind=$4
	case $kind in
	DirectoryOrCreate | "") [ -e "$src" ] || mkdir -p "$src" ;;
	Directory) [ -d "$src" ] || { echo "hostPath $src is not a directory"; return 1; } ;;
	File) [ -f "$src" ] || { echo "hostPath $src is not a file"; return 1; } ;;
	esac
	mountpoint -q "$dst" && return 0
	[ "$src" = "$dst" ] && return 0
	if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")" && touch "$dst"; fi
	mount --bind "$src" "$dst"
	if [ "$ro" = true ]; then mount -o remount,bind,ro "$dst"; fi
}
EOS
		cat
	}
	# Environment: values and the downward API fields a kubelet fills in.
	printf 'env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root HOSTNAME=%q\n' "$name"
	printf '  KUBERNETES_SERVICE_HOST=%q KUBERNETES_SERVICE_PORT=%q KUBERNETES_SERVICE_PORT_HTTPS=%q\n' \
		"$CP_GUEST_APISERVER_IP" "$CP_GUEST_APISERVER_PORT" "$CP_GUEST_APISERVER_PORT"
	jq -r --arg node "$name" --arg ns "$CP_NAMESPACE" '
	  .spec.template.spec.containers[0].env // [] | .[]
	  | if .value != null then "\(.name)=\(.value)"
	    elif .valueFrom.fieldRef.fieldPath == "spec.nodeName" then "\(.name)=\($node)"
	    elif .valueFrom.fieldRef.fieldPath == "metadata.namespace" then "\(.name)=\($ns)"
	    elif .valueFrom.fieldRef.fieldPath == "metadata.name" then "\(.name)=toa-node-agent-\($node)"
	    elif .valueFrom.fieldRef.fieldPath == "status.hostIP" then "\(.name)=10.0.2.15"
	    else error("env \(.name): unsupported source \(.valueFrom | tojson)") end' <<<"$ds" |
		while IFS= read -r kv; do printf '  %q\n' "$kv"; done
	echo ')'
	printf 'args=('
	jq -r '.spec.template.spec.containers[0].args // [] | .[]' <<<"$ds" | while IFS= read -r a; do printf ' %q' "$a"; done
	echo ')'
	jq -e '.spec.template.spec.containers[0].command == null' >/dev/null <<<"$ds" ||
		toa_die "the DaemonSet sets a container command; the harness runs the image entrypoint only"
	cat <<'EOS'
if [ -s /run/toa/agent.pid ] && kill -0 "$(cat /run/toa/agent.pid)" 2>/dev/null; then
	echo "the agent already runs"; exit 1
fi
echo "--- agent start $(date -u +%T) ${args[*]}" >>/run/toa/agent.log
printf '%s\n' "${args[@]}" >/run/toa/agent.args
setsid env -i "${env[@]}" /usr/local/bin/toa-node-agent "${args[@]}" >>/run/toa/agent.log 2>&1 </dev/null &
echo $! >/run/toa/agent.pid
echo "agent pid $!"
EOS
}

node_pod_start() {
	local name=$1
	_nodes_pod_script "$name" >"$NODES_DIR/$name/pod.sh"
	node_exec "$name" 60 <"$NODES_DIR/$name/pod.sh"
}

# node_pod_stop NAME: SIGTERM, as the kubelet stops a pod (the agent never unloads on it).
node_pod_stop() {
	node_exec "$1" 60 <<'EOS'
p=$(cat /run/toa/agent.pid 2>/dev/null || true)
[ -n "$p" ] || { echo "no agent pid"; exit 0; }
kill -TERM "$p" 2>/dev/null || true
for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$p" 2>/dev/null; then echo "agent $p ignored SIGTERM for 30 s"; kill -KILL "$p"; exit 1; fi
rm -f /run/toa/agent.pid
EOS
}

# node_prewarm NAME: one cold build of the module in this guest, with the standalone agent and
# the cache directory of the DaemonSet's args, then the module is removed again. Saved on the
# host (keyed by kernel and module sources) so that a later run skips the build. Callers run
# it for one node at a time: two compilers under TCG on two cores starve the control plane.
node_prewarm() {
	local name=$1 kver cachedir tgz out t0=$SECONDS
	kver=$(node_kver "$name")
	tgz=$(_nodes_modcache_file "$kver")
	cachedir=$(cp_kubectl -n "$CP_NAMESPACE" get daemonset toa-node-agent -o json |
		jq -r '.spec.template.spec.containers[0].args[] | select(startswith("--cache-dir=")) | sub("^--cache-dir="; "")')
	[ -n "$cachedir" ] || toa_die "the DaemonSet's agent args name no --cache-dir"
	local present
	present=$(node_exec "$name" 120 <<<"if ls $cachedir/modules/*/ 2>/dev/null | grep -q .; then echo yes; else echo no; fi") ||
		toa_die "$name: the command channel failed"
	if [ "$present" = yes ]; then
		_nodes_log "$name: module cache present ($tgz)"
		echo 0 >"$NODES_DIR/$name/build.seconds"
		return 0
	fi
	_nodes_log "$name: cold module build for $kver (standalone agent; minutes under TCG)"
	out=$(node_exec "$name" "$NODES_BUILD_TIMEOUT" <<EOS
set -euo pipefail
mkdir -p /run/toa-prewarm
printf 'desiredState: Loaded\n' >/run/toa-prewarm/desired.yaml
toa-node-agent --desired /run/toa-prewarm/desired.yaml --status-file /run/toa-prewarm/status.json \
	--module-src /usr/share/toa-node-agent/kmod --cache-dir $cachedir --metrics-addr 127.0.0.1:9199 \
	--poll-interval 1 --build-timeout $NODES_BUILD_TIMEOUT >/run/toa-prewarm/agent.log 2>&1 </dev/null &
pid=\$!
for _ in \$(seq 1 $((NODES_BUILD_TIMEOUT * 2))); do
	p=\$(jq -r '.phase // empty' /run/toa-prewarm/status.json 2>/dev/null || true)
	[ "\$p" = Loaded ] && break
	[ "\$p" = Failed ] && { jq -c . /run/toa-prewarm/status.json; tail -n 30 /run/toa-prewarm/agent.log; kill \$pid; exit 1; }
	sleep 0.5
done
kill -TERM \$pid; wait \$pid || true
[ "\$p" = Loaded ] || { echo "no Loaded after $NODES_BUILD_TIMEOUT s"; tail -n 30 /run/toa-prewarm/agent.log; exit 1; }
jq -r '"source=" + (.module.source // "")' /run/toa-prewarm/status.json
rmmod toa
: >/run/make-calls
EOS
	) || toa_die "prewarm build on $name failed: $out"
	echo "$((SECONDS - t0))" >"$NODES_DIR/$name/build.seconds"
	_nodes_log "$name: built and cached in $((SECONDS - t0))s ($out)"
	# Keep it on the host for the next run.
	local b64
	b64=$(node_exec "$name" 120 <<<"tar -C $(dirname "$cachedir") -czf - $(basename "$cachedir") | base64 -w0") ||
		toa_die "could not read the module cache out of $name"
	if [ "$(dirname "$cachedir")" = /var/lib/toa-operator ]; then
		base64 -d <<<"$b64" >"$tgz.tmp" && tar -tzf "$tgz.tmp" >/dev/null && mv "$tgz.tmp" "$tgz"
	fi
}

# node_kill NAME: the guest is gone at once (power cut); its Node object stays.
node_kill() {
	local pid
	pid=$(cat "$NODES_DIR/$1/qemu.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -f "$NODES_DIR/$1/qemu.pid"
}

nodes_stop_all() {
	local f
	[ -n "${NODES_DIR:-}" ] && [ -d "$NODES_DIR" ] || return 0
	for f in "$NODES_DIR"/*/qemu.pid; do
		[ -e "$f" ] || continue
		node_kill "$(basename "$(dirname "$f")")"
	done
}

# shellcheck source=prometheus.sh
. "$NODES_LIB_DIR/prometheus.sh"
# The guest scenarios (nodes_checks, the hook tests/cluster/run.sh calls).
# shellcheck source=../scenarios-nodes.sh
. "$NODES_LIB_DIR/../scenarios-nodes.sh"
