#!/bin/bash
# Command channel of a node guest (see init): reads the whole script the host sent (the host
# half-closes the connection), runs it with bash, then prints `TOA-CTL-RC <status>`.
exec 2>&1
f=$(mktemp /run/ctl.XXXXXX)
cat >"$f"
bash "$f"
rc=$?
rm -f "$f"
echo "TOA-CTL-RC $rc"
