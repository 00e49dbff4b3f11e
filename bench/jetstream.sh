#!/usr/bin/env bash
# Throughput into JetStream with acks, one FlowMessage per NATS message (the default
# framing): starts its own nats-server (free port, temporary store), runs the release
# collector publishing into it, replays the shared router captures looped N times as fast
# as the socket takes them, and prints flows/s and messages/s from the collector's own
# final counters; then, for comparison in the same run, the acked-publish rate of a
# minimal async-nats publisher (publish/examples/publish_rate.rs). Figures only: it
# asserts nothing (bench/run.sh runs the full set of benchmarks of issue #9).
# Usage: bash bench/jetstream.sh [LOOPS]   (default 1500)
set -euo pipefail
cd "$(dirname "$0")/.."
loops=${1:-1500}
shared=${SHARED_DIR:-../shared}
command -v nats-server >/dev/null || { echo "nats-server is required (apt-get install nats-server)"; exit 1; }

cargo build --release --locked -q --bin serviceradar-flow-collector
cargo build --release --locked -q -p flow-replay --bin flow-replay
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=$(free_port)
udp_port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/store" >"$work/nats.log" 2>&1 &
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/"$nats_port") 2>/dev/null && break; sleep 0.1; done

cat >"$work/config.json" <<JSON
{ "nats_url": "nats://127.0.0.1:$nats_port", "stream_name": "bench",
  "listeners": [ { "protocol": "netflow", "listen_addr": "127.0.0.1:$udp_port", "buffer_size": 33554432 } ] }
JSON
RUST_LOG=info NO_COLOR=1 "$bin"/serviceradar-flow-collector --config "$work/config.json" \
  >/dev/null 2>"$work/collector.log" &
collector=$!
for _ in $(seq 100); do grep -q "JetStream stream ready" "$work/collector.log" && break; sleep 0.1; done

start=$(date +%s.%N)
"$bin"/flow-replay --to "127.0.0.1:$udp_port" --source-per-exporter --loop "$loops" \
  "$shared"/pcaps/*/*.pcap >"$work/replay.log" 2>&1
kill -TERM "$collector"
wait "$collector" || true
end=$(date +%s.%N)

line=$(grep "Collector stopped" "$work/collector.log" | tail -1)
field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$line"; }
published=$(field flows_published)
received=$(field datagrams_received)
sent=$(sed -n 's/^total: \([0-9]*\) datagrams.*/\1/p' "$work/replay.log")
python3 - "$start" "$end" "$published" "$received" "$sent" <<'PY'
import sys
start, end, published, received, sent = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
secs = end - start
print(f"collector -> JetStream (acked, 1 FlowMessage per message): {published} flows in {secs:.2f} s "
      f"= {published/secs:,.0f} flows/s = {published/secs:,.0f} messages/s "
      f"(datagrams sent {sent}, received {received})")
PY
echo "minimal async-nats publisher, same machine, same run:"
cargo run --release --locked -q -p flow-publish --example publish_rate
