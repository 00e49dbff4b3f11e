//! The fuzz targets' checks (`decode/fuzz`, see TESTING.md "Fuzzing") as ordinary tests:
//! the fuzz crate's driver (`decode/fuzz/src/lib.rs`, compiled in here) replays
//!
//! - every input under `tests/fuzz_regressions/<target>/`: what a fuzz target once
//!   crashed on, minimised; each is also named in a test below with the report it gives;
//! - every shared capture whole, as a `netflow_session` input, under several settings
//!   bytes (small caps, no pending cache, sampling policies, IPv6 exporter);
//!
//! asserting no panic and every invariant the fuzz targets assert. Compiling the driver
//! here also keeps the fuzz crate, which is outside the workspace, in step with the
//! decoder's API.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz;

mod support;

use std::path::{Path, PathBuf};

use fuzz::format::{self, Frame, SOURCE_PORTS};
use fuzz::{NetflowCase, SflowCase, run_netflow, run_sflow};

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions")
}

/// Runs `input` the way fuzz target `target` does.
fn run_target(target: &str, input: &[u8]) {
    let final_advance = input.last().map_or(0, |b| u64::from(*b));
    match target {
        "netflow_session" => {
            if let Some((settings, frames)) = format::split(input) {
                run_netflow(&NetflowCase::from_byte(settings), &frames, final_advance);
            }
        }
        "sflow_session" => {
            if let Some((settings, frames)) = format::split(input) {
                run_sflow(&SflowCase::from_byte(settings), &frames, final_advance);
            }
        }
        "netflow_single" => {
            let frame = |advance_secs| Frame {
                port: SOURCE_PORTS[0],
                expire_first: false,
                advance_secs,
                payload: input,
            };
            run_netflow(&NetflowCase::from_byte(0), &[frame(0), frame(1)], 10);
        }
        other => panic!("tests/fuzz_regressions/{other}: no such fuzz target"),
    }
}

/// The regression inputs of every target, as (target, file).
fn regression_inputs() -> Vec<(String, PathBuf)> {
    let mut inputs = Vec::new();
    let Ok(targets) = std::fs::read_dir(regressions_dir()) else {
        return inputs;
    };
    for target in targets {
        let target = target.expect("directory entry").path();
        if !target.is_dir() {
            continue;
        }
        let name = target.file_name().and_then(|n| n.to_str()).expect("target name").to_owned();
        for file in std::fs::read_dir(&target).expect("regression directory") {
            inputs.push((name.clone(), file.expect("directory entry").path()));
        }
    }
    inputs.sort();
    inputs
}

#[test]
fn every_regression_input_passes_the_fuzz_checks() {
    for (target, path) in regression_inputs() {
        let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("{target}: {}", path.display());
        run_target(&target, &input);
    }
}

/// Every `*.pcap` under `dir`, sorted.
fn captures(dir: &Path) -> Vec<PathBuf> {
    flow_replay::capture_files(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

#[test]
fn every_capture_passes_the_fuzz_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps");
    let pcaps = captures(&dir);
    assert!(!pcaps.is_empty(), "no pcap under {}", dir.display());
    // Default caps; smallest caps; no pending cache with a default rate; an override
    // with an IPv6 exporter.
    let settings_bytes = [0x00, 0x1B, 0x24, 0xC1];
    for pcap in &pcaps {
        let datagrams = support::capture::udp_datagrams(pcap);
        for settings in settings_bytes {
            for reversed in [false, true] {
                let mut input = vec![settings];
                let mut ordered: Vec<_> = datagrams.iter().collect();
                if reversed {
                    ordered.reverse();
                }
                for datagram in ordered {
                    let port = if datagram.source.ip().is_ipv4() { 0 } else { 1 };
                    format::push_frame(&mut input, port, 1, &datagram.payload);
                }
                input.push(0xff);
                run_target("netflow_session", &input);
            }
        }
    }
}
