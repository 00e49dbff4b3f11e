#!/usr/bin/env bash
# The benchmark command of issue #9: builds the release binaries, starts nats-server,
# the collector and the comparison programs (nfcapd, a minimal async-nats publisher),
# drives them with flow-loadgen and prints one table: offered and achieved flows/s,
# loss %, CPU, peak RSS and latency percentiles per target, plus the ratios the issue
# asks for. Figures only: nothing is asserted. See TESTING.md, "Benchmarks".
#
# Usage: bash bench/run.sh [--quick] [--only decode,jetstream,memory,reuseport]
#                          [--json-out FILE] [--keep] [bench/bench.py options]
# --quick takes about 3 minutes, the default about 10-15 (after the build).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nats-server >/dev/null || need+=(nats-server)
command -v nfcapd >/dev/null || need+=(nfdump)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing ${need[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
    else
        echo "missing ${need[*]}: install them (apt-get install ${need[*]}); rows needing them are skipped" >&2
    fi
fi

target_dir=${CARGO_TARGET_DIR:-target}
echo "building release binaries into $target_dir ..." >&2
cargo build --release --locked -q --bin serviceradar-flow-collector
cargo build --release --locked -q -p flow-replay --bin flow-loadgen
cargo build --release --locked -q -p flow-publish --example minimal_publisher

# flow-loadgen binds one socket per exporter: 10000 exporters need 10000 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/bench.py --bin-dir "$target_dir/release" "$@"
