//! Writes the prost messages of jaeger.api_v2 into tracegate-model and the
//! tonic CollectorService client and server into the pipeline's jaeger
//! receiver, which refer to the model's messages by path (the model crate
//! stays free of I/O).
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = proto_dir.join("../..");
    let files = protox::compile(["model.proto", "collector.proto"], [&proto_dir])?;

    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .out_dir(repo.join("crates/tracegate-model/src/jaeger"))
        .compile_fds(files.clone())?;

    tonic_prost_build::configure()
        .build_transport(false)
        .extern_path(".jaeger.api_v2", "::tracegate_model::jaeger::proto")
        .out_dir(repo.join("crates/tracegate-pipeline/src/receiver/jaeger"))
        .compile_fds(files)?;
    Ok(())
}
