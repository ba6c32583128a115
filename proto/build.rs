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
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
