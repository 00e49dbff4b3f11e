//! Generates `flowpb::FlowMessage` from `proto/flow.proto` with protox, so no system
//! `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/flow.proto");
    let descriptors = protox::compile(["proto/flow.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
