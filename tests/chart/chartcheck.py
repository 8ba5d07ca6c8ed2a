#!/usr/bin/env python3
"""Checks of the rendered toa-operator chart that need more than a shell one-liner.

Every check prints one line per test case, `PASS name` or `FAIL name: why`; check.sh counts
them. Subcommands:

  k8s RENDERED KVER CRD_DIR SCHEMA_DIR   every manifest against Kubernetes KVER (kubernetes-validate
                                         --strict), ours against the CRDs, prometheus-operator's
                                         against SCHEMA_DIR; any unknown kind fails
  crs CRD_DIR [--invalid] FILE...        custom resources against the CRD schema and CEL rules
                                         (--invalid: each document must be rejected)
  rules RENDERED OUT                     writes the PrometheusRule's groups as a Prometheus rule file
  alert-coverage RULES TESTFILE          a firing and a non-firing promtool case for every alert
  dashboard-tests DASHBOARD SPEC OUT      fills SPEC's `panel:` references with the dashboard's
                                         queries, for promtool test rules
  queries RENDERED DASHBOARD FIXTURE OPERATOR_SRC
                                         dashboard and alert PromQL parsed; metric and label names
                                         checked against the agent's exposition and the operator
  vap RENDERED                           the ValidatingAdmissionPolicy's CEL, evaluated on requests
  rbac RENDERED                          least privilege of the ClusterRoles and Roles
  wiring RENDERED                        operator flags, agent config keys, selectors, probes
  values-cases CHART CASES KVER WORKDIR  the shared table of valid/invalid values
                                         (tests/chart/values-cases.yaml) through helm template
  reuse-values CHART KVER WORKDIR        `helm upgrade --reuse-values` from a release that lacks
                                         a value: renders the chart once per value of values.yaml
                                         left out of its defaults (as --reuse-values does)
"""
import copy
import ipaddress
import glob
import json
import os
import re
import subprocess
import sys

import yaml

FAILED = 0


def ok(name):
    print(f"PASS {name}")


def bad(name, why):
    global FAILED
    FAILED += 1
    print(f"FAIL {name}: {why}")


def check(name, cond, why):
    if cond:
        ok(name)
    else:
        bad(name, why)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def docs_of(rendered, kind):
    return [d for d in load_docs(rendered) if d.get("kind") == kind]


# --- CRD openAPIV3Schema -> JSON schema ----------------------------------------------------------


def structural_to_jsonschema(s, root=True):
    """Converts a CRD structural schema to a draft-4 JSON schema with the apiserver's strict
    field validation: unknown fields fail unless x-kubernetes-preserve-unknown-fields."""
    out = {}
    for k in ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
              "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties",
              "maxProperties", "required", "format"):
        if k in s:
            out[k] = s[k]
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if s.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if "items" in s:
        out["items"] = structural_to_jsonschema(s["items"], False)
    if "properties" in s:
        out["properties"] = {k: structural_to_jsonschema(v, False) for k, v in s["properties"].items()}
    if "additionalProperties" in s:
        ap = s["additionalProperties"]
        out["additionalProperties"] = structural_to_jsonschema(ap, False) if isinstance(ap, dict) else ap
    elif s.get("type") == "object" and not s.get("x-kubernetes-preserve-unknown-fields") \
            and not s.get("x-kubernetes-embedded-resource"):
        out["additionalProperties"] = False
    for k in ("allOf", "anyOf", "oneOf"):
        if k in s:
            out[k] = [structural_to_jsonschema(x, False) for x in s[k]]
    if "not" in s:
        out["not"] = structural_to_jsonschema(s["not"], False)
    if root:
        props = out.setdefault("properties", {})
        props["apiVersion"] = {"type": "string"}
        props["kind"] = {"type": "string"}
        props["metadata"] = {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                    "maxLength": 253}},
        }
    return out


def apply_defaults(schema, value):
    """Structural defaulting as the apiserver does it before validation."""
    if isinstance(value, dict) and "properties" in schema:
        for k, sub in schema["properties"].items():
            if k not in value and "default" in sub:
                value[k] = copy.deepcopy(sub["default"])
            if k in value:
                value[k] = apply_defaults(sub, value[k])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(schema["items"], v) for v in value]
    return value


def load_crds(crd_dir):
    crds = {}
    for name in sorted(os.listdir(crd_dir)):
        if not name.endswith((".yaml", ".yml")):
            continue
        for d in load_docs(os.path.join(crd_dir, name)):
            if d.get("kind") != "CustomResourceDefinition":
                continue
            spec = d["spec"]
            for v in spec["versions"]:
                key = (f"{spec['group']}/{v['name']}", spec["names"]["kind"])
                crds[key] = v["schema"]["openAPIV3Schema"]
    return crds


# --- CEL (x-kubernetes-validations) --------------------------------------------------------------


class CelRunner:
    """Evaluates CRD CEL rules with cel-python, plus the Kubernetes CIDR library functions the
    CRDs use (isCIDR, cidr().masked()); an unknown function is reported, never ignored."""

    def __init__(self):
        import celpy
        from celpy import celtypes

        self.celpy = celpy
        self.celtypes = celtypes
        self.env = celpy.Environment()

        def is_cidr(s):
            try:
                ipaddress.ip_network(str(s), strict=False)
                return celtypes.BoolType("/" in str(s))
            except ValueError:
                return celtypes.BoolType(False)

        def masked(c):
            return celtypes.StringType(str(ipaddress.ip_network(str(c), strict=False)))

        def normalise(s):
            net = ipaddress.ip_network(str(s), strict=False)
            host = str(s).split("/")[0]
            return celtypes.StringType(f"{ipaddress.ip_address(host)}/{net.prefixlen}")

        # cidr(c) keeps host bits (address/prefix); masked() clears them, as in Kubernetes.
        self.functions = {"isCIDR": is_cidr, "cidr": normalise, "masked": masked}

    def evaluate(self, rule, self_value, old_self=None):
        ast = self.env.compile(rule)
        prg = self.env.program(ast, functions=self.functions)
        act = {"self": self.celpy.json_to_cel(self_value)}
        if old_self is not None:
            act["oldSelf"] = self.celpy.json_to_cel(old_self)
        res = prg.evaluate(act)
        if isinstance(res, Exception):
            raise res
        return bool(res)


def cel_violations(cel, schema, value, path="", old=None):
    """Returns (violations, skipped) for every x-kubernetes-validations rule reachable in value."""
    errs, skipped = [], []
    for r in schema.get("x-kubernetes-validations", []):
        rule = r["rule"]
        if "oldSelf" in rule and old is None:
            skipped.append(f"{path or '.'}: {rule} (transition rule, create only)")
            continue
        try:
            if not cel.evaluate(rule, value, old):
                errs.append(f"{path or '.'}: {r.get('message', rule)}")
        except Exception as e:  # an evaluation error is a rejection in the apiserver too
            errs.append(f"{path or '.'}: rule {rule!r} failed to evaluate: {e}")
    if isinstance(value, dict) and "properties" in schema:
        for k, sub in schema["properties"].items():
            if k in value:
                o = old.get(k) if isinstance(old, dict) else None
                e, s = cel_violations(cel, sub, value[k], f"{path}.{k}", o)
                errs += e
                skipped += s
    elif isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            e, s = cel_violations(cel, schema["items"], v, f"{path}[{i}]")
            errs += e
            skipped += s
    return errs, skipped


def validate_cr(crds, cel, doc):
    """Returns a list of problems of one custom resource (empty = valid)."""
    import jsonschema

    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in crds:
        return [f"no CRD for {key[0]} {key[1]}"]
    schema = crds[key]
    value = apply_defaults(schema, copy.deepcopy(doc))
    v = jsonschema.Draft4Validator(structural_to_jsonschema(schema))
    errs = [f"{'.'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}"
            for e in sorted(v.iter_errors(value), key=lambda e: list(e.absolute_path))]
    if not errs:
        # CEL runs only on schema-valid objects, as in the apiserver. Root rules may read
        # metadata.name; give them the object.
        e, _ = cel_violations(cel, schema, value)
        errs += e
    return errs


def markdown_docs(path):
    """The toa.dev objects in a Markdown file's ```yaml blocks (what a reader copies)."""
    text = open(path).read()
    out = []
    for block in re.findall(r"```ya?ml\n(.*?)```", text, re.S):
        if "apiVersion: toa.dev/" in block:
            out += [d for d in yaml.safe_load_all(block) if d]
    return out


def cmd_crs(args):
    crd_dir = args[0]
    expect_invalid = "--invalid" in args
    files = [a for a in args[1:] if a != "--invalid"]
    crds = load_crds(crd_dir)
    if not crds:
        bad("crds loaded", f"no CustomResourceDefinition in {crd_dir}")
        return
    cel = CelRunner()
    if not files:
        bad("custom resource files", "no example files given")
    for f in files:
        for i, doc in enumerate(markdown_docs(f) if f.endswith(".md") else load_docs(f)):
            name = f"{os.path.relpath(f)}#{i} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            errs = validate_cr(crds, cel, doc)
            if expect_invalid:
                check(f"rejected: {name}", errs, "the CRD schema and its CEL rules accept it, but it is meant to be invalid")
                if errs:
                    print(f"  (rejected because {errs[0]})")
            else:
                check(f"valid: {name}", not errs, "; ".join(errs))


# --- Kubernetes schemas --------------------------------------------------------------------------

MONITORING = "monitoring.coreos.com/v1"


def cmd_k8s(args):
    import jsonschema

    rendered, kver, crd_dir, schema_dir = args
    docs = load_docs(rendered)
    tag = f"{os.path.basename(rendered)} k8s {kver}"
    out = subprocess.run(["kubernetes-validate", "--strict", "-k", kver, rendered],
                         capture_output=True, text=True)
    passed = set()
    unknown = []
    for line in (out.stdout + out.stderr).splitlines():
        m = re.search(r"passed for resource (\S+)", line)
        if m:
            passed.add(m.group(1))
            continue
        m = re.search(r"Couldn't find schema for kind (\S+) with api version (\S+)", line)
        if m:
            unknown.append((m.group(2), m.group(1)))
            continue
        if line.strip():
            bad(f"{tag}: kubernetes-validate", line.strip())
    if out.returncode != 0:
        bad(f"{tag}: kubernetes-validate exit", f"exit {out.returncode}")
    crds = load_crds(crd_dir) if os.path.isdir(crd_dir) else {}
    cel = None
    mon_schemas = {}
    for k in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        with open(os.path.join(schema_dir, f"{k.lower()}.json")) as f:
            mon_schemas[k] = json.load(f)
    for d in docs:
        kind, api = d.get("kind"), d.get("apiVersion")
        name = f"{tag}: {kind}/{d.get('metadata', {}).get('name')}"
        rid = f"{str(kind).lower()}/{d.get('metadata', {}).get('name')}"
        if api == MONITORING and kind in mon_schemas:
            errs = [f"{'.'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}"
                    for e in jsonschema.Draft7Validator(mon_schemas[kind]).iter_errors(d)]
            check(name + " (prometheus-operator schema)", not errs, "; ".join(errs[:5]))
        elif api and api.startswith("toa.dev/"):
            cel = cel or CelRunner()
            errs = validate_cr(crds, cel, d)
            check(name + " (toa.dev CRD schema)", not errs, "; ".join(errs[:5]))
        elif (api, kind) in unknown:
            bad(name, f"kubernetes-validate has no schema for {api} {kind} in Kubernetes {kver}")
        else:
            check(name, rid in passed, "kubernetes-validate --strict did not pass it")


# --- prometheus rules ----------------------------------------------------------------------------


def cmd_rules(args):
    rendered, out = args
    rules = docs_of(rendered, "PrometheusRule")
    if len(rules) != 1:
        bad("PrometheusRule rendered", f"expected 1, found {len(rules)}")
        return
    with open(out, "w") as f:
        yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, f, sort_keys=False)
    ok("PrometheusRule extracted to a rule file")


def cmd_alert_coverage(args):
    rules_file, test_file = args
    with open(rules_file) as f:
        alerts = [r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r]
    with open(test_file) as f:
        tests = yaml.safe_load(f)["tests"]
    firing, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    for a in alerts:
        check(f"alert {a} has a firing test case", a in firing, "no alert_rule_test with exp_alerts")
        check(f"alert {a} has a non-firing test case", a in quiet, "no alert_rule_test with empty exp_alerts")
    stray = (firing | quiet) - set(alerts)
    check("alert tests name only existing alerts", not stray, f"unknown alerts {sorted(stray)}")


# --- PromQL and metric names ---------------------------------------------------------------------

# The metrics contract (/tmp/toa-contracts.md, "Agent contract"): family -> labels it carries.
AGENT_CONTRACT = {
    "toa_syn_recv_sock_toa_total": set(), "toa_syn_recv_sock_no_toa_total": set(),
    "toa_getname_toa_ok_total": set(), "toa_getname_toa_mismatch_total": set(),
    "toa_getname_toa_empty_total": set(), "toa_ip6_address_alloc_total": set(),
    "toa_ip6_address_free_total": set(), "toa_module_loaded": set(),
    "toa_ip6_addresses_in_use": set(), "toa_agent_phase": {"phase", "reason"},
    "toa_module_builds_total": {"outcome"}, "toa_module_loads_total": {"outcome", "source"},
    "toa_node_info": {"kernel_release", "srcversion", "agent_version"},
}
AGENT_HISTOGRAMS = ["toa_module_build_duration_seconds", "toa_module_load_duration_seconds"]
OPERATOR_CONTRACT = {
    "toa_operator_reconciles_total": {"kind", "result"},
    "toa_operator_reconcile_errors_total": {"kind", "reason"},
    "toa_operator_nodes": {"policy", "phase"},
}
OPERATOR_HISTOGRAMS = ["toa_operator_reconcile_duration_seconds"]
# Values of the labels the alerts and the dashboard filter on (contract: phases, reasons; agent:
# outcomes and sources as its engineer documented them, checked in the fixture too).
LABEL_VALUES = {
    "phase": {"Pending", "Building", "Loading", "Loaded", "Unloading", "Unloaded", "Failed"},
    "reason": {"HeadersMissing", "BuildFailed", "BuildTimeout", "SignatureRequired", "ForeignModule",
               "UnsupportedKernel", "LoadFailed", "UnloadFailed", "ModuleBusy", "ParametersRejected", "ReplacePending"},
    "outcome": {"success", "failure", "timeout"},
    "source": {"Built", "Cache", "Adopted"},
}
# Labels Prometheus adds to every target (the monitors add `node`).
TARGET_LABELS = {"job", "instance", "node", "namespace", "pod", "container", "service", "endpoint"}


def with_histograms(base, hists):
    out = dict(base)
    for h in hists:
        out[h + "_bucket"] = {"le"}
        out[h + "_sum"] = set()
        out[h + "_count"] = set()
    return out


def parse_exposition(path):
    """Sample name -> label names, from a Prometheus text / OpenMetrics exposition."""
    samples = {}
    sample_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+(\s+\S+)?$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')
    for n, line in enumerate(open(path), 1):
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        m = sample_re.match(line)
        if not m:
            raise ValueError(f"{path}:{n}: not a sample line: {line!r}")
        labels = set()
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = label_re.match(rest, pos)
                if not lm:
                    raise ValueError(f"{path}:{n}: bad labels {rest!r}")
                labels.add(lm.group(1))
                pos = lm.end()
        samples.setdefault(m.group(1), set()).update(labels)
    return samples


def label_values(path, metric, label):
    vals = set()
    rx = re.compile(r'^' + re.escape(metric) + r'\{[^}]*\b' + re.escape(label) + r'="([^"]*)"')
    for line in open(path):
        m = rx.match(line)
        if m:
            vals.add(m.group(1))
    return vals


def substitute_grafana(expr):
    """Grafana variables -> values PromQL can parse."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    expr = re.sub(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*(:[a-z]+)?\}?", ".*", expr)
    return expr


def selectors_and_labels(expr_text):
    """(vector selectors as (name, {label: (op, value)}), label names in by/on/ignoring/group_x)."""
    import promql_parser as pp

    ast = pp.parse(expr_text)
    sels, grouping = [], set()

    def visit(node, *_context):
        if isinstance(node, pp.VectorSelector):
            matchers = {}
            for m in node.matchers.matchers:
                matchers[m.name] = (str(m.op), m.value)
            sels.append((node.name, matchers))
        if isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)
        if isinstance(node, pp.BinaryExpr) and node.modifier is not None:
            mod = node.modifier
            if mod.matching is not None:
                grouping.update(mod.matching.labels)
            card = mod.card
            if hasattr(card, "labels") and card.labels:
                grouping.update(card.labels)
        return True

    pp.walk(ast, pre_visit=visit)
    return sels, grouping


def cmd_queries(args):
    rendered, dashboard_path, fixture, operator_src = args
    # Agent metric names: from the agent's real exposition when it is there.
    if os.path.exists(fixture):
        try:
            agent = parse_exposition(fixture)
            ok(f"agent exposition fixture parses ({len(agent)} sample names)")
        except ValueError as e:
            bad("agent exposition fixture parses", str(e))
            agent = with_histograms(AGENT_CONTRACT, AGENT_HISTOGRAMS)
        for fam in sorted(with_histograms(AGENT_CONTRACT, AGENT_HISTOGRAMS)):
            check(f"fixture exposes contract metric {fam}", fam in agent,
                  "the contract names it but the agent does not expose it")
    else:
        bad("agent exposition fixture present",
            f"{fixture} is missing (saved by the node-agent suite from the real agent); checked against the contract only")
        agent = with_histograms(AGENT_CONTRACT, AGENT_HISTOGRAMS)
    operator = with_histograms(OPERATOR_CONTRACT, OPERATOR_HISTOGRAMS)
    src = ""
    for root, _dirs, files in os.walk(operator_src):
        for fn in files:
            if fn.endswith(".rs"):
                src += open(os.path.join(root, fn)).read()
    for fam in sorted(list(OPERATOR_CONTRACT) + OPERATOR_HISTOGRAMS):
        stem = re.sub(r"_total$", "", fam)
        short = stem[len("toa_operator_"):]
        found = stem in src or ("toa_operator" in src and f'"{short}"' in src)
        check(f"operator source registers {fam}", found,
              f"neither \"{stem}\" nor prefix toa_operator + \"{short}\" found in {operator_src}")

    queries = []
    with open(dashboard_path) as f:
        dash = json.load(f)
    for p in dash["panels"]:
        for t in p.get("targets", []):
            queries.append((f"dashboard panel '{p['title']}' {t['refId']}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.match(r"^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$", q)
            if not m:
                bad(f"dashboard variable {v['name']}", f"unsupported query {q!r}")
                continue
            queries.append((f"dashboard variable {v['name']}", m.group(1)))
            queries.append((f"dashboard variable {v['name']} label", f"count by ({m.group(2)}) ({m.group(1)})"))
    # The dashboard in the ConfigMap must be this very JSON.
    cms = [d for d in docs_of(rendered, "ConfigMap") if "toa-operator.json" in d.get("data", {})]
    check("dashboard ConfigMap carries the dashboard JSON", len(cms) == 1 and json.loads(cms[0]["data"]["toa-operator.json"]) == dash,
          "ConfigMap missing or its JSON differs from dashboards/toa-operator.json")
    if cms:
        check("dashboard ConfigMap labelled grafana_dashboard=\"1\"",
              cms[0]["metadata"].get("labels", {}).get("grafana_dashboard") == "1", "label missing")
    for r in docs_of(rendered, "PrometheusRule"):
        for g in r["spec"]["groups"]:
            for rule in g["rules"]:
                queries.append((f"alert {rule.get('alert') or rule.get('record')}", str(rule["expr"])))
    check("queries found", len(queries) > 10, f"only {len(queries)} queries")

    known = dict(agent)
    known.update(operator)
    known["up"] = set()
    all_labels = set().union(*known.values()) | TARGET_LABELS | {"kernel_release"}
    for name, expr in queries:
        try:
            sels, grouping = selectors_and_labels(substitute_grafana(expr))
        except Exception as e:
            bad(f"{name} parses", f"{e}: {expr}")
            continue
        problems = []
        for metric, matchers in sels:
            if metric is None:
                problems.append("selector without a metric name")
                continue
            if metric not in known:
                problems.append(f"unknown metric {metric}")
                continue
            for label in matchers:
                if label != "__name__" and label not in known[metric] | TARGET_LABELS:
                    problems.append(f"{metric} has no label {label}")
        for metric, matchers in sels:
            for label, (_op, value) in matchers.items():
                allowed = LABEL_VALUES.get(label)
                if metric == "toa_operator_nodes" and label == "phase":
                    # The operator counts nodes without any agent status as phase "Unknown"
                    # (operator/src/plan/status.rs); the agents never report it.
                    allowed = allowed | {"Unknown"}
                if allowed is None or value in ("", ".*"):
                    continue
                for alt in value.split("|"):
                    if alt not in allowed:
                        problems.append(f"{metric}{{{label}}} value {alt!r} is not one of {sorted(allowed)}")
        for label in grouping:
            if label not in all_labels:
                problems.append(f"grouping label {label} exists on no metric")
        check(f"{name} parses and uses known metrics/labels", not problems, "; ".join(problems))
    # Label values the alerts and dashboard filter on must be ones the agent emits.
    if os.path.exists(fixture):
        phases = label_values(fixture, "toa_agent_phase", "phase")
        want = {"Pending", "Building", "Loading", "Loaded", "Unloading", "Unloaded", "Failed"}
        check("toa_agent_phase exposes every phase", want <= phases, f"missing {sorted(want - phases)} (has {sorted(phases)})")


def cmd_dashboard_tests(args):
    """Fills tests/chart/dashboard.test.yaml's `panel:` references with the dashboard's queries."""
    dashboard_path, spec_path, out_path = args
    with open(dashboard_path) as f:
        dash = json.load(f)
    exprs = {f"{p['title']}/{t['refId']}": t["expr"] for p in dash["panels"] for t in p.get("targets", [])}
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    n = 0
    for t in spec["tests"]:
        for case in t.get("promql_expr_test", []):
            ref = case.pop("panel")
            if ref not in exprs:
                bad(f"dashboard test refers to panel {ref}", "no such panel target in the dashboard")
                continue
            case["expr"] = substitute_grafana(exprs[ref])
            n += 1
    with open(out_path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    check("dashboard query tests generated", n > 0, "no promql_expr_test")


# --- ValidatingAdmissionPolicy CEL ---------------------------------------------------------------


def cmd_vap(args):
    (rendered,) = args
    import celpy

    pols = docs_of(rendered, "ValidatingAdmissionPolicy")
    if len(pols) != 1:
        bad("ValidatingAdmissionPolicy rendered", f"expected 1, found {len(pols)}")
        return
    pol = pols[0]["spec"]
    binding = docs_of(rendered, "ValidatingAdmissionPolicyBinding")
    check("ValidatingAdmissionPolicyBinding denies", len(binding) == 1 and binding[0]["spec"]["policyName"] == pols[0]["metadata"]["name"]
          and binding[0]["spec"]["validationActions"] == ["Deny"], "binding missing or not Deny")
    sas = {d["metadata"]["name"]: d["metadata"]["namespace"] for d in docs_of(rendered, "ServiceAccount")}
    agent_sa = next((n for n in sas if n.endswith("node-agent")), None)
    op_sa = next((n for n in sas if n.endswith("-operator")), None)
    env = celpy.Environment()

    def run(expr, act):
        res = env.program(env.compile(expr)).evaluate(act)
        if isinstance(res, Exception):
            raise res
        return res

    def admit(user, extra, name, sub="status"):
        req = {"name": name, "subResource": sub, "operation": "UPDATE",
               "resource": {"group": "toa.dev", "version": "v1alpha1", "resource": "toanodestates"},
               "userInfo": {"username": user, "groups": ["system:serviceaccounts"]}}
        if extra is not None:
            req["userInfo"]["extra"] = extra
        act = {"request": celpy.json_to_cel(req)}
        for mc in pol.get("matchConditions", []):
            if not run(mc["expression"], act):
                return "not matched"
        variables = {}
        for v in pol.get("variables", []):
            act["variables"] = celpy.json_to_cel(variables)
            variables[v["name"]] = run(v["expression"], act)
        act["variables"] = celpy.json_to_cel({k: str(x) if isinstance(x, str) else x for k, x in variables.items()})
        for val in pol["validations"]:
            if not run(val["expression"], act):
                return "denied: " + str(run(val["messageExpression"], act)) if "messageExpression" in val else "denied"
        return "allowed"

    ns = sas.get(agent_sa, "")
    agent_user = f"system:serviceaccount:{ns}:{agent_sa}"
    key = "authentication.kubernetes.io/node-name"
    cases = [
        ("agent writes its own node's ToaNodeState", agent_user, {key: ["node-a"]}, "node-a", "allowed"),
        ("agent writes another node's ToaNodeState", agent_user, {key: ["node-a"]}, "node-b", "denied"),
        ("agent token without node binding", agent_user, None, "node-a", "denied"),
        ("agent token with other extras only", agent_user, {"authentication.kubernetes.io/pod-name": ["p"]}, "node-a", "denied"),
        ("operator is not confined", f"system:serviceaccount:{ns}:{op_sa}", None, "node-b", "not matched"),
        ("an admin is not confined", "kubernetes-admin", None, "node-b", "not matched"),
    ]
    for title, user, extra, name, want in cases:
        try:
            got = admit(user, extra, name)
        except Exception as e:
            bad(f"VAP: {title}", f"CEL error {e}")
            continue
        check(f"VAP: {title} -> {want}", got.startswith(want), f"got {got}")
    rules = pol["matchConstraints"]["resourceRules"]
    check("VAP matches toanodestates and their status", any("toanodestates/status" in r["resources"] and "toanodestates" in r["resources"] and "toa.dev" in r["apiGroups"] for r in rules),
          f"resourceRules {rules}")


# --- RBAC ----------------------------------------------------------------------------------------


def rules_set(role):
    out = set()
    for r in role.get("rules", []):
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v, tuple(r.get("resourceNames", []))))
    return out


def cmd_rbac(args):
    (rendered,) = args
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs_of(rendered, "ClusterRole") + docs_of(rendered, "Role")}
    for (kind, name), d in roles.items():
        wild = [r for r in d.get("rules", []) if "*" in r.get("verbs", []) + r.get("resources", []) + r.get("apiGroups", [])]
        check(f"{kind} {name} has no wildcards", not wild, f"{wild}")
        secrets = [r for r in d.get("rules", []) if "secrets" in r.get("resources", [])]
        check(f"{kind} {name} cannot read secrets", not secrets, f"{secrets}")

    def find(kind, suffix):
        return next((d for (k, n), d in roles.items() if k == kind and n.endswith(suffix)), None)

    agent = find("ClusterRole", "-node-agent")
    want_agent = {("toa.dev", "toanodestates", v, ()) for v in ("get", "list", "watch")} | {
        ("toa.dev", "toanodestates/status", "patch", ()), ("", "nodes", "get", ())}
    check("agent ClusterRole is exactly: toanodestates get/list/watch, toanodestates/status patch, nodes get",
          agent is not None and rules_set(agent) == want_agent,
          f"got {sorted(rules_set(agent)) if agent else None}")
    op = find("ClusterRole", "-operator")
    got = rules_set(op) if op else set()
    need = {("toa.dev", "toapolicies", "watch", ()), ("toa.dev", "toapolicies/status", "patch", ()),
            ("toa.dev", "toapolicies/finalizers", "update", ()), ("toa.dev", "toanodestates", "create", ()),
            ("toa.dev", "toanodestates", "delete", ()), ("", "nodes", "patch", ()), ("", "nodes", "watch", ()),
            ("events.k8s.io", "events", "create", ())}
    check("operator ClusterRole grants what the operator needs", need <= got, f"missing {sorted(need - got)}")
    forbidden = {(g, r, v) for (g, r, v, _n) in got if (r == "nodes" and v in ("delete", "update", "create"))
                 or (r in ("toanodestates/status",) and v != "get") or r in ("pods", "daemonsets", "leases")}
    check("operator ClusterRole has no node delete/update, no status writes on ToaNodeState, nothing namespaced",
          not forbidden, f"{sorted(forbidden)}")
    role = find("Role", "-operator")
    got = rules_set(role) if role else set()
    check("operator Role: daemonsets and leases only, plus get of the agent ConfigMap by name and "
          "read-only pods and events (the agent pods, the DaemonSet's FailedCreate)",
          role is not None and {r for (_g, r, _v, _n) in got} == {"daemonsets", "leases", "configmaps", "pods", "events"},
          f"{sorted(got)}")
    reads = [x for x in got if x[1] in ("pods", "events")]
    check("operator Role: pods and events only get/list/watch",
          bool(reads) and all(x[2] in ("get", "list", "watch") for x in reads), f"{sorted(reads)}")
    # The agent ConfigMap owns the DaemonSet and the Lease (garbage-collected with the release):
    # the operator reads its uid, nothing else of any ConfigMap.
    cms = [x for x in got if x[1] == "configmaps"]
    check("operator Role: configmaps only get, only the agent ConfigMap",
          bool(cms) and all(v == "get" and len(n) == 1 and n[0].endswith("-agent-config") for (_g, _r, v, n) in cms),
          f"{sorted(cms)}")
    lease_named = [x for x in got if x[1] == "leases" and x[2] in ("get", "update", "patch", "delete")]
    check("operator Role: lease get/update limited by resourceNames",
          lease_named and all(x[3] for x in lease_named), f"{lease_named}")
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for d in docs_of(rendered, kind):
            subj = d.get("subjects", [])
            check(f"{kind} {d['metadata']['name']} binds one ServiceAccount", len(subj) == 1 and subj[0]["kind"] == "ServiceAccount",
                  f"{subj}")


# --- wiring between the chart, the operator and the agent ----------------------------------------

AGENT_CONFIG_KEYS = {"image", "imagePullPolicy", "imagePullSecrets", "serviceAccountName", "priorityClassName",
                     "tolerations", "resources", "nodeSelector", "hostCachePath", "extraHostPaths", "metricsPort",
                     "logFormat", "podLabels", "podAnnotations", "metricsBindAddress", "perCpuMetrics",
                     "buildTimeoutSeconds", "cacheMaxAgeDays", "buildRoot", "buildRootMirror", "labels",
                     "annotations"}
OPERATOR_FLAGS = ["--agent-config", "--namespace", "--daemonset-name", "--lease-name", "--metrics-addr", "--log-format",
                  "--owner-configmap"]


def cmd_wiring(args):
    (rendered,) = args
    deps = docs_of(rendered, "Deployment")
    check("one operator Deployment", len(deps) == 1, f"found {len(deps)}")
    if not deps:
        return
    dep = deps[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    argv = c.get("args", [])
    for flag in OPERATOR_FLAGS:
        check(f"operator gets {flag}", any(a.startswith(flag + "=") for a in argv), f"args {argv}")
    check("operator replicas >= 2 (leader election)", dep["spec"]["replicas"] >= 2, f"{dep['spec']['replicas']}")
    ru = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
    check("operator rolls by surging first (a Ready standby is always there)",
          ru.get("maxSurge") == 1 and ru.get("maxUnavailable") == 0, f"{ru}")
    pdbs = docs_of(rendered, "PodDisruptionBudget")
    check("operator PodDisruptionBudget selects the operator pods", len(pdbs) == 1 and all(
        dep["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in pdbs[0]["spec"]["selector"]["matchLabels"].items()),
        f"{pdbs}")
    sc = c.get("securityContext", {})
    check("operator container: non-root, read-only root fs, no capabilities",
          pod.get("securityContext", {}).get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True
          and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"], f"{sc}")
    probes = (c.get("livenessProbe", {}).get("httpGet", {}).get("path"), c.get("readinessProbe", {}).get("httpGet", {}).get("path"))
    check("operator probes /healthz and /readyz", probes == ("/healthz", "/readyz"), f"{probes}")
    env = {e["name"]: e for e in c.get("env", [])}
    check("POD_NAMESPACE from the downward API", env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace", f"{env.get('POD_NAMESPACE')}")
    cfg_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--agent-config=")), "")
    mount = next((m for m in c.get("volumeMounts", []) if cfg_arg.startswith(m["mountPath"] + "/")), None)
    vol = next((v for v in pod.get("volumes", []) if mount and v["name"] == mount["name"]), None)
    cms = {d["metadata"]["name"]: d for d in docs_of(rendered, "ConfigMap")}
    cm = cms.get(vol["configMap"]["name"]) if vol and "configMap" in vol else None
    key = os.path.basename(cfg_arg)
    check("--agent-config file is mounted from the agent-config ConfigMap", cm is not None and key in cm.get("data", {}),
          f"arg {cfg_arg}, mount {mount}, volume {vol}")
    if not cm or key not in cm.get("data", {}):
        return
    cfg = yaml.safe_load(cm["data"][key])
    check("agent config uses only the contract keys and names the image", set(cfg) <= AGENT_CONFIG_KEYS and cfg.get("image"),
          f"unknown {sorted(set(cfg) - AGENT_CONFIG_KEYS)}, image {cfg.get('image')!r}")
    check("agent tolerates every taint by default", {"operator": "Exists"} in cfg.get("tolerations", []), f"{cfg.get('tolerations')}")
    check("agent priorityClassName system-node-critical", cfg.get("priorityClassName") == "system-node-critical", f"{cfg.get('priorityClassName')}")
    sa_names = {d["metadata"]["name"] for d in docs_of(rendered, "ServiceAccount")}
    check("agent config names the agent ServiceAccount", cfg.get("serviceAccountName") in sa_names, f"{cfg.get('serviceAccountName')} not in {sorted(sa_names)}")
    svcs = [d for d in docs_of(rendered, "Service") if d["spec"].get("clusterIP") == "None"]
    if svcs:
        sel = svcs[0]["spec"]["selector"]
        check("headless agent Service selects the agent podLabels",
              all(cfg["podLabels"].get(k) == v for k, v in sel.items()), f"selector {sel} vs podLabels {cfg['podLabels']}")
        port = svcs[0]["spec"]["ports"][0]
        check("agent Service targets the container port named metrics", port.get("targetPort") == "metrics", f"{port}")
    for kind in ("PodMonitor", "ServiceMonitor"):
        for m in docs_of(rendered, kind):
            if kind == "PodMonitor":
                target_labels = cfg["podLabels"] if "node-agent" in m["metadata"]["name"] else dep["spec"]["template"]["metadata"]["labels"]
            else:
                target_labels = next((s["metadata"]["labels"] for s in docs_of(rendered, "Service")
                                      if all(s["metadata"]["labels"].get(k) == v for k, v in m["spec"]["selector"]["matchLabels"].items())), None)
            check(f"{kind} {m['metadata']['name']} selects its target", target_labels is not None and all(
                target_labels.get(k) == v for k, v in m["spec"]["selector"]["matchLabels"].items()),
                f"{m['spec']['selector']} vs {target_labels}")


# --- values cases and --reuse-values ----------------------------------------------------------


class DuplicateKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping key given twice (Kustomize and kubectl apply do)."""


def _no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


DuplicateKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def helm_template(chart, release, values, kver, workdir, api_versions=()):
    path = os.path.join(workdir, "case-values.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(values, f)
    cmd = ["helm", "template", release, chart, "--namespace", "toa-system", "--kube-version", kver, "-f", path]
    for a in api_versions:
        cmd += ["--api-versions", a]
    return subprocess.run(cmd, capture_output=True, text=True)


def k8s_errors(rendered_path, kver):
    """kubernetes-validate --strict on the built-in kinds of a rendered file: the errors."""
    out = subprocess.run(["kubernetes-validate", "--strict", "-k", kver, rendered_path], capture_output=True, text=True)
    return [line.strip() for line in (out.stdout + out.stderr).splitlines()
            if line.strip() and "passed for resource" not in line and "Couldn't find schema" not in line]


def cmd_values_cases(args):
    chart, cases_path, kver, workdir = args
    with open(cases_path) as f:
        cases = yaml.safe_load(f)
    for c in cases["invalid"]:
        name = f"values refused: {c['name']}"
        r = helm_template(chart, c.get("release", "toa"), c["values"], kver, workdir, c.get("apiVersions", ()))
        if r.returncode == 0:
            bad(name, "helm template succeeded")
        elif not re.search(c["helm"], r.stderr):
            bad(name, f"failed without saying /{c['helm']}/: {r.stderr.strip()[-400:]}")
        else:
            ok(name)
    for c in cases["valid"]:
        name = f"values accepted: {c['name']}"
        r = helm_template(chart, c.get("release", "toa"), c["values"], kver, workdir, c.get("apiVersions", ()))
        if r.returncode != 0:
            bad(name, r.stderr.strip()[-400:])
            continue
        problems = []
        try:
            list(yaml.load_all(r.stdout, Loader=DuplicateKeyLoader))
        except yaml.YAMLError as e:
            problems.append(f"rendered YAML: {e}")
        problems += [f"missing {s!r}" for s in c.get("contains", []) if s not in r.stdout]
        problems += [f"unexpected {s!r}" for s in c.get("absent", []) if s in r.stdout]
        rendered = os.path.join(workdir, "case.yaml")
        with open(rendered, "w") as f:
            f.write(r.stdout)
        problems += k8s_errors(rendered, kver)[:3]
        check(name, not problems, "; ".join(problems))


def value_paths(values, prefix=()):
    """Every key path of a values tree (maps only; lists are leaves)."""
    for k, v in values.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from value_paths(v, prefix + (k,))


def cmd_reuse_values(args):
    """--reuse-values renders the new chart with the OLD release's computed values in place of the
    new chart's values.yaml. A value the new version added is therefore missing: simulate that
    for every key path (each left out in turn) and require a successful render."""
    import shutil

    chart, kver, workdir = args
    with open(os.path.join(chart, "values.yaml")) as f:
        defaults = yaml.safe_load(f)
    copy = os.path.join(workdir, "reuse-chart")
    failures, count = [], 0
    for path in value_paths(defaults):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(chart, copy)
        old = json.loads(json.dumps(defaults))
        node = old
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
        with open(os.path.join(copy, "values.yaml"), "w") as f:
            yaml.safe_dump(old, f)
        # The release's values: what an old release recorded (here: the old defaults).
        r = subprocess.run(["helm", "template", "toa", copy, "--namespace", "toa-system", "--kube-version", kver],
                           capture_output=True, text=True)
        count += 1
        if r.returncode != 0:
            failures.append(f"{'.'.join(path)}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    check(f"helm upgrade --reuse-values from a release without each of the {count} values renders",
          not failures, f"{len(failures)} failed, e.g. " + "; ".join(failures[:4]))


# --- claims in the docs against what is built and tested ---------------------------------------


def md_table(text, header_start):
    """Rows (lists of cells) of the markdown table whose header row starts with header_start."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| " + header_start):
            rows = []
            for l in lines[i + 2:]:
                if not l.startswith("|"):
                    break
                rows.append([c.strip() for c in l.strip().strip("|").split("|")])
            return rows
    return []


def cmd_support(args):
    root, kver_old = args
    with open(os.path.join(root, "docs/support.md")) as f:
        doc = f.read()
    with open(os.path.join(root, "charts/toa-operator/Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    k8s = md_table(doc, "Kubernetes")
    minimum = next((r[0] for r in k8s if r[1].startswith("minimum")), None)
    kube_min = re.match(r">=\s*(\d+\.\d+)", chart.get("kubeVersion", ""))
    check("support matrix: the minimum Kubernetes is the chart's kubeVersion and the oldest check.sh renders",
          minimum and kube_min and minimum == kube_min.group(1) and kver_old.startswith(minimum + "."),
          f"docs {minimum}, Chart.yaml {chart.get('kubeVersion')}, check.sh renders {kver_old}")
    stale = []
    for path in [os.path.join(root, "README.md"), os.path.join(root, "charts/toa-operator/README.md")] + \
            [os.path.join(root, "docs", f) for f in sorted(os.listdir(os.path.join(root, "docs"))) if f.endswith(".md")]:
        with open(path) as f:
            text = f.read()
        for m in re.finditer(r"Kubernetes (1\.\d+)(\+| or newer)", text):
            if minimum and m.group(1) != minimum:
                stale.append(f"{os.path.relpath(path, root)}: {m.group(0)}")
        if "arm64" in text and not path.endswith(("support.md", "/README.md")) or \
                re.search(r"x86_64 and arm64|arm64 and x86_64", text):
            stale.append(f"{os.path.relpath(path, root)}: claims arm64")
    check("no document claims another minimum Kubernetes or arm64 support", not stale, "; ".join(stale))
    # Security claims (issue 12, item 8): "least privilege" only where it is denied; spoofing
    # protection by trustedSources only with the balancer condition in the same paragraph.
    overclaims = []
    for path in [os.path.join(root, "README.md"), os.path.join(root, "charts/toa-operator/README.md")] + \
            sorted(glob.glob(os.path.join(root, "docs/*.md"))):
        with open(path) as f:
            text = f.read()
        rel = os.path.relpath(path, root)
        for m in re.finditer(r"least[- ]privilege", text, re.I):
            if not re.search(r"\bnot\b", text[max(0, m.start() - 30):m.start()]):
                overclaims.append(f"{rel}: '{text[max(0, m.start() - 30):m.end()]}'")
        for para in re.split(r"\n\s*\n", text):
            if re.search(r"(stop|prevent|block)s? (address )?spoofing|cannot (be )?spoof", para, re.I) and \
                    not re.search(r"strip", para, re.I):
                overclaims.append(f"{rel}: a spoofing claim without the balancer stripping client options: "
                                  f"'{para.strip()[:100]}'")
    check("no document claims least privilege, or spoofing protection without the balancer condition",
          not overclaims, "; ".join(overclaims))
    # The image build needs root, crates.io and Debian's archive (issue 12, item 10): never
    # "offline", except where a text says it is not.
    offline = []
    for path in [os.path.join(root, "README.md"), os.path.join(root, "images/build.sh")] + \
            sorted(glob.glob(os.path.join(root, "docs/*.md"))):
        with open(path) as f:
            for no, line in enumerate(f, 1):
                if re.search(r"\boffline\b", line, re.I) and re.search(r"image|build", line, re.I) and \
                        not re.search(r"not offline", line, re.I):
                    offline.append(f"{os.path.relpath(path, root)}:{no}: {line.strip()[:90]}")
    check("no document calls the image build offline", not offline, "; ".join(offline))
    with open(os.path.join(root, "docs/support.md")) as f:
        sec = f.read().split("## Security", 1)[-1].split("\n## ", 1)[0]
    check("docs/support.md's security section states what is not protected (operator power, agent root, "
          "balancer stripping, unauthenticated metrics)",
          all(re.search(p, sec, re.I) for p in (r"privileged pod on every node", r"root on its node", r"strip",
                                                  r"metrics are not authenticated")),
          "docs/support.md: the security section lacks one of: operator power, agent root, balancer stripping, metrics")
    with open(os.path.join(root, "tests/vm/lib/kernels.sh")) as f:
        kernels_sh = f.read()
    tested = set(re.search(r'TOA_DEFAULT_KERNELS:-"([^"]*)"', kernels_sh).group(1).split())
    with open(os.path.join(root, "images/node-agent.packages")) as f:
        compilers = set(re.findall(r"^(gcc-\d+)\s*$", f.read(), re.M))
    rows = md_table(doc, "kernel series")
    check("support matrix lists every kernel series the VM suites run", tested <= {r[0] for r in rows},
          f"suites run {sorted(tested)}, table has {[r[0] for r in rows]}")
    for r in rows:
        series, cc, in_guests, image = r[0], set(re.findall(r"gcc-\d+", r[2])), r[3], r[4]
        check(f"support matrix {series}: 'module tested in guests: {in_guests.split()[0]}' matches tests/vm/lib/kernels.sh",
              in_guests.startswith("yes") == (series in tested), f"suites run {sorted(tested)}")
        if image.startswith("yes"):
            check(f"support matrix {series}: the agent image has {sorted(cc)}", cc <= compilers,
                  f"images/node-agent.packages: {sorted(compilers)}")
        elif image.startswith("no"):
            check(f"support matrix {series}: the agent image really lacks a compiler of {sorted(cc)}",
                  not cc <= compilers, f"images/node-agent.packages: {sorted(compilers)}: the row should say yes")
        else:
            check(f"support matrix {series}: untested row claims no build", "untested" in image, image)
    with open(os.path.join(root, "images/build.sh")) as f:
        build = f.read()
    arch = md_table(doc, "architecture")
    only = [r[0] for r in arch if "the only one" in r[1]]
    check("support matrix: x86_64 is the only architecture, as images/build.sh builds",
          only == ["x86_64 (amd64)"] and "TARGET=x86_64-unknown-linux-musl" in build and "aarch64" not in build,
          f"table {only}")
    check("images/build.sh tags the images the chart pulls by default (localhost/toa-NAME:appVersion)",
          "ref=localhost/toa-$name:$VERSION" in build and "appVersion" in build, "tag format changed in build.sh")


def gh_anchor(heading):
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def cmd_runbooks(args):
    rendered, troubleshooting, crd = args
    with open(troubleshooting) as f:
        anchors = {gh_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", f.read(), re.M)}
    rules = docs_of(rendered, "PrometheusRule")
    refs = set()
    for r in rules:
        for g in r["spec"]["groups"]:
            for rule in g["rules"]:
                refs.add((rule["alert"], rule["annotations"].get("runbook", "")))
    reasons = set()
    for d in load_docs(crd):
        for v in d["spec"]["versions"]:
            st = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            reasons |= set(st["reason"].get("enum", []))
    check("every alert has a runbook annotation", refs and all(r for _, r in refs), f"{sorted(refs)}")
    for alert, ref in sorted(refs):
        anchor = ref.split("#", 1)[-1]
        if "$labels.reason" in anchor:
            missing = sorted(x for x in reasons if x.lower() not in anchors)
            check(f"runbook of {alert}: every node reason has its section in docs/troubleshooting.md",
                  not missing and reasons, f"no section for {missing}")
        else:
            check(f"runbook of {alert}: docs/troubleshooting.md#{anchor} exists", anchor in anchors,
                  f"anchors: {sorted(anchors)}")


def cmd_package_refs(args):
    """The packaged chart's README and NOTES only point at files that are in the package, or
    say that the path is in the toa-operator repository."""
    pkgdir, notes = args
    with open(notes) as f:
        notes_text = f.read().split("\nNOTES:\n", 1)[-1]
    with open(os.path.join(pkgdir, "README.md")) as f:
        readme = f.read()
    for name, text in (("README.md", readme), ("NOTES.txt", notes_text)):
        paras = re.split(r"\n\s*\n", text)
        bad_refs = []
        for p in paras:
            for m in re.finditer(r"(?<![\w/.])((?:docs|crds|charts|tests|images|kmod)/[\w./-]*\w)", p):
                ref = m.group(1)
                if ref.startswith("charts/toa-operator"):
                    continue  # the chart itself, as a user's `helm install` path
                if not os.path.exists(os.path.join(pkgdir, ref)) and "repository" not in p:
                    bad_refs.append(ref)
        check(f"packaged chart {name} names only files in the package (or says: in the repository)",
              not bad_refs, f"{sorted(set(bad_refs))}")


def main():
    cmds = {"support": cmd_support, "runbooks": cmd_runbooks, "package-refs": cmd_package_refs,
            "values-cases": cmd_values_cases, "reuse-values": cmd_reuse_values, "k8s": cmd_k8s, "crs": cmd_crs, "rules": cmd_rules, "alert-coverage": cmd_alert_coverage,
            "queries": cmd_queries, "dashboard-tests": cmd_dashboard_tests, "vap": cmd_vap, "rbac": cmd_rbac, "wiring": cmd_wiring}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        cmds[sys.argv[1]](sys.argv[2:])
    except Exception as e:  # a crash of a check is a failed check, with its cause
        bad(f"{sys.argv[1]} check ran", f"{type(e).__name__}: {e}")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
