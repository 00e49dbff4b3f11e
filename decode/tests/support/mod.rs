//! Shared helpers of the decoder's integration tests: pcap reading and the NetGauze
//! reference comparison.

pub mod pcap;
pub mod reference;
