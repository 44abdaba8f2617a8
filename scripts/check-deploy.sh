#!/usr/bin/env bash
# Validates deploy/: Prometheus rules, rule unit tests and scrape configuration (promtool),
# the PromQL of the Grafana dashboard, JSON and YAML syntax, the TOML inside the Kubernetes
# ConfigMap, and the systemd unit. Exits non-zero if any check failed.
#
# Tools used when present, with a clear SKIPPED line when not:
#   promtool         Debian: apt-get install prometheus (set CHECK_DEPLOY_REQUIRE_PROMTOOL=1
#                    to fail instead of skipping when it is missing, as CI does)
#   python3          JSON (json.tool), YAML (PyYAML, installed with pip if missing), TOML
#   systemd-analyze  systemd unit syntax
#
# The metric names used by the dashboard and the alerts are checked against
# src/metrics.rs by the Rust test tests/deploy.rs (cargo test --test deploy).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

failures=0
skipped=0
pass() { echo "ok      $*"; }
fail() {
    echo "FAILED  $*" >&2
    failures=$((failures + 1))
}
skip() {
    echo "SKIPPED $*"
    skipped=$((skipped + 1))
}
# Runs a command, showing its output indented; records a failure if it exits non-zero.
check() {
    local what=$1
    shift
    local out
    if out=$("$@" 2>&1); then
        pass "$what"
        [[ -z $out ]] || sed 's/^/        /' <<<"$out"
    else
        fail "$what"
        [[ -z $out ]] || sed 's/^/        /' <<<"$out" >&2
    fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mapfile -t json_files < <(find deploy -type f -name '*.json' | sort)
mapfile -t yaml_files < <(find deploy -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)

# --- JSON -----------------------------------------------------------------------------------
if command -v python3 >/dev/null 2>&1; then
    for f in "${json_files[@]}"; do
        check "JSON $f" python3 -m json.tool "$f" /dev/null
    done
elif command -v jq >/dev/null 2>&1; then
    for f in "${json_files[@]}"; do
        check "JSON $f" jq empty "$f"
    done
else
    skip "JSON syntax: neither python3 nor jq found"
fi

# --- YAML -----------------------------------------------------------------------------------
have_yaml=0
if command -v python3 >/dev/null 2>&1; then
    if python3 -c 'import yaml' >/dev/null 2>&1; then
        have_yaml=1
    else
        echo "PyYAML missing; installing it with pip"
        if python3 -m pip install --quiet --disable-pip-version-check pyyaml >/dev/null 2>&1 &&
            python3 -c 'import yaml' >/dev/null 2>&1; then
            have_yaml=1
        fi
    fi
fi
if [[ $have_yaml -eq 1 ]]; then
    for f in "${yaml_files[@]}"; do
        check "YAML $f" python3 -c '
import sys, yaml
with open(sys.argv[1]) as fh:
    docs = [d for d in yaml.safe_load_all(fh) if d is not None]
if not docs:
    sys.exit(sys.argv[1] + ": no YAML document")
' "$f"
    done
else
    skip "YAML syntax: python3 with PyYAML not available (pip install pyyaml)"
fi

# --- TOML inside the ConfigMap ----------------------------------------------------------------
if [[ $have_yaml -eq 1 ]] && python3 -c 'import tomllib' >/dev/null 2>&1; then
    # Valid TOML, and the same keys and values as config/genq.toml except the in-cluster
    # overrides (no database.url: it comes from the Secret; http.bind and http.public_bind
    # on all interfaces, 9800 internal, 9801 public).
    check "TOML genq.toml in deploy/kubernetes/configmap.yaml (matches config/genq.toml)" python3 -c '
import sys, tomllib, yaml
doc = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
cluster = tomllib.loads(doc["data"]["genq.toml"])
base = tomllib.load(open("config/genq.toml", "rb"))
if "url" in cluster.get("database", {}):
    sys.exit("database.url must come from Secret genq (DATABASE_URL), not the ConfigMap")
if cluster.get("http", {}).get("bind") != "0.0.0.0:9800":
    sys.exit("http.bind must be 0.0.0.0:9800 in the cluster")
if cluster.get("http", {}).get("public_bind") != "0.0.0.0:9801":
    sys.exit("http.public_bind must be 0.0.0.0:9801 in the cluster (the port behind the Ingress)")
base.get("database", {}).pop("url", None)
base.setdefault("http", {})["bind"] = "0.0.0.0:9800"
base["http"]["public_bind"] = "0.0.0.0:9801"
def diff(a, b, path=""):
    for k in sorted(set(a) | set(b)):
        p = path + "." + k if path else k
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            yield from diff(a[k], b[k], p)
        elif a.get(k, "<missing>") != b.get(k, "<missing>"):
            yield "%s: config/genq.toml %r, configmap %r" % (p, a.get(k, "<missing>"), b.get(k, "<missing>"))
problems = list(diff(base, cluster))
if problems:
    sys.exit("configmap.yaml drifted from config/genq.toml (update both):\n" + "\n".join(problems))
'
else
    skip "TOML in configmap.yaml: needs python3 >= 3.11 (tomllib) and PyYAML"
fi

# --- systemd ----------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify wants an existing ExecStart binary: check a copy that runs /bin/true.
    sed 's#^ExecStart=/usr/local/bin/genq#ExecStart=/bin/true#' deploy/systemd/genq.service \
        >"$tmp/genq.service"
    check "systemd-analyze verify deploy/systemd/genq.service" \
        systemd-analyze verify "$tmp/genq.service"
else
    skip "systemd unit: systemd-analyze not found"
fi

# --- Prometheus -------------------------------------------------------------------------------
if command -v promtool >/dev/null 2>&1; then
    echo "promtool: $(promtool --version 2>&1 | head -n 1)"
    check "promtool check rules deploy/prometheus/alerts.yml" \
        promtool check rules deploy/prometheus/alerts.yml
    check "promtool test rules deploy/prometheus/alerts.test.yml" \
        promtool test rules deploy/prometheus/alerts.test.yml

    # scrape.yml is a complete minimal Prometheus configuration. Debian's promtool is built
    # without Kubernetes service discovery; then check a copy whose kubernetes_sd_configs
    # are replaced by a static target (the relabelling is still checked) and say so.
    scrape=deploy/prometheus/scrape.yml
    if out=$(promtool check config "$scrape" 2>&1); then
        pass "promtool check config $scrape"
        sed 's/^/        /' <<<"$out"
    elif grep -q 'kubernetes_sd_configs not found' <<<"$out" && [[ $have_yaml -eq 1 ]]; then
        echo "        this promtool lacks Kubernetes service discovery; checking $scrape with"
        echo "        kubernetes_sd_configs replaced by a static target"
        python3 -c '
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
for job in cfg.get("scrape_configs", []):
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": ["kubernetes-sd-placeholder:9800"]}]
yaml.safe_dump(cfg, open(sys.argv[2], "w"), sort_keys=False)
' "$scrape" "$tmp/scrape-static.yml"
        check "promtool check config $scrape (kubernetes_sd_configs only YAML-checked)" \
            promtool check config "$tmp/scrape-static.yml"
        scrape=$tmp/scrape-static.yml
    else
        fail "promtool check config $scrape"
        sed 's/^/        /' <<<"$out" >&2
    fi

    if [[ $have_yaml -eq 1 ]]; then
        # The scrape configuration and the alert rules together, as a real prometheus.yml.
        python3 -c '
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["rule_files"] = [sys.argv[2]]
yaml.safe_dump(cfg, open(sys.argv[3], "w"), sort_keys=False)
' "$scrape" "$PWD/deploy/prometheus/alerts.yml" "$tmp/prometheus.yml"
        check "promtool check config (scrape.yml + rule_files: alerts.yml)" \
            promtool check config "$tmp/prometheus.yml"
    else
        skip "combined prometheus.yml check: needs PyYAML"
    fi

    # Every PromQL query of every Grafana dashboard, as recording rules, so promtool parses
    # them. Grafana variables get stand-in values.
    if command -v python3 >/dev/null 2>&1; then
        for f in deploy/grafana/*.json; do
            python3 -c '
import json, sys
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
exprs = [t["expr"] for p in panels(json.load(open(sys.argv[1]))["panels"])
         for t in p.get("targets", []) if t.get("expr")]
subs = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
        "${queue}": ".*", "$queue": ".*"}
out = ["groups:", "  - name: dashboard", "    rules:"]
for i, e in enumerate(exprs):
    for k, v in subs.items():
        e = e.replace(k, v)
    out += ["      - record: dashboard_expr_%d" % i, "        expr: %s" % json.dumps(e)]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
' "$f" "$tmp/dashboard-rules.yml"
            check "PromQL of $f (promtool check rules)" \
                promtool check rules "$tmp/dashboard-rules.yml"
        done
    fi
else
    msg="promtool not found (Debian: apt-get install prometheus): rules, rule tests, scrape config and dashboard PromQL not checked"
    if [[ ${CHECK_DEPLOY_REQUIRE_PROMTOOL:-0} == 1 ]]; then
        fail "$msg"
    else
        skip "$msg"
    fi
fi

echo
if [[ $failures -gt 0 ]]; then
    echo "check-deploy: $failures check(s) FAILED, $skipped skipped" >&2
    exit 1
fi
echo "check-deploy: all checks passed, $skipped skipped"
