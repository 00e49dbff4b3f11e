//! A sequence of datagrams, all fed in order to one `NetflowSession` (so templates,
//! pending data, restarts and sequence tracking carry across datagrams), under the
//! small caps the settings byte selects. Input format: `flow_decode_fuzz::format`;
//! settings byte: `NetflowCase`. The last input byte is how many seconds after the
//! last datagram `expire` is called.
#![no_main]

use flow_decode_fuzz::{NetflowCase, format, run_netflow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((settings, frames)) = format::split(data) else {
        return;
    };
    let final_advance = data.last().map_or(0, |b| u64::from(*b));
    run_netflow(&NetflowCase::from_byte(settings), &frames, final_advance);
});
