//! A sequence of sFlow datagrams, all fed in order to one `SflowSession` (sequence
//! tracking and restarts carry across datagrams), with the sample cap and sampling
//! policy the settings byte selects. Input format: `flow_decode_fuzz::format`;
//! settings byte: `SflowCase`.
#![no_main]

use flow_decode_fuzz::{SflowCase, format, run_sflow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((settings, frames)) = format::split(data) else {
        return;
    };
    let final_advance = data.last().map_or(0, |b| u64::from(*b));
    run_sflow(&SflowCase::from_byte(settings), &frames, final_advance);
});
