#!/usr/bin/env bash
# The chaos suite: the real collector and a real nats-server under injected faults
# (TESTING.md, "Chaos suite"). Prints one verdict line per scenario and a summary.
#
#   bash chaos/run.sh                      # every scenario, quick mode (CI)
#   bash chaos/run.sh nats_hung            # one scenario (any test-name filter; several allowed)
#   CHAOS_MODE=full bash chaos/run.sh      # longer faults, more traffic
#   CHAOS_DEFECTS=1 bash chaos/run.sh      # also the known-defect scenarios (defect_*)
#
# Scenarios needing root and `ip netns` print "SKIPPED (...)" elsewhere. The whole
# output of the run (collector panics injected on purpose included) goes to
# ${CARGO_TARGET_DIR:-target}/chaos-<mode>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${CHAOS_MODE:-quick}
case "$mode" in
  quick | full) ;;
  *) echo "CHAOS_MODE must be quick or full, not $mode" >&2; exit 2 ;;
esac
export CHAOS_MODE=$mode

# nats-server for every scenario; iptables for the network namespace ones (skipped
# without it, as without root).
need=()
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
if [ "$(id -u)" -eq 0 ]; then
  command -v iptables >/dev/null || need+=(iptables)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
    echo "could not install ${need[*]}: the scenarios needing them fail or skip"
fi

# Namespaces left by a run that was killed (chaos-<pid>-<n> of a pid now gone).
if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null; then
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^chaos-' || true); do
    pid=${ns#chaos-}
    pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then ip netns del "$ns" 2>/dev/null || true; fi
  done
fi

echo "== chaos suite ($mode): building the collector and the scenarios"
cargo build --quiet --bin serviceradar-flow-collector
cargo test --quiet -p flow-chaos --tests --no-run

skip=()
[ "${CHAOS_DEFECTS:-0}" = 1 ] || skip=(--skip defect_)
log="${CARGO_TARGET_DIR:-target}/chaos-$mode.log"
mkdir -p "$(dirname "$log")"
started=$(date +%s)
set +e
cargo test --quiet -p flow-chaos --tests -- --ignored --test-threads=1 --nocapture \
  "${skip[@]}" "$@" 2>&1 |
  tee "$log" |
  grep --line-buffered -oE 'chaos [a-z0-9_]+: (PASS|FAIL|SKIPPED).*' |
  awk '!seen[$0]++ { print; fflush() }'
status=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - started))

count() { { grep -oE "chaos [a-z0-9_]+: $1" "$log" || true; } | sort -u | wc -l; }
passed=$(count PASS)
failed=$(count FAIL)
skipped=$(count SKIPPED)
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # A scenario died before its verdict (a harness time-out): show why.
  grep -E "panicked at|^test .* FAILED|^error" "$log" | head -20 || true
  failed=1
fi
echo "chaos ($mode mode) took ${elapsed}s; full output: $log"
echo "chaos: $passed passed, $failed failed, $skipped skipped"
exit "$status"
