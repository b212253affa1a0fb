//! Compiles `proto/*.proto` into Rust with protox (a pure-Rust protobuf
//! compiler) and prost, so building needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut protos = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            protos.push(path);
        }
    }
    // Sorted so the generated code does not depend on directory order.
    protos.sort();

    let fds = protox::compile(&protos, [&dir])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
