#!/usr/bin/env bash
# Chart tests, offline and without a cluster or a helm binary:
#   - lint and render helm/serviceradar-flow-collector with its default values and with
#     every examples/*.yaml (helm-python-sdk: Helm v4's own Go SDK, bundled as a library);
#   - validate every rendered object against the Kubernetes schemas (kubernetes-validate,
#     strict) and the ServiceMonitor against prometheus-operator's schema (npm);
#   - assert on the rendered objects, on values mistakes failing with a schema message, and
#     on the rendered JSON config passing the collector's own `--check-config`.
#
# Installs its tools on first use: a Python venv (tests/helm/requirements.txt, pinned) and
# an npm tree (tests/helm/servicemonitor, `npm ci`) under target/helm-tests/, rebuilt when
# their pins change. Builds the collector with cargo unless FLOW_COLLECTOR_BIN names one.
# Extra arguments go to pytest (e.g. `bash tests/helm.sh -k schema -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

work="$repo/target/helm-tests"
mkdir -p "$work"

# Debian tools: systemd-analyze (verifies packaging/flow-collector.service), openssl (test
# certificates), node and npm (the ServiceMonitor schema), python3 with venv (the tools).
need_packages=()
command -v python3 >/dev/null || need_packages+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_packages+=(python3-venv)
command -v systemd-analyze >/dev/null || need_packages+=(systemd)
command -v openssl >/dev/null || need_packages+=(openssl)
command -v npm >/dev/null || need_packages+=(nodejs npm)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "installing: ${need_packages[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# Python tools, pinned.
venv="$work/venv"
req="$repo/tests/helm/requirements.txt"
req_stamp="$venv/.requirements.sha256"
req_sum=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$req_stamp" 2>/dev/null)" != "$req_sum" ]; then
  echo "== installing chart test tools into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$req"
  "$venv/bin/python" -m pip check
  echo "$req_sum" >"$req_stamp"
fi

# prometheus-operator's ServiceMonitor schema, pinned by package-lock.json.
node_dir="$work/servicemonitor"
lock="$repo/tests/helm/servicemonitor/package-lock.json"
lock_stamp="$node_dir/.lock.sha256"
lock_sum=$(sha256sum "$lock" | cut -d' ' -f1)
if [ ! -d "$node_dir/node_modules" ] || [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_sum" ]; then
  echo "== installing the ServiceMonitor schema into $node_dir"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp "$repo/tests/helm/servicemonitor/package.json" "$lock" "$node_dir/"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" >"$lock_stamp"
fi
export SERVICEMONITOR_NODE_MODULES="$node_dir/node_modules"

# The collector binary, for --check-config on the rendered configs.
if [ -z "${FLOW_COLLECTOR_BIN:-}" ]; then
  echo "== cargo build --bin serviceradar-flow-collector"
  cargo build --locked --quiet --bin serviceradar-flow-collector
  FLOW_COLLECTOR_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/serviceradar-flow-collector"
fi
export FLOW_COLLECTOR_BIN

# No __pycache__ or .pytest_cache in the work tree.
export PYTHONDONTWRITEBYTECODE=1
echo "== chart tests (pytest tests/helm)"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q "$repo/tests/helm" "$@"
