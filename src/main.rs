//! `serviceradar-flow-collector`: receives NetFlow v5/v9/IPFIX and sFlow v5, decodes
//! each record into a `FlowMessage`, and hands it to the configured sink.

mod config;

fn main() {}
