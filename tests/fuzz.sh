#!/usr/bin/env bash
# Bounded libFuzzer run of the decoders' fuzz targets (decode/fuzz): installs cargo-fuzz
# when missing, seeds the corpus from the shared router captures, builds the targets
# (AddressSanitizer, debug assertions and overflow checks on) and runs each one for
# FUZZ_SECONDS. Prints per target the runs executed, exec/s, coverage and corpus size;
# exits non-zero when any target crashed (the input is kept under
# decode/fuzz/artifacts/<target>/, see TESTING.md "Fuzzing").
#
#   FUZZ_SECONDS=60          seconds of fuzzing per target
#   FUZZ_TARGETS="a b"       targets to run (default: every target of decode/fuzz)
#   FUZZ_SANITIZER=address   address | none (default: address when it builds, else none)
#   PCAPS_DIR=../shared/pcaps  captures the corpus is seeded from
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-netflow_session netflow_single sflow_session}
pcaps=${PCAPS_DIR:-$root/../shared/pcaps}
fuzz_dir=$root/decode/fuzz
# The stable toolchain builds libFuzzer's -Z flags (sanitizer, coverage) with this.
export RUSTC_BOOTSTRAP=1
started=$(date +%s)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
cargo fuzz --version

(cd "$fuzz_dir" && cargo fmt --check)

echo "seeding the corpus from $pcaps"
# Not --locked: decode/fuzz/Cargo.lock follows flow-decode's dependencies as they change.
cargo run --quiet --manifest-path "$fuzz_dir/Cargo.toml" -p flow-decode-fuzz-seed -- \
  "$pcaps" "$fuzz_dir/corpus"
# Regression inputs (decode/tests/fuzz_regressions/<target>/) join their target's corpus.
for target in $targets; do
  regressions=$root/decode/tests/fuzz_regressions/$target
  if [ -d "$regressions" ]; then cp "$regressions"/* "$fuzz_dir/corpus/$target/"; fi
done

cd "$root/decode"
sanitizer=${FUZZ_SANITIZER:-}
if [ -z "$sanitizer" ]; then
  if cargo fuzz build -a --sanitizer address; then
    sanitizer=address
  else
    echo "AddressSanitizer build failed on $(rustc -V); fuzzing without a sanitizer"
    sanitizer=none
  fi
fi
cargo fuzz build -a --sanitizer "$sanitizer"
built=$(date +%s)
echo "install, seed and build took $((built - started)) s (sanitizer: $sanitizer)"

# One of libFuzzer's final figures (-print_final_stats) from the log.
figure() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
failed=()
for target in $targets; do
  log=$fuzz_dir/artifacts/$target.log
  mkdir -p "$fuzz_dir/artifacts"
  echo "== fuzz $target for ${seconds}s"
  status=0
  cargo fuzz run -a --sanitizer "$sanitizer" "$target" "$fuzz_dir/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  coverage=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [^ ]+).*/\1/')
  echo "$target: runs $(figure number_of_executed_units), exec/s $(figure average_exec_per_sec)," \
    "new units $(figure new_units_added), peak rss $(figure peak_rss_mb) MB, $coverage," \
    "corpus files $(find "$fuzz_dir/corpus/$target" -type f | wc -l)"
  if [ "$status" -ne 0 ]; then
    echo "$target: FAILED (exit $status); the last lines of $log:"
    tail -n 60 "$log"
    failed+=("$target")
  fi
done

echo "fuzzing took $(($(date +%s) - started)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that crashed: ${failed[*]} (inputs under decode/fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: ${targets// /, } ran ${seconds}s each without a crash"
