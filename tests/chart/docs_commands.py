#!/usr/bin/env python3
"""Every command and snippet in the user documentation, run or checked (issue 12, item 9).

Extracts the fenced code blocks of README.md, docs/*.md, charts/toa-operator/README.md and the
chart's rendered NOTES.txt, and for each one does what can be done on this machine, offline:

  sh blocks     every command parsed (bash -n, then shlex); per program:
                  kubectl   subcommand and every flag checked against `kubectl <cmd> --help` and
                            `kubectl options`; `create namespace` run with --dry-run=client;
                            files given with -f must exist. Needs a cluster to run.
                  helm      install: run with --dry-run=client; upgrade/template: rendered with
                            `helm template` and the same flags; show crds: run; uninstall: flags
                            checked. install/upgrade/uninstall need a cluster to run for real.
                  tcpdump   run on a crafted capture of TOA SYNs (kinds 200, 253, 254) instead of
                            `-i any`, pipes included; a tcpdump piped into another program must
                            use -l (line-buffered)
                  scripts   the file exists (bash tests/..., images/build.sh with known flags)
                  node      commands for a shell on a node (lsmod, dmesg, /proc, apt-get...):
                            syntax only; the VM suites run their equivalents
  c blocks      compiled with gcc -Wall -Wextra -Werror (fragments wrapped in a main)
  rust blocks   compiled in a fresh `cargo new --edition 2024` crate with -D warnings
  text blocks   lines that look like tcpdump output must be what tcpdump prints for the same
                packet (the crafted capture)
  yaml blocks   ToaPolicies are validated by check.sh's `crs` check; values files rendered

  docs_commands.py run ROOT WORKDIR NOTES     prints PASS/FAIL lines and a closing count line
  docs_commands.py list ROOT NOTES            JSON lines of the commands that need a cluster or a
                                              node
  docs_commands.py plan ROOT NOTES            the same commands in the order a user runs them, with
                                              placeholders filled and what to skip and why: the
                                              cluster suite's `docs` group runs it
                                              (tests/cluster/lib/docs.sh)
"""
import json
import os
import re
import shlex
import socket
import struct
import subprocess
import sys

FAILED = 0
COUNTS = {"run": 0, "checked": 0, "cluster": 0, "node": 0}
CLUSTER = []


def ok(name):
    print(f"PASS {name}")


def bad(name, why):
    global FAILED
    FAILED += 1
    print(f"FAIL {name}: {why}")


# --- extraction ----------------------------------------------------------------------------------


def blocks(path, text=None):
    """(lang, first line number, lines) of every fenced block, indentation removed."""
    if text is None:
        with open(path) as f:
            text = f.read()
    out, cur = [], None
    for no, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^(\s*)```(\w*)\s*$", line)
        if m and cur is None:
            cur = (m.group(2) or "text", no + 1, len(m.group(1)), [])
        elif m and cur is not None:
            out.append((cur[0], cur[1], cur[3]))
            cur = None
        elif cur is not None:
            cur[3].append(line[cur[2]:] if line.startswith(" " * cur[2]) else line.lstrip())
    return out


def notes_blocks(text):
    """NOTES.txt has no fences: its indented command lines (5 spaces) are the commands."""
    lines, start, out = text.splitlines(), None, []
    cur = []
    for no, line in enumerate(lines, 1):
        if line.startswith("     ") and line.strip():
            if not cur:
                start = no
            cur.append(line[5:])
        elif cur and (line.strip() or True):
            out.append(("sh", start, cur))
            cur = []
    if cur:
        out.append(("sh", start, cur))
    return out


def commands(lines):
    """Shell commands of a block: continuation lines joined, heredoc bodies attached, comments
    and blank lines dropped. Yields (offset, command, heredoc body or None)."""
    i = 0
    while i < len(lines):
        line, start = lines[i], i
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        body = None
        m = re.search(r"<<-?'?(\w+)'?", line)
        if m:
            end, body_lines = m.group(1), []
            while i < len(lines) and lines[i].strip() != end:
                body_lines.append(lines[i])
                i += 1
            i += 1
            body = "\n".join(body_lines) + "\n"
            line = line[:m.start()]
        if line.strip() and not line.strip().startswith("#"):
            yield start, line, body


def split_pipeline(cmd):
    """The segments of a pipeline (|, &&, ;), quotes respected, comments removed."""
    lex = shlex.shlex(cmd, posix=True, punctuation_chars="|&;")
    lex.whitespace_split = True
    lex.commenters = "#"
    segs, cur = [], []
    for tok in lex:
        if tok in ("|", "||", "&&", ";", "&"):
            segs.append((cur, tok))
            cur = []
        else:
            cur.append(tok)
    segs.append((cur, None))
    return [(s, op) for s, op in segs if s]


# --- kubectl ---------------------------------------------------------------------------------------

_HELP = {}


def help_flags(argv):
    key = tuple(argv)
    if key not in _HELP:
        out = subprocess.run(argv + ["--help"], capture_output=True, text=True).stdout
        flags = set(re.findall(r"(?:^|\s|,)(--[a-z0-9][-a-z0-9]*)", out))
        flags |= set(re.findall(r"(?:^|\s)(-[a-zA-Z])[,=\s]", out))
        subs = set()
        in_cmds = False
        for line in out.splitlines():
            if re.match(r"^[A-Z][A-Za-z ]*Commands.*:$", line) or line.startswith("Available Commands"):
                in_cmds = True
                continue
            if in_cmds and re.match(r"^  [a-z]", line):
                subs.add(line.split()[0])
            elif in_cmds and line.strip() and not line.startswith(" "):
                in_cmds = False
        _HELP[key] = (flags, subs)
    return _HELP[key]


def kubectl_global_flags():
    out = subprocess.run(["kubectl", "options"], capture_output=True, text=True).stdout
    return set(re.findall(r"(--[a-z0-9][-a-z0-9]*)", out)) | set(re.findall(r"\s(-[a-zA-Z]),", out))


GLOBAL_WITH_VALUE = {"-n", "--namespace", "--context", "--kubeconfig", "-s", "--server", "--cluster", "--user"}


def check_flags(tool, argv, allowed, name):
    unknown = []
    for tok in argv:
        if tok == "--":
            break
        if tok.startswith("--"):
            if tok.split("=", 1)[0] not in allowed:
                unknown.append(tok.split("=", 1)[0])
        elif re.match(r"^-[a-zA-Z]+$", tok):
            for ch in tok[1:]:
                if f"-{ch}" not in allowed:
                    unknown.append(f"-{ch}")
    return unknown


def kubectl(argv, where, body, root, workdir):
    glob = kubectl_global_flags()
    i, sub = 1, []
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in GLOBAL_WITH_VALUE else 1
    flags, subs = help_flags(["kubectl"])
    if i >= len(argv) or argv[i] not in subs:
        bad(f"{where}: kubectl command", f"{argv[i] if i < len(argv) else '(none)'} is not a kubectl command")
        return
    sub = [argv[i]]
    flags, subs = help_flags(["kubectl", argv[i]])
    if i + 1 < len(argv) and argv[i + 1] in subs:
        sub.append(argv[i + 1])
        flags, _ = help_flags(["kubectl"] + sub)
    unknown = check_flags("kubectl", argv[1:], flags | glob, where)
    files = [argv[k + 1] for k, t in enumerate(argv[:-1]) if t in ("-f", "--filename")]
    missing = [f for f in files if f != "-" and not os.path.exists(os.path.join(root, f))
               and not f.endswith("ingress-nodes.yaml")]
    name = f"{where}: kubectl {' '.join(sub)} (flags checked against kubectl {' '.join(sub)} --help)"
    if unknown or missing:
        bad(name, f"unknown flags {unknown}" + (f", missing files {missing}" if missing else ""))
        return
    if sub == ["create", "namespace"]:
        r = subprocess.run(argv + ["--dry-run=client", "-o", "yaml"], capture_output=True, text=True)
        if r.returncode == 0:
            ok(f"{where}: {' '.join(argv)} --dry-run=client")
            COUNTS["run"] += 1
        else:
            bad(f"{where}: {' '.join(argv)} --dry-run=client", r.stderr.strip())
        return
    ok(name)
    COUNTS["checked"] += 1
    COUNTS["cluster"] += 1
    CLUSTER.append({"where": where, "command": shlex.join(argv), "stdin": body, "needs": "cluster"})


# --- helm ------------------------------------------------------------------------------------------


def helm(argv, where, body, root, workdir):
    sub = argv[1] if len(argv) > 1 else ""
    chart_dir = os.path.join(root, "charts/toa-operator")
    # CHART: the chart reference the user installed (NOTES.txt cannot know it).
    fixed = [chart_dir if a == "CHART" else a.replace("charts/toa-operator", chart_dir) for a in argv]
    if sub == "install" and any(re.search(r"(monitor|prometheusRule)\.enabled=true", a) for a in argv):
        # Monitoring objects need the prometheus-operator CRDs in the cluster: helm template
        # with that API declared stands in for such a cluster.
        r = subprocess.run(["helm", "template"] + fixed[2:] + ["--api-versions", "monitoring.coreos.com/v1"],
                           capture_output=True, text=True, cwd=root)
        check_run(f"{where}: {shlex.join(argv)} (rendered as on a cluster with monitoring.coreos.com/v1)", r)
        COUNTS["cluster"] += 1
        CLUSTER.append({"where": where, "command": shlex.join(argv), "stdin": body, "needs": "cluster"})
    elif sub == "install":
        r = subprocess.run(fixed + ["--dry-run=client"], capture_output=True, text=True, cwd=root)
        name = f"{where}: {shlex.join(argv)} --dry-run=client"
        check_run(name, r)
        COUNTS["cluster"] += 1
        CLUSTER.append({"where": where, "command": shlex.join(argv), "stdin": body, "needs": "cluster"})
    elif sub in ("upgrade", "template"):
        flags, _ = help_flags(["helm", sub])
        glob = help_flags(["helm"])[0]
        unknown = check_flags("helm", argv[2:], flags | glob, where)
        if unknown:
            bad(f"{where}: helm {sub} flags", f"unknown {unknown}")
            return
        # helm template takes the same chart and values flags; release-only ones are dropped.
        keep = ["helm", "template"]
        for a in fixed[2:]:
            if a in ("--reuse-values", "--reset-then-reuse-values", "--install", "--atomic", "--wait"):
                continue
            keep.append(a)
        r = subprocess.run(keep, capture_output=True, text=True, cwd=root)
        check_run(f"{where}: {shlex.join(argv)} (rendered with helm template)", r)
        if sub == "upgrade":
            COUNTS["cluster"] += 1
            CLUSTER.append({"where": where, "command": shlex.join(argv), "stdin": body, "needs": "cluster"})
    elif sub == "show":
        r = subprocess.run(fixed, capture_output=True, text=True, cwd=root)
        check_run(f"{where}: {shlex.join(argv)}", r)
    elif sub in ("uninstall", "list", "status", "history", "rollback"):
        flags, _ = help_flags(["helm", sub])
        unknown = check_flags("helm", argv[2:], flags | help_flags(["helm"])[0], where)
        name = f"{where}: helm {sub} (flags checked)"
        if unknown:
            bad(name, f"unknown {unknown}")
        else:
            ok(name)
            COUNTS["checked"] += 1
            COUNTS["cluster"] += 1
            CLUSTER.append({"where": where, "command": shlex.join(argv), "stdin": body, "needs": "cluster"})
    else:
        bad(f"{where}: helm {sub}", "no check for this helm command: add one to docs_commands.py")


def check_run(name, r):
    if r.returncode == 0:
        ok(name)
        COUNTS["run"] += 1
    else:
        bad(name, (r.stderr or r.stdout).strip()[-400:])


# --- tcpdump on a crafted capture -----------------------------------------------------------------


def _csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _syn(option, first=False, src="10.0.0.5", dst="10.0.1.7", sport=41234, dport=8080):
    usual = bytes([2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7])
    opts = option + usual if first else usual + option
    while len(opts) % 4:
        opts += b"\x01"
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, ((20 + len(opts)) // 4) << 4, 0x02, 64240, 0, 0) + opts
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    return ip + tcp


def toa_capture(path):
    """SYNs from balancer 10.0.0.5 for client 203.0.113.7:8080 / [2001:db8::7]:8080 with TOA
    kinds 200 (len 8), 253 (len 20), 254 (len 8) and 254 (len 20) after the usual options, and
    the same four again as the first option; raw-IP pcap."""
    v4 = struct.pack("!H", 8080) + socket.inet_aton("203.0.113.7")
    v6 = struct.pack("!H", 8080) + socket.inet_pton(socket.AF_INET6, "2001:db8::7")
    pkts = [_syn(bytes([200, 8]) + v4), _syn(bytes([253, 20]) + v6),
            _syn(bytes([254, 8]) + v4), _syn(bytes([254, 20]) + v6)]
    pkts += [_syn(bytes([200, 8]) + v4, True), _syn(bytes([253, 20]) + v6, True),
             _syn(bytes([254, 8]) + v4, True), _syn(bytes([254, 20]) + v6, True)]
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        for p in pkts:
            f.write(struct.pack("<IIII", 0, 0, len(p), len(p)) + p)


def tcpdump(cmd, segs, where, workdir):
    pcap = os.path.join(workdir, "toa.pcap")
    if not os.path.exists(pcap):
        toa_capture(pcap)
    piped = segs[0][1] == "|"
    argv = segs[0][0]
    name = f"{where}: {cmd.strip()}"
    if piped and "-l" not in argv:
        bad(name, "tcpdump piped into another program needs -l (line-buffered), or the reader waits for 4 KiB")
        return
    if "-i" not in argv:
        bad(name, "expected a capture interface (-i) to replace with the test capture")
        return
    k = argv.index("-i")
    offline = argv[:k] + ["-r", pcap] + argv[k + 2:]
    line = shlex.join(offline)
    for seg, _ in segs[1:]:
        line += " | " + shlex.join(seg)
    r = subprocess.run(["bash", "-o", "pipefail", "-c", line], capture_output=True, text=True)
    expect_output = "dst port 8080" in cmd and "tcp-syn != 0" in cmd or "tcp[20]" in cmd
    if r.returncode != 0:
        bad(name, f"exit {r.returncode}: {r.stderr.strip()[-300:]}")
    elif expect_output and not r.stdout.strip():
        bad(name, "printed nothing for the capture's TOA SYNs")
    else:
        ok(name + " (on a capture of TOA SYNs)")
        COUNTS["run"] += 1


def tcpdump_output_lines(workdir):
    pcap = os.path.join(workdir, "toa.pcap")
    if not os.path.exists(pcap):
        toa_capture(pcap)
    r = subprocess.run(["tcpdump", "-r", pcap, "-nn", "-t"], capture_output=True, text=True)
    return set(r.stdout.splitlines())


# --- programs --------------------------------------------------------------------------------------

NODE_PROGRAMS = {"lsmod", "cat", "grep", "dmesg", "modinfo", "rmmod", "modprobe", "insmod", "uname", "apt-get",
                 "dnf", "zypper", "chroot", "sysctl", "ls", "rm"}
CLUSTER_TOOLS = {"kind", "k3d", "skopeo", "ctr", "docker", "podman", "oc", "crictl"}


def shell_block(lines, where, root, workdir):
    text = "\n".join(lines) + "\n"
    r = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    if r.returncode != 0:
        bad(f"{where}: bash -n", r.stderr.strip())
        return
    for off, cmd, body in commands(lines):
        w = f"{where}+{off}"
        try:
            segs = split_pipeline(cmd)
        except ValueError as e:
            bad(f"{w}: parse {cmd!r}", str(e))
            continue
        if not segs:
            continue
        argv = segs[0][0]
        prog = argv[0]
        if prog == "sudo":
            argv = argv[1:]
            prog = argv[0]
        if prog == "kubectl":
            kubectl(argv, w, body, root, workdir)
        elif prog == "helm":
            helm(argv, w, body, root, workdir)
        elif prog == "tcpdump":
            tcpdump(cmd, segs, w, workdir)
        elif prog in ("bash", "sh") and len(argv) > 1 or prog.startswith(("tests/", "images/", "./")):
            script = argv[1] if prog in ("bash", "sh") else prog
            path = os.path.join(root, script)
            unknown = []
            if script == "images/build.sh":
                known = {"--out", "--version", "--skip-cargo", "--only"}
                unknown = [a for a in argv[1:] if a.startswith("--") and a not in known]
            if os.path.isfile(path) and not unknown:
                ok(f"{w}: {cmd.strip()} (script exists, flags known; its suite runs it)")
                COUNTS["checked"] += 1
            else:
                bad(f"{w}: {cmd.strip()}", f"no script {script}" if not os.path.isfile(path) else f"unknown flags {unknown}")
        elif prog in NODE_PROGRAMS:
            ok(f"{w}: {cmd.strip()} (node command: syntax checked)")
            COUNTS["checked"] += 1
            COUNTS["node"] += 1
            CLUSTER.append({"where": w, "command": cmd.strip(), "stdin": body, "needs": "node"})
        elif prog in CLUSTER_TOOLS:
            ok(f"{w}: {cmd.strip()} (needs {prog} and a cluster: syntax checked)")
            COUNTS["checked"] += 1
            COUNTS["cluster"] += 1
            CLUSTER.append({"where": w, "command": cmd.strip(), "stdin": body, "needs": "cluster"})
        else:
            bad(f"{w}: {cmd.strip()}", f"no check for program {prog}: add one to docs_commands.py")
        # Later stages of a pipeline: a kubectl there gets its flags checked too.
        for seg, _ in segs[1:]:
            if seg and seg[0] == "kubectl":
                kubectl(seg, w + " (after |)", body, root, workdir)


def c_block(lines, where, workdir):
    src = "\n".join(lines)
    if "main(" not in src:
        decl = "" if re.search(r"\bint fd\b", src) else "\tint fd = -1;\n"
        src = ("#include <arpa/inet.h>\n#include <netinet/in.h>\n#include <stdint.h>\n#include <stdio.h>\n"
               "#include <sys/socket.h>\n\nint main(void)\n{\n\tint listen_fd = -1;\n" + decl + src + "\n\treturn 0;\n}\n")
    path = os.path.join(workdir, "snippet.c")
    with open(path, "w") as f:
        f.write(src)
    r = subprocess.run(["gcc", "-std=c11", "-D_DEFAULT_SOURCE", "-Wall", "-Wextra", "-Werror", "-Wno-unused-variable",
                        "-Wno-unused-but-set-variable", "-c", "-o", path + ".o", path], capture_output=True, text=True)
    check_run(f"{where}: C snippet compiles (gcc -Wall -Wextra -Werror)", r)


def rust_block(lines, where, workdir):
    src = "\n".join(lines) + "\n"
    crate = os.path.join(workdir, "rust-snippet")
    if not os.path.isdir(crate):
        r = subprocess.run(["cargo", "new", "--quiet", "--edition", "2024", "--bin", crate], capture_output=True, text=True)
        if r.returncode != 0:
            bad(f"{where}: cargo new", r.stderr.strip())
            return
    if "fn main(" not in src:
        fns = re.findall(r"^fn (\w+)", src, re.M)
        src += "\nfn main() {\n" + "".join(f"    let _ = {f};\n" for f in fns) + "}\n"
    with open(os.path.join(crate, "src/main.rs"), "w") as f:
        f.write(src)
    env = dict(os.environ, RUSTFLAGS="-D warnings", CARGO_TARGET_DIR=os.path.join(workdir, "rust-target"))
    r = subprocess.run(["cargo", "build", "--quiet", "--offline"], cwd=crate, capture_output=True, text=True, env=env)
    check_run(f"{where}: Rust snippet compiles in a `cargo new --edition 2024` crate (-D warnings)", r)


def text_block(lines, where, workdir, seen):
    ip_lines = [l.strip() for l in lines if re.match(r"^\s*IP \S+ > \S+: Flags", l)]
    if not ip_lines:
        return
    for l in ip_lines:
        name = f"{where}: tcpdump output sample {l[:60]}..."
        if l in seen:
            ok(name + " is what tcpdump prints")
            COUNTS["run"] += 1
        else:
            bad(name, "tcpdump prints the same packet differently: " + " | ".join(sorted(seen)))


def doc_files(root):
    files = [os.path.join(root, "README.md"), os.path.join(root, "charts/toa-operator/README.md")]
    files += sorted(os.path.join(root, "docs", f) for f in os.listdir(os.path.join(root, "docs")) if f.endswith(".md"))
    return files


def all_blocks(root, notes_path):
    for path in doc_files(root):
        rel = os.path.relpath(path, root)
        for lang, line, lines in blocks(path):
            yield f"{rel}:{line}", lang, lines
    with open(notes_path) as f:
        text = f.read()
    # `helm install --dry-run` prints the manifests, then NOTES:
    text = text.split("\nNOTES:\n", 1)[-1]
    for lang, line, lines in notes_blocks(text):
        if True:
            yield f"NOTES.txt:{line}", lang, lines


def cmd_run(args):
    root, workdir, notes = args
    seen = None
    for where, lang, lines in all_blocks(root, notes):
        if lang in ("sh", "bash", "shell", "console"):
            shell_block(lines, where, root, workdir)
        elif lang == "c":
            c_block(lines, where, workdir)
        elif lang == "rust":
            rust_block(lines, where, workdir)
        elif lang == "text":
            seen = seen or tcpdump_output_lines(workdir)
            text_block(lines, where, workdir, seen)
        elif lang == "yaml":
            pass  # ToaPolicies: check.sh's crs check validates them against the CRD
        else:
            bad(f"{where}: {lang} block", "no check for this language: add one to docs_commands.py")
    with open(os.path.join(workdir, "docs-cluster-commands.jsonl"), "w") as f:
        for c in CLUSTER:
            f.write(json.dumps(c) + "\n")
    total = COUNTS["run"] + COUNTS["checked"]
    print(f"docs: {total} commands and snippets: {COUNTS['run']} run offline (renders, dry-runs, compiles, "
          f"tcpdump on a capture), {COUNTS['checked']} checked without running (flags, syntax, files); "
          f"{COUNTS['cluster']} of them need a cluster and {COUNTS['node']} a node to run for real "
          f"(the cluster suite's group `docs` runs them against a real control plane: "
          f"CLUSTER_CHECKS=docs tests/cluster/run.sh)")


def cmd_list(args):
    root, notes = args
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        devnull = open(os.devnull, "w")
        stdout, sys.stdout = sys.stdout, devnull
        try:
            cmd_run([root, tmp, notes])
        finally:
            sys.stdout = stdout
        with open(os.path.join(tmp, "docs-cluster-commands.jsonl")) as f:
            sys.stdout.write(f.read())


# --- the plan for the real control plane (tests/cluster/lib/docs.sh) -------------------------------

# The order a user follows: install (quick start), the other install paths, the NOTES, day-two
# docs, then upgrading.md (upgrade, then removal) last. Files not named here come before it.
FLOW = ["docs/README.md", "README.md", "charts/toa-operator/README.md", "docs/images.md", "NOTES.txt",
        "docs/configuration.md", "docs/faq.md", "docs/migration.md", "docs/troubleshooting.md"]
FLOW_LAST = ["docs/upgrading.md"]
# Placeholders the docs use, and what they stand for in the suite's cluster.
PLACEHOLDERS = {"NODE": "worker-1", "NAME": "ingress-nodes", "CHART": "charts/toa-operator"}
# Verbs that change the cluster: the same command run again is reported as covered, not rerun.
CHANGES = {("kubectl", "create"), ("kubectl", "label"), ("kubectl", "apply"), ("kubectl", "patch"),
           ("kubectl", "delete"), ("helm", "install"), ("helm", "upgrade"), ("helm", "uninstall")}
NO_KUBELET = "the pod it needs would run on a kubelet, and the suite's control plane has none (no container runtime)"
SKIP_TOOLS = {
    "kind": "needs a kind cluster (docker + kind): not available on this machine",
    "k3d": "needs a k3d cluster (docker + k3d): not available on this machine",
    "skopeo": "pushes to a registry: no registry is reachable from this machine",
    "ctr": "runs on a node's containerd: the suite's nodes have no container runtime",
    "crictl": "runs on a node's container runtime: the suite's nodes have none",
    "docker": "needs a docker daemon: not available on this machine",
    "podman": "needs a container runtime: not available here",
    "oc": "OpenShift's oc and its SecurityContextConstraints API: the suite runs upstream Kubernetes",
}


def _subst(cmd):
    return re.sub(r"\b(" + "|".join(PLACEHOLDERS) + r")\b", lambda m: PLACEHOLDERS[m.group(1)], cmd)


def _verb(argv):
    """(program, verb) of a kubectl/helm command line (global flags skipped)."""
    if not argv or argv[0] not in ("kubectl", "helm"):
        return (argv[0] if argv else "", "")
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in GLOBAL_WITH_VALUE else 1
    return (argv[0], argv[i] if i < len(argv) else "")


def _flow_key(where):
    f = where.split(":", 1)[0]
    if f in FLOW:
        return (0, FLOW.index(f))
    if f in FLOW_LAST:
        return (2, FLOW_LAST.index(f))
    return (1, f)


def plan(root, notes_path):
    """Every block that talks to a cluster, in the order a user runs them: JSON objects with
    where (file:line+offset), command (placeholders substituted), stdin, action (run, covered,
    skip, policy) and reason/of/name."""
    items = []
    for where, lang, lines in all_blocks(root, notes_path):
        items.append((_flow_key(where), len(items), where, lang, lines))
    items.sort(key=lambda t: (t[0], t[1]))
    out, done, installs, policies = [], {}, {}, {}
    for _, _, where, lang, lines in items:
        f = where.split(":", 1)[0]
        if lang == "yaml":
            import yaml

            doc = yaml.safe_load("\n".join(lines))
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("toa.dev/"):
                name = doc["metadata"]["name"]
                policies[(f, name)] = "\n".join(lines) + "\n"
                out.append({"where": where, "action": "policy", "name": name, "stdin": policies[(f, name)],
                            "command": "kubectl apply --dry-run=server -f -"})
            else:
                out.append({"where": where, "action": "skip", "command": "(yaml block)",
                            "reason": "not a toa.dev object: no cluster check for it"})
            continue
        if lang not in ("sh", "bash", "shell", "console"):
            continue
        for off, cmd, body in commands(lines):
            w = f"{where}+{off}"
            segs = split_pipeline(cmd)
            if not segs:
                continue
            argv = segs[0][0]
            if argv[0] == "sudo":
                argv = argv[1:]
            prog = argv[0]
            text = _subst(cmd.split(" #", 1)[0].strip() if re.search(r"\s#\s", cmd) else cmd.strip())
            item = {"where": w, "command": text, "stdin": body}
            # "# Policy / Phase / Reason": the columns the doc says the output has, in order.
            m = re.search(r"\s#\s+(.*)$", cmd)
            for part in (m.group(1).split(":") if m and text.startswith("kubectl get ") else []):
                if " / " in part:
                    item["columns"] = [c.strip().upper() for c in part.split(" / ")]
            if prog in SKIP_TOOLS:
                item.update(action="skip", reason=SKIP_TOOLS[prog])
                m = re.search(r"-z (\S+) -n (\S+)", text)
                if prog == "oc" and m:
                    item["check"] = f"kubectl -n {m.group(2)} get serviceaccount {m.group(1)}"
                out.append(item)
                continue
            if prog in NODE_PROGRAMS:
                item.update(action="skip", reason="a shell command on a node: the suite's nodes are API objects "
                            "without a kernel (tests/vm/agent.sh reads /sys/module/toa, the kernel log and "
                            "/proc/net/toa_stats in QEMU guests)")
                out.append(item)
                continue
            if prog not in ("kubectl", "helm"):
                continue  # offline: tcpdump on a capture, scripts (check.sh runs or checks them)
            verb = _verb(argv)
            if verb == ("kubectl", "debug"):
                item.update(action="skip", reason="kubectl debug node/... starts a pod: " + NO_KUBELET)
            elif verb in (("kubectl", "logs"), ("kubectl", "exec"), ("kubectl", "port-forward"), ("kubectl", "attach")):
                item.update(action="skip", reason=f"kubectl {verb[1]} reads from a running container: " + NO_KUBELET)
            elif "kube-node-lease" in argv and verb == ("kubectl", "get"):
                item.update(action="skip", reason="a node Lease in kube-node-lease is written by the node's kubelet, "
                            "and the suite's control plane has none (the nodes group's guests renew theirs)")
            elif verb in CHANGES and text in done:
                item.update(action="covered", of=done[text])
            elif verb == ("helm", "install") and "--dry-run" not in text:
                rel = argv[2] if len(argv) > 2 else ""
                if rel in installs:
                    # The alternatives of one install (registry, monitoring): one release per
                    # cluster, so each is rendered by the cluster (lookups, API checks).
                    item.update(action="run", command=text + " --dry-run=server",
                                note=f"an alternative to {installs[rel]}, run with --dry-run=server")
                else:
                    installs[rel] = w
                    item.update(action="run")
            else:
                item.update(action="run")
            if item["action"] == "run":
                m = re.search(r"\btoapolicy (\S+)", text)
                if m and verb == ("kubectl", "patch") and (f, m.group(1)) in policies:
                    # "Apply the policy" (the doc's snippet) comes first.
                    item["apply_first"] = policies[(f, m.group(1))]
                m = re.search(r"-f (\S+\.yaml)\b", text)
                if m and not os.path.exists(os.path.join(root, m.group(1))):
                    stem = os.path.splitext(os.path.basename(m.group(1)))[0]
                    if (f, stem) in policies:
                        item["file"] = {"path": m.group(1), "content": policies[(f, stem)]}
                if verb in CHANGES:
                    done.setdefault(text, w)
            out.append(item)
    return out


def cmd_plan(args):
    root, notes = args
    for item in plan(root, notes):
        print(json.dumps(item))


def main():
    cmds = {"run": cmd_run, "list": cmd_list, "plan": cmd_plan}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        cmds[sys.argv[1]](sys.argv[2:])
    except Exception as e:  # a crash is a failed check, with its cause
        bad(f"docs_commands {sys.argv[1]} ran", f"{type(e).__name__}: {e}")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
