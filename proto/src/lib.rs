//! The `FlowMessage` protobuf of the wire contract, generated at build time from
//! `proto/flow.proto`, and its one-JSON-object-per-line rendering used by the
//! embedded stdout sink and the operator's tail tool.

#![allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/flowpb.rs"));
}

pub mod json;

pub use generated::FlowMessage;
pub use generated::flow_message::{FlowType, LayerStack};
