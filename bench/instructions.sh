#!/usr/bin/env bash
# Instructions per decoded record, counted by callgrind: a decode figure this host's
# noise does not move, for comparing two versions of the decoders. Builds the decode
# benchmark (decode/benches/decode.rs) and runs its instruction-count mode, collecting
# only inside its decode loop (the ring of the load generator's full datagrams, after
# their templates). Needs valgrind (apt-get install valgrind). See TESTING.md.
#
# Usage: bash bench/instructions.sh [v5] [v9] [ipfix] [sflow]   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 1; }

bin=$(cargo bench -p flow-decode --bench decode --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "decode" and m.get("executable"):
        print(m["executable"])')
[[ -x $bin ]] || { echo "could not build the decode benchmark" >&2; exit 1; }

printf '%-6s %14s %12s %18s\n' protocol instructions records "instructions/record"
protocols=("$@")
((${#protocols[@]})) || protocols=(v5 v9 ipfix sflow)
for p in "${protocols[@]}"; do
    out=$(DECODE_INSTRUCTIONS=$p valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --toggle-collect='decode::decode_rounds' "$bin" 2>&1)
    instructions=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' <<<"$out")
    records=$(sed -n 's/^[a-z0-9]* records \([0-9]*\)$/\1/p' <<<"$out")
    [[ -n $instructions && -n $records ]] || { echo "$out" >&2; exit 1; }
    awk -v p="$p" -v i="$instructions" -v r="$records" \
        'BEGIN { printf "%-6s %14d %12d %18.0f\n", p, i, r, i / r }'
done
