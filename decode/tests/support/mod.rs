//! Shared helpers of the decoder's integration tests: pcap reading, the NetGauze
//! reference comparison, and NetFlow/IPFIX datagram builders.

pub mod netflow;
pub mod pcap;
pub mod reference;
