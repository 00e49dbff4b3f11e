#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need
# (nats-server, tshark, softflowd, pmacct, nfdump, g++) when missing, then checks formatting
# and lints and runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v nats-server >/dev/null || need_packages+=(nats-server)
command -v tshark >/dev/null || need_packages+=(tshark)
command -v softflowd >/dev/null || need_packages+=(softflowd)
command -v pmacctd >/dev/null || need_packages+=(pmacct)
command -v nfcapd >/dev/null || need_packages+=(nfdump)
# libFuzzer (tests/fuzz.sh) is C++, built by cargo-fuzz with the system compiler.
command -v c++ >/dev/null || need_packages+=(g++)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "installing: ${need_packages[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== chaos (quick)"
CHAOS_MODE=quick bash chaos/run.sh
echo "== fuzz the decoders (bounded)"
FUZZ_SECONDS=${FUZZ_SECONDS:-45} bash tests/fuzz.sh
echo "== chart and packaging tests"
bash tests/helm.sh
