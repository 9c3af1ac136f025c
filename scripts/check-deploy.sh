#!/usr/bin/env bash
# check-deploy.sh — check the shipped monitoring stack with the real tools.
#
# Usage: scripts/check-deploy.sh [PROMETHEUS_URL]
#
#   PROMETHEUS_URL  base URL of a running Prometheus (e.g. http://127.0.0.1:9090)
#                   used to parse every PromQL expression through its query API.
#                   Without it, a throw-away `prometheus` is started on a free
#                   loopback port with a temporary data directory (it also loads
#                   the rule files) and is stopped again at the end.
#
# Checks:
#   - promtool check config / check rules / test rules (deploy/prometheus)
#   - amtool check-config (deploy/alertmanager)
#   - alert rule conventions: groups present, severity critical|warning|info,
#     summary + description annotations
#   - Grafana dashboard JSON: valid JSON, stable uid, datasource uids provisioned
#   - YAML syntax of the Loki, Promtail, Grafana provisioning configs
#   - manifests/: only the fields docs/manifests.md documents, referenced paths exist
#   - units/*.service: systemd-analyze --user verify
#   - every PromQL expression in the rules and the dashboards parses
#     (/api/v1/query; errorType bad_data = parse error), and each dashboard
#     expression also with promtool (as a recording rule, offline)
#   - the dashboards that must ship are there (uids unitlet-llm-stack,
#     unitlet-operator), no uid twice
#
# Environment: PROMETHEUS_BIN (default: prometheus), CHECK_DEPLOY_WAIT
# (seconds to wait for the temporary Prometheus, default 30).
#
# No check is ever skipped: a missing tool (promtool, amtool, python3 with
# PyYAML, systemd-analyze, prometheus) is a failure with exit status 2.
#
# Exit status: 0 all checks passed; 1 some check failed; 2 missing tool/usage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROM_DIR=deploy/prometheus
AM_CONFIG=deploy/alertmanager/alertmanager.yml
DASH_DIR=deploy/grafana/dashboards
WAIT_SECS="${CHECK_DEPLOY_WAIT:-30}"
PROMETHEUS_BIN="${PROMETHEUS_BIN:-prometheus}"

failures=0
checks=0
TMP=""
PROM_PID=""

log()  { printf '==> %s\n' "$*"; }
ok()   { checks=$((checks + 1)); printf '    ok: %s\n' "$*"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); printf '    FAIL: %s\n' "$*" >&2; }
die()  { printf 'check-deploy: %s\n' "$*" >&2; exit 2; }

cleanup() {
    if [[ -n "$PROM_PID" ]] && kill -0 "$PROM_PID" 2>/dev/null; then
        kill "$PROM_PID" 2>/dev/null || true
        # bounded wait for it to exit, then force
        for _ in $(seq 1 50); do
            kill -0 "$PROM_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$PROM_PID" 2>/dev/null || true
        wait "$PROM_PID" 2>/dev/null || true
    fi
    if [[ -n "$TMP" ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $# -gt 1 || "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    [[ $# -gt 1 ]] && exit 2 || exit 0
fi
PROM_URL="${1:-}"

for tool in promtool amtool python3 systemd-analyze; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found in PATH: every check runs, none is skipped (Debian: apt-get install prometheus prometheus-alertmanager python3 python3-yaml systemd)"
done
python3 -c 'import yaml' 2>/dev/null || die "python3 cannot import yaml (PyYAML): the rule, YAML and manifest checks need it (Debian: apt-get install python3-yaml)"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")"

shopt -s nullglob
RULE_FILES=("$PROM_DIR"/rules/*.yml "$PROM_DIR"/rules/*.yaml)
RULE_TESTS=("$PROM_DIR"/tests/*.yml "$PROM_DIR"/tests/*.yaml)
DASHBOARDS=("$DASH_DIR"/*.json)
UNIT_FILES=(units/*.service)
shopt -u nullglob

[[ ${#RULE_FILES[@]} -gt 0 ]] || die "no rule files in $PROM_DIR/rules"
[[ ${#DASHBOARDS[@]} -gt 0 ]] || die "no dashboards in $DASH_DIR"
[[ ${#UNIT_FILES[@]} -gt 0 ]] || die "no unit files in units/"

# --------------------------------------------------------------------------
log "promtool check config $PROM_DIR/prometheus.yml"
if out=$(promtool check config "$PROM_DIR/prometheus.yml" 2>&1); then
    ok "prometheus.yml ($(grep -c 'SUCCESS' <<<"$out") SUCCESS lines)"
else
    printf '%s\n' "$out" >&2; fail "promtool check config $PROM_DIR/prometheus.yml"
fi

log "promtool check rules ${RULE_FILES[*]}"
if out=$(promtool check rules "${RULE_FILES[@]}" 2>&1); then
    ok "rules: $(grep -o '[0-9]* rules found' <<<"$out" | awk '{s+=$1} END {print s+0}') rules in ${#RULE_FILES[@]} files"
else
    printf '%s\n' "$out" >&2; fail "promtool check rules"
fi

[[ ${#RULE_TESTS[@]} -gt 0 ]] || die "no rule unit tests in $PROM_DIR/tests"
log "promtool test rules ${RULE_TESTS[*]}"
# rule_files in the tests are relative to the test file
if out=$(promtool test rules "${RULE_TESTS[@]}" 2>&1); then
    ok "rule unit tests (${#RULE_TESTS[@]} files)"
else
    printf '%s\n' "$out" >&2; fail "promtool test rules"
fi

log "amtool check-config $AM_CONFIG"
if out=$(amtool check-config "$AM_CONFIG" 2>&1); then
    ok "alertmanager.yml"
else
    printf '%s\n' "$out" >&2; fail "amtool check-config $AM_CONFIG"
fi

# --------------------------------------------------------------------------
# Static checks and expression extraction (python3; PyYAML when available).
# Writes one expression per record to $TMP/exprs.jsonl for the query check.
log "static checks (rules conventions, dashboards, YAML configs, manifests)"
if python3 -u - "$TMP/exprs.jsonl" "${RULE_FILES[@]}" -- "${DASHBOARDS[@]}" <<'PY'
import json, os, re, sys, glob

out_path = sys.argv[1]
args = sys.argv[2:]
sep = args.index("--")
rule_files, dashboards = args[:sep], args[sep + 1:]
import yaml

fails = 0
def fail(msg):
    global fails
    fails += 1
    print(f"    FAIL: {msg}", file=sys.stderr)
def ok(msg):
    print(f"    ok: {msg}")

exprs = []  # {"source": ..., "expr": ...}

# ---- alert rules ---------------------------------------------------------
REQUIRED_GROUPS = {"litellm_gateway", "provider_health", "cache_performance", "rate_limiting",
                   "system_resources", "fallback_behavior", "configuration", "custom"}
REQUIRED_UNITLET_METRICS = ["unitlet_last_reload_successful",
                            "unitlet_last_backup_success_timestamp_seconds",
                            "unitlet_managed_units",
                            "unitlet_reconcile_total"]
groups, alerts, all_text = set(), 0, ""
for f in rule_files:
    with open(f) as fh:
        doc = yaml.safe_load(fh) or {}
    for g in doc.get("groups", []):
        groups.add(g["name"])
        for r in g.get("rules", []):
            name = r.get("alert") or r.get("record")
            exprs.append({"source": f"{f}: {g['name']}/{name}", "expr": str(r["expr"])})
            all_text += str(r["expr"]) + "\n"
            if "alert" not in r:
                continue
            alerts += 1
            sev = (r.get("labels") or {}).get("severity")
            if sev not in ("critical", "warning", "info"):
                fail(f"{f}: alert {name}: labels.severity is {sev!r}, want critical|warning|info")
            ann = r.get("annotations") or {}
            for key in ("summary", "description"):
                if not str(ann.get(key, "")).strip():
                    fail(f"{f}: alert {name}: missing annotations.{key}")
missing = REQUIRED_GROUPS - groups
if missing:
    fail(f"rule groups missing: {', '.join(sorted(missing))}")
for m in REQUIRED_UNITLET_METRICS:
    if m not in all_text:
        fail(f"no alert uses unitlet metric {m}")
ok(f"rule conventions: {len(groups)} groups, {alerts} alerts")

# ---- dashboards ----------------------------------------------------------
VAR_SAMPLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h",
               "__interval_ms": "60000", "__range_ms": "3600000", "__range_s": "3600",
               "__from": "0", "__to": "0"}
def provisioned_uids():
    uids = set()
    for f in glob.glob("deploy/grafana/provisioning/datasources/*.y*ml"):
        text = open(f).read()
        for ds in (yaml.safe_load(text) or {}).get("datasources", []):
            if ds.get("uid"): uids.add(ds["uid"])
    return uids
ds_uids = provisioned_uids()
# Dashboards that must ship: the stack's and unitlet's own.
REQUIRED_DASHBOARDS = {"unitlet-llm-stack", "unitlet-operator"}
dash_uids = {}

def walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")

for f in dashboards:
    try:
        with open(f) as fh:
            dash = json.load(fh)
    except (OSError, ValueError) as e:
        fail(f"{f}: not valid JSON: {e}")
        continue
    n_before = len(exprs)
    uid = dash.get("uid")
    if uid in dash_uids:
        fail(f"{f}: uid {uid!r} is also {dash_uids[uid]}'s")
    dash_uids[uid] = f
    if not uid or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", str(uid)):
        fail(f"{f}: needs a stable uid (1-40 of [A-Za-z0-9_-]), has {uid!r}")
    if dash.get("id") not in (None,):
        fail(f"{f}: id should be null so Grafana assigns one (uid identifies the dashboard)")
    rows = [p for p in dash.get("panels", []) if p.get("type") == "row"]
    for path, node in walk(dash):
        ds = node.get("datasource")
        if isinstance(ds, dict) and ds.get("type") not in ("grafana", "datasource", None):
            if ds.get("uid") not in ds_uids and not str(ds.get("uid", "")).startswith("$"):
                fail(f"{f}{path}: datasource uid {ds.get('uid')!r} is not provisioned ({sorted(ds_uids)})")
        if "expr" in node and isinstance(node["expr"], str) and node["expr"].strip():
            title = ""
            exprs.append({"source": f"{f}{path}", "expr": node["expr"], "grafana": True})
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        if var.get("type") != "query" or not q:
            continue
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q) or \
            re.fullmatch(r"\s*query_result\((.*)\)\s*", q)
        if m:
            exprs.append({"source": f"{f}: variable ${var['name']}", "expr": m.group(1), "grafana": True})
        elif not re.fullmatch(r"\s*(label_names|metrics)\(.*\)\s*|\s*label_values\(\s*\w+\s*\)\s*", q):
            exprs.append({"source": f"{f}: variable ${var['name']}", "expr": q, "grafana": True})
    ok(f"{f}: valid JSON, uid {uid!r}, {len(rows)} rows, "
       f"{sum(1 for p in dash.get('panels', []) if p.get('type') != 'row')} panels, "
       f"{len(exprs) - n_before} expressions")

for uid in sorted(REQUIRED_DASHBOARDS - set(dash_uids)):
    fail(f"no dashboard with uid {uid!r} in {sorted(dash_uids.values())}")

# Grafana variables -> sample values so the expression is plain PromQL.
def substitute(expr):
    def builtin(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return VAR_SAMPLES.get(name, m.group(0))
    expr = re.sub(r"\$\{(__\w+)(?::\w+)?\}|\$(__\w+)|\[\[(__\w+)\]\]", builtin, expr)
    # a user variable used as a range/offset duration
    expr = re.sub(r"\[\s*(?:\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\])\s*(?=[:\]])", "[5m", expr)
    expr = re.sub(r"(offset\s+)(?:\$\{\w+(?::\w+)?\}|\$\w+)", r"\g<1>5m", expr)
    # any other user variable (e.g. $model in a label matcher)
    expr = re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]", "sample", expr)
    return expr

for e in exprs:
    if e.get("grafana"):
        e["expr"] = substitute(e["expr"])

# ---- other YAML configs --------------------------------------------------
yaml_files = ["deploy/loki/loki.yml", "deploy/promtail/promtail.yml"] + \
    sorted(glob.glob("deploy/grafana/provisioning/*/*.y*ml"))
for f in yaml_files:
    try:
        with open(f) as fh:
            yaml.safe_load(fh)
    except Exception as e:
        fail(f"{f}: {e}")
ok(f"YAML syntax: {len(yaml_files)} files (Loki, Promtail, Grafana provisioning)")

# ---- manifests -------------------------------------------------------
TOP = {"apiVersion", "kind", "metadata", "spec"}
# The allowed fields are read from the reference, docs/manifests.md (the
# first column of the field tables under "## kind: Service" and
# "## kind: Backup"), so this check cannot drift from what is documented.
def documented_fields(heading):
    top, sub, inside = set(), {}, False
    for line in open("docs/manifests.md"):
        if line.startswith("#"):
            inside = line.strip() == heading
            continue
        m = re.match(r"\|\s*`([A-Za-z][A-Za-z0-9.]*)`\s*\|", line) if inside else None
        if m:
            parts = m.group(1).split(".")
            top.add(parts[0])
            if len(parts) > 1:
                sub.setdefault(parts[0], set()).add(parts[1])
    if not top:
        fail(f"docs/manifests.md: no field table under {heading!r}")
    return top, sub
SERVICE, SUB = documented_fields("## kind: Service")
BACKUP, backup_sub = documented_fields("## kind: Backup")
SUB.update(backup_sub)
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
names, services, n_docs = {}, set(), 0
afters = []
for f in sorted(glob.glob("manifests/*.yaml") + glob.glob("manifests/*.yml")):
    base = os.path.dirname(f)
    def resolve(p):
        return os.path.expanduser(p) if p.startswith("~/") else os.path.normpath(os.path.join(base, p))
    try:
        docs = [d for d in yaml.safe_load_all(open(f)) if d is not None]
    except Exception as e:
        fail(f"{f}: {e}")
        continue
    for d in docs:
        n_docs += 1
        where = f"{f}: {d.get('metadata', {}).get('name', '?')}"
        if set(d) - TOP:
            fail(f"{where}: unknown top-level fields {sorted(set(d) - TOP)}")
        if d.get("apiVersion") != "unitlet/v1":
            fail(f"{where}: apiVersion must be unitlet/v1")
        meta = d.get("metadata") or {}
        if set(meta) - {"name", "labels"}:
            fail(f"{where}: unknown metadata fields {sorted(set(meta) - {'name', 'labels'})}")
        name = str(meta.get("name", ""))
        if not NAME_RE.fullmatch(name) or len(name) > 63:
            fail(f"{where}: invalid metadata.name")
        if name in names:
            fail(f"{where}: name also used in {names[name]}")
        names[name] = f
        spec = d.get("spec") or {}
        kind = d.get("kind")
        allowed = SERVICE if kind == "Service" else BACKUP if kind == "Backup" else None
        if allowed is None:
            fail(f"{where}: kind must be Service or Backup")
            continue
        if set(spec) - allowed:
            fail(f"{where}: fields docs/manifests.md does not document for {kind}: {sorted(set(spec) - allowed)}")
        for k, sub in SUB.items():
            if isinstance(spec.get(k), dict) and set(spec[k]) - sub:
                fail(f"{where}: unknown spec.{k} fields {sorted(set(spec[k]) - sub)}")
        if kind == "Service":
            services.add(name)
            if ("command" in spec) == ("unitFile" in spec):
                fail(f"{where}: exactly one of command and unitFile")
            cmd = spec.get("command") or []
            if cmd and not os.path.isabs(cmd[0]):
                fail(f"{where}: command[0] {cmd[0]!r} should be an absolute path")
            for a in cmd + (spec.get("validate") or []):
                if str(a).startswith("~") or "$" in str(a):
                    fail(f"{where}: argument {a!r}: arguments are passed verbatim (no ~ or $ expansion)")
            for p in [spec.get("unitFile"), spec.get("workingDirectory")] + list(spec.get("configFiles") or []):
                if p and not os.path.exists(resolve(p)):
                    fail(f"{where}: path {p!r} does not exist (resolved {resolve(p)})")
            for a in spec.get("after") or []:
                afters.append((where, a))
        else:
            src = spec.get("prometheus") or spec.get("grafana") or {}
            if ("prometheus" in spec) == ("grafana" in spec):
                fail(f"{where}: exactly one of prometheus and grafana")
            if "service" in src:
                afters.append((where, src["service"]))
for where, a in afters:
    if a not in services:
        fail(f"{where}: refers to Service {a!r}, which no manifest defines")
ok(f"manifests: {n_docs} documents, {len(services)} Services, {n_docs - len(services)} Backups")

with open(out_path, "w") as fh:
    for e in exprs:
        fh.write(json.dumps(e) + "\n")
print(f"    {len(exprs)} PromQL expressions extracted")
sys.exit(1 if fails else 0)
PY
then
    ok "static checks"
else
    fail "static checks (see FAIL lines above)"
fi

# --------------------------------------------------------------------------
# Every dashboard expression (variables substituted) as a recording rule, so
# promtool parses it offline too, with the rule files' PromQL parser.
log "promtool check rules on the dashboards' expressions"
if [[ -s "$TMP/exprs.jsonl" ]] && python3 - "$TMP/exprs.jsonl" "$TMP/dashboard-exprs.yml" <<'PY'
import json, sys, yaml
exprs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rules = [{"record": f"dashboard:expr_{i}", "expr": e["expr"]}
         for i, e in enumerate(x for x in exprs if x.get("grafana"))]
with open(sys.argv[2], "w") as fh:
    yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, fh, width=1 << 20)
print(f"    {len(rules)} dashboard expressions as recording rules")
sys.exit(0 if rules else 1)
PY
then
    if out=$(promtool check rules "$TMP/dashboard-exprs.yml" 2>&1); then
        ok "dashboard expressions parse ($(grep -o '[0-9]* rules found' <<<"$out"))"
    else
        # Name each failing expression by its panel.
        printf '%s\n' "$out" >&2
        python3 - "$TMP/exprs.jsonl" "$out" <<'PY' >&2
import json, re, sys
bad = set(int(n) for n in re.findall(r'"dashboard:expr_(\d+)"', sys.argv[2]))
grafana = [x for x in (json.loads(l) for l in open(sys.argv[1]) if l.strip()) if x.get("grafana")]
for i, e in enumerate(grafana):
    if i in bad:
        print(f"    FAIL: {e['source']}: {e['expr']}")
PY
        fail "promtool check rules on the dashboards' expressions"
    fi
else
    fail "no dashboard expressions extracted"
fi

# --------------------------------------------------------------------------
log "systemd-analyze --user verify ${UNIT_FILES[*]}"
rt="${XDG_RUNTIME_DIR:-}"
if [[ -z "$rt" || ! -d "$rt" ]]; then rt="$TMP/runtime"; mkdir -m 700 -p "$rt"; fi
for u in "${UNIT_FILES[@]}"; do
    out=$(XDG_RUNTIME_DIR="$rt" systemd-analyze --user verify "$u" 2>&1) && rc=0 || rc=$?
    # Tolerate only "binary not installed" for binaries that really are absent.
    bad=""
    while IFS= read -r line; do
        [[ -n "$line" ]] || continue
        if [[ "$line" =~ Command\ (/[^ ]+)\ is\ not\ executable ]] && [[ ! -e "${BASH_REMATCH[1]}" ]]; then
            continue
        fi
        bad+="$line"$'\n'
    done <<<"$out"
    if [[ -z "$bad" ]]; then
        ok "$u"
    else
        printf '%s\n' "$bad" >&2; fail "systemd-analyze --user verify $u (rc=$rc)"
    fi
done

# --------------------------------------------------------------------------
if [[ -z "$PROM_URL" ]]; then
    command -v "$PROMETHEUS_BIN" >/dev/null 2>&1 || die "$PROMETHEUS_BIN not found; pass a Prometheus URL or install prometheus"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    PROM_URL="http://127.0.0.1:$port"
    # Minimal config: no scraping, no alerting; loads the real rule files so a
    # live server accepts them too.
    {
        echo "global: {evaluation_interval: 1m}"
        echo "rule_files:"
        for f in "${RULE_FILES[@]}"; do printf '  - %s\n' "$ROOT/$f"; done
    } >"$TMP/prometheus.yml"
    log "starting temporary Prometheus on $PROM_URL (data in $TMP/data)"
    "$PROMETHEUS_BIN" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/data" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
    PROM_PID=$!
    ready=0
    for _ in $(seq 1 $((WAIT_SECS * 5))); do
        if ! kill -0 "$PROM_PID" 2>/dev/null; then break; fi
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/-/ready", timeout=1)' "$PROM_URL" 2>/dev/null; then
            ready=1; break
        fi
        sleep 0.2
    done
    if [[ $ready -ne 1 ]]; then
        tail -n 20 "$TMP/prometheus.log" >&2 || true
        die "temporary Prometheus did not become ready within ${WAIT_SECS}s"
    fi
    ok "temporary Prometheus ready (pid $PROM_PID)"
fi

log "parsing PromQL expressions via $PROM_URL/api/v1/query"
if python3 -u - "$PROM_URL" "$TMP/exprs.jsonl" <<'PY'
import json, sys, urllib.error, urllib.parse, urllib.request
base, path = sys.argv[1].rstrip("/"), sys.argv[2]
exprs = [json.loads(l) for l in open(path) if l.strip()]
bad = 0
for e in exprs:
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": e["expr"]})
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            body = json.load(r)
    except urllib.error.HTTPError as err:
        try:
            body = json.load(err)
        except ValueError:
            body = {"status": "error", "errorType": f"http {err.code}", "error": err.reason}
    except (urllib.error.URLError, OSError) as err:
        print(f"    FAIL: cannot reach {base}: {err}", file=sys.stderr)
        sys.exit(2)
    if body.get("status") != "success":
        bad += 1
        kind = "parse error" if body.get("errorType") == "bad_data" else body.get("errorType")
        print(f"    FAIL: {e['source']}: {kind}: {body.get('error')}\n          expr: {e['expr']}", file=sys.stderr)
print(f"    {len(exprs) - bad}/{len(exprs)} expressions parse")
sys.exit(1 if bad else 0)
PY
then
    ok "PromQL expressions"
else
    fail "PromQL expressions (see FAIL lines above)"
fi

if [[ -n "$PROM_PID" ]]; then
    # The live server loaded the rule files too: compare group counts.
    if n=$(python3 -c 'import json, sys, urllib.request
d = json.load(urllib.request.urlopen(sys.argv[1] + "/api/v1/rules", timeout=10))
print(len(d["data"]["groups"]))' "$PROM_URL"); then
        want=$(promtool check rules "${RULE_FILES[@]}" >/dev/null 2>&1 && python3 -c 'import sys
import re
print(sum(len(re.findall(r"^\s*- name:", open(f).read(), re.M)) for f in sys.argv[1:]))' "${RULE_FILES[@]}")
        if [[ "$n" == "$want" ]]; then ok "live Prometheus loaded $n rule groups"; else fail "live Prometheus loaded $n rule groups, files define $want"; fi
    else
        fail "could not list rules from $PROM_URL"
    fi
fi

# --------------------------------------------------------------------------
echo
if [[ $failures -gt 0 ]]; then
    echo "check-deploy: FAILED — $failures of $checks checks failed" >&2
    exit 1
fi
echo "check-deploy: OK — $checks checks passed"
