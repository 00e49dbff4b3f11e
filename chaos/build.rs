//! Points the reused end-to-end harness (`tests/jetstream_support`, `tests/support`) at
//! the collector binary. Cargo gives `CARGO_BIN_EXE_serviceradar-flow-collector` only to
//! the root package's own tests; here it is set to a launcher written into `OUT_DIR`,
//! which starts `<target>/<profile>/serviceradar-flow-collector` (the binary of the same
//! target directory and profile as these tests; `flow_chaos::collector_binary` builds it
//! when missing) — inside a network namespace when its arguments hold
//! `--chaos-netns NAME` (see `flow_chaos::netns`).

use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/[<triple>/]<profile>/build/flow-chaos-<hash>/out.
    let profile_dir = out.ancestors().nth(3).expect("OUT_DIR is inside the target directory");
    let binary = profile_dir.join("serviceradar-flow-collector");
    let launcher = out.join("collector-launcher.sh");
    std::fs::write(&launcher, launcher_script(&binary)).expect("write the collector launcher");
    make_executable(&launcher);
    println!("cargo:rustc-env=CARGO_BIN_EXE_serviceradar-flow-collector={}", launcher.display());
    println!("cargo:rustc-env=CHAOS_COLLECTOR_BIN={}", binary.display());
    println!("cargo:rustc-env=CHAOS_PROFILE_DIR={}", profile_dir.display());
    println!("cargo:rerun-if-changed=build.rs");
}

/// The launcher: `exec`s the binary (same pid, so /proc figures are the collector's),
/// through `ip netns exec NAME` when `--chaos-netns NAME` is among its arguments. The
/// harness clears the environment, so the binary's path is baked in and `ip` is looked
/// up in the usual places.
fn launcher_script(binary: &Path) -> String {
    format!(
        r#"#!/bin/bash
# Written by chaos/build.rs: starts the collector under test for the chaos suite.
bin="{binary}"
netns=""
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--chaos-netns" ]; then netns="$2"; shift 2; continue; fi
  args+=("$1"); shift
done
if [ -n "$netns" ]; then
  for ip in /usr/sbin/ip /sbin/ip /usr/bin/ip /bin/ip; do
    if [ -x "$ip" ]; then exec "$ip" netns exec "$netns" "$bin" "${{args[@]}}"; fi
  done
  echo "collector launcher: no ip(8) to enter network namespace $netns" >&2
  exit 127
fi
exec "$bin" "${{args[@]}}"
"#,
        binary = binary.display()
    )
}

#[cfg(unix)]
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut permissions = std::fs::metadata(path).expect("launcher metadata").permissions();
    permissions.set_mode(0o755);
    std::fs::set_permissions(path, permissions).expect("make the launcher executable");
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) {}
