//! One raw NetFlow v5/v9/IPFIX datagram (the input as is) decoded twice, a second
//! apart, by a fresh `NetflowSession` with the default fuzz settings: the second pass
//! meets the templates the first one learned. The corpus is every UDP payload of the
//! shared captures.
#![no_main]

use flow_decode_fuzz::format::{Frame, SOURCE_PORTS};
use flow_decode_fuzz::{NetflowCase, run_netflow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = |advance_secs| Frame {
        port: SOURCE_PORTS[0],
        expire_first: false,
        advance_secs,
        payload: data,
    };
    run_netflow(&NetflowCase::from_byte(0), &[frame(0), frame(1)], 10);
});
