#!/usr/bin/env bash
# Checks the deployment files: docker-compose.yml with docker-compose's own
# parser (`config`, which needs no Docker engine), the Kubernetes manifests
# against the API schemas (PyPI kubernetes-validate, offline), and, for
# both, that they use the worker the way it works: every `faaslet serve`
# flag they pass exists, workers point at the Redis service with --state and
# advertise a reachable address, and probes hit /ping on the HTTP port.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="$ROOT/target/deploy-check"
mkdir -p "$OUT"

if ! command -v docker-compose >/dev/null 2>&1; then
    echo "deploy: docker-compose not found (apt-get install docker-compose)" >&2; exit 2
fi
docker-compose -f "$HERE/docker-compose.yml" config -q
echo "deploy: docker-compose.yml parses"

export PYTHONPATH="$OUT/pylib${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    python3 -m pip install --quiet --target "$OUT/pylib" kubernetes-validate==1.31.0 \
        || { echo "deploy: cannot install kubernetes-validate" >&2; exit 2; }
fi
python3 -m kubernetes_validate --strict --kubernetes-version 1.31.0 "$HERE"/k8s/*.yaml
echo "deploy: Kubernetes manifests match the 1.31 schemas"

FAASLET="${FAASLET:-$ROOT/target/debug/faaslet}"
[ -x "$FAASLET" ] || (cd "$ROOT" && cargo build -q -p faaslet-cli)
"$FAASLET" serve --help >"$OUT/serve-help.txt"
python3 - "$HERE" "$OUT/serve-help.txt" <<'PY'
import sys, yaml, re
here, help_file = sys.argv[1], sys.argv[2]
flags = set(re.findall(r"(--[a-z][a-z-]*)", open(help_file).read()))
problems = []

def check_args(where, args, redis_url):
    for a in args:
        if a.startswith("--") and a not in flags:
            problems.append(f"{where}: faaslet serve has no flag {a}")
    if "--state" not in args or args[args.index("--state") + 1] != redis_url:
        problems.append(f"{where}: --state {redis_url} missing")
    if "--advertise" not in args:
        problems.append(f"{where}: --advertise missing (0.0.0.0 is not an address others can reach)")

compose = yaml.safe_load(open(f"{here}/docker-compose.yml"))
services = compose["services"]
if "redis" not in services:
    problems.append("compose: no redis service")
workers = [n for n in services if n.startswith("worker")]
if not workers:
    problems.append("compose: no workers")
for n in workers:
    s = services[n]
    check_args(f"compose {n}", s["command"], "redis://redis:6379")
    adv = s["command"][s["command"].index("--advertise") + 1]
    if adv != f"{n}:8080":
        problems.append(f"compose {n}: advertises {adv}, not {n}:8080")

docs = [d for f in ("redis.yaml", "worker.yaml") for d in yaml.safe_load_all(open(f"{here}/k8s/{f}")) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
redis_svc = by.get(("Service", "faaslet-redis"))
if not redis_svc or redis_svc["spec"]["ports"][0]["port"] != 6379:
    problems.append("k8s: no faaslet-redis Service on 6379")
dep = by.get(("Deployment", "faaslet-worker"))
if not dep:
    problems.append("k8s: no faaslet-worker Deployment")
else:
    c = dep["spec"]["template"]["spec"]["containers"][0]
    check_args("k8s worker", c["args"], "redis://faaslet-redis:6379")
    ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
    if ports.get("http") != 8080:
        problems.append("k8s worker: no http port 8080 (the image listens on 0.0.0.0:8080)")
    for probe in ("readinessProbe", "livenessProbe"):
        g = c.get(probe, {}).get("httpGet", {})
        if g.get("path") != "/ping" or g.get("port") not in ("http", 8080):
            problems.append(f"k8s worker: {probe} is not GET /ping on the http port")
    if not any(e["name"] == "POD_IP" for e in c.get("env", [])):
        problems.append("k8s worker: POD_IP is not set for --advertise")
    svc = by.get(("Service", "faaslet"))
    if not svc or svc["spec"]["selector"] != dep["spec"]["selector"]["matchLabels"]:
        problems.append("k8s: the faaslet Service does not select the workers")
for p in problems:
    print("deploy:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "deploy: the files use faaslet serve as it works"
