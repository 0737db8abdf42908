//! Writes jaeger.api_v2 into one file of tracegate-model: the prost
//! messages, and the tonic CollectorService and SamplingManager clients and
//! servers, which only tests use and which compile only with the model's
//! `grpc-stubs` feature (the model crate itself stays free of I/O).
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = proto_dir.join("../..");
    let files = protox::compile(["model.proto", "collector.proto", "sampling.proto"], [&proto_dir])?;

    let test_only = r#"#[cfg(feature = "grpc-stubs")]"#;
    tonic_prost_build::configure()
        .build_transport(false)
        .client_mod_attribute("jaeger.api_v2", test_only)
        .server_mod_attribute("jaeger.api_v2", test_only)
        .out_dir(repo.join("crates/tracegate-model/src/jaeger"))
        .compile_fds(files)?;
    Ok(())
}
