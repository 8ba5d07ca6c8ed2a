#!/bin/bash
# Command channel of a node guest (see init): reads the whole script the host sent (the host
# half-closes the connection), runs it with bash, then prints `TOA-CTL-RC <status>`.
# busybox nc ignores SIGCHLD (to reap its children) and an ignored signal stays ignored across
# exec; bash cannot undo that (signals ignored on entry stay ignored), so perl resets SIGCHLD
# and SIGPIPE to their defaults before bash runs: the agent waits for its `make` child, which
# fails with ECHILD under an ignored SIGCHLD.
exec 2>&1
f=$(mktemp /run/ctl.XXXXXX)
cat >"$f"
perl -e '$SIG{CHLD} = "DEFAULT"; $SIG{PIPE} = "DEFAULT"; exec @ARGV or die "exec: $!"' bash "$f"
rc=$?
rm -f "$f"
# A newline first: the output need not end with one (node_exec removes it again).
printf '\nTOA-CTL-RC %s\n' "$rc"
