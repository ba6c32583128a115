//! Compiles `ringvault/v1/*.proto` with protox (pure Rust, no `protoc`) and tonic-prost-build.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "ringvault/v1/coordinator.proto",
        "ringvault/v1/registry.proto",
        "ringvault/v1/worker.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    // The descriptor set gRPC reflection serves (grpcurl lists and calls without .proto files).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("ringvault_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
