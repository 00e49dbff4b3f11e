//! Shared helpers of the decoder's integration tests: capture reading (through
//! `flow-replay`), the NetGauze reference comparison, and NetFlow/IPFIX datagram builders.

pub mod capture;
pub mod netflow;
pub mod reference;
pub mod rng;
