# shellcheck shell=bash
# The operator as a host process, playing the kubelet's part for the chart's Deployment: the
# container args of the installed Deployment, rewritten only where a host process must differ
# (--agent-config points at the installed ConfigMap's content, $(POD_NAMESPACE) expanded,
# --metrics-addr on 127.0.0.1 with a port per replica), the Deployment's env, uid/gid 65532
# with no capabilities (the pod's securityContext), and a kubeconfig holding a TokenRequest
# token of the chart's operator ServiceAccount: every call goes through the chart's RBAC.
# Each replica has its own token; its JWT id (jti) identifies it in the audit log.

OP_DEPLOYMENT=${OP_DEPLOYMENT:-$CP_RELEASE-operator}
OP_CONFIGMAP=${OP_CONFIGMAP:-$CP_RELEASE-agent-config}
OP_LEASE=${OP_LEASE:-toa-operator-leader}
OP_DAEMONSET=${OP_DAEMONSET:-toa-node-agent}
# No kubelet runs agent pods here: a short start timeout lets the agents checks see a node
# whose agent pod stays Pending reported within seconds (the operator's default is 300 s).
OP_AGENT_START_TIMEOUT=${OP_AGENT_START_TIMEOUT:-20}

# op_prepare BINARY: reads the installed Deployment and ConfigMap (call again after an upgrade).
op_prepare() {
	local bin=$1 dir=$CP_RUN_DIR/operator
	mkdir -p "$dir"
	chmod 755 "$dir"
	install -m 755 "$bin" "$dir/toa-operator"
	cp_kubectl -n "$CP_NAMESPACE" get deployment "$OP_DEPLOYMENT" -o json >"$dir/deployment.json"
	cp_kubectl -n "$CP_NAMESPACE" get configmap "$OP_CONFIGMAP" \
		-o go-template='{{index .data "agent-config.yaml"}}' >"$dir/agent-config.yaml"
	chmod 644 "$dir/agent-config.yaml"
	[ -s "$dir/agent-config.yaml" ] || {
		echo "operator: ConfigMap $OP_CONFIGMAP has no agent-config.yaml" >&2
		return 1
	}
	# Container args and the env values a host process can carry (valueFrom fields are filled
	# by op_start as the downward API would).
	jq -r '.spec.template.spec.containers[] | select(.name=="operator") | .args[]' \
		"$dir/deployment.json" >"$dir/args"
	jq -r '.spec.template.spec.containers[] | select(.name=="operator") | .env[]
		| select(.value != null) | "\(.name)=\(.value)"' "$dir/deployment.json" >"$dir/env"
	# What a pod security context would enforce, read from the rendered pod spec.
	jq -e '.spec.template.spec.securityContext.runAsUser == 65532' "$dir/deployment.json" >/dev/null
}

# _op_args REPLICA PORT: the Deployment's args, rewritten for a host process.
_op_args() {
	local port=$2 a
	while IFS= read -r a; do
		case $a in
		--agent-config=*) echo "--agent-config=$CP_RUN_DIR/operator/agent-config.yaml" ;;
		--metrics-addr=*)
			# OP_BIND_AS_CHART=1 keeps the chart's listen address (only the port differs).
			if [ "${OP_BIND_AS_CHART:-}" = 1 ]; then
				a=${a#--metrics-addr=}
				echo "--metrics-addr=${a%:*}:$port"
			else
				echo "--metrics-addr=127.0.0.1:$port"
			fi
			;;
		*) echo "${a//\$(POD_NAMESPACE)/$CP_NAMESPACE}" ;;
		esac
	done <"$CP_RUN_DIR/operator/args"
}

# _jwt_jti TOKEN: the token's JWT id, which the apiserver logs as credential-id JTI=...
_jwt_jti() {
	python3 -c 'import base64,json,sys
p = sys.argv[1].split(".")[1]
print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["jti"])' "$1"
}

# op_start REPLICA: starts (or restarts) replica REPLICA (0, 1, ...).
op_start() {
	local r=$1 dir=$CP_RUN_DIR/operator token port args=() envs=() line
	token=$(cp_sa_token "$CP_OPERATOR_SA" "$CP_NAMESPACE" 2h)
	_jwt_jti "$token" >"$dir/replica-$r.jti"
	cp_kubeconfig_for_token "$token" "$dir/replica-$r.kubeconfig"
	chown 65532:65532 "$dir/replica-$r.kubeconfig"
	chmod 600 "$dir/replica-$r.kubeconfig"
	if [ -f "$dir/replica-$r.port" ]; then
		port=$(cat "$dir/replica-$r.port")
	else
		port=$(_cp_free_port)
		echo "$port" >"$dir/replica-$r.port"
	fi
	_cp_wait_port_free "$port"
	mapfile -t args < <(_op_args "$r" "$port")
	while IFS= read -r line; do envs+=("$line"); done <"$dir/env"
	echo "$(date -u +%FT%TZ) start replica $r (port $port)" >>"$CP_RUN_DIR/logs/operator-$r.log"
	cp_spawn "operator-$r" "$CP_RUN_DIR/logs/operator-$r.log" \
		setpriv --reuid 65532 --regid 65532 --clear-groups --inh-caps=-all --bounding-set=-all \
		--no-new-privs \
		env -i PATH=/usr/bin:/bin HOME=/nonexistent "${envs[@]}" \
		POD_NAMESPACE="$CP_NAMESPACE" POD_NAME="toa-operator-replica-$r" \
		TOA_AGENT_START_TIMEOUT="$OP_AGENT_START_TIMEOUT" \
		KUBECONFIG="$dir/replica-$r.kubeconfig" \
		"$dir/toa-operator" "${args[@]}"
	wait_until 30 "operator replica $r /healthz" curl -fsS "http://127.0.0.1:$port/healthz"
}

op_port() { cat "$CP_RUN_DIR/operator/replica-$1.port"; }
op_jti() { cat "$CP_RUN_DIR/operator/replica-$1.jti"; }

# op_stop REPLICA [SIGNAL]
op_stop() { cp_kill "operator-$1" "${2:-TERM}"; }

# op_ensure_running REPLICA...: restarts replicas that exited (restartPolicy: Always).
op_ensure_running() {
	local r
	for r in "$@"; do
		if ! cp_alive "operator-$r"; then
			echo "operator replica $r had exited: restarting it as the kubelet would"
			echo "$r" >>"$CP_RUN_DIR/operator/restarts"
			op_start "$r"
		fi
	done
}

op_restart_count() {
	grep -c "^$1\$" "$CP_RUN_DIR/operator/restarts" 2>/dev/null || true
}

# op_holder: the Lease's holder identity (empty when free or absent).
op_holder() {
	cp_kubectl -n "$CP_NAMESPACE" get lease "$OP_LEASE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true
}

# op_leader: the replica number holding the lease, or nothing.
op_leader() {
	local h
	h=$(op_holder)
	case $h in toa-operator-replica-*_*) h=${h#toa-operator-replica-} && echo "${h%%_*}" ;; esac
}
