//! Generates the double's gRPC server from the `.proto` files that the
//! `kurrentdb` client crate ships, so the double speaks exactly the protocol
//! of the client hookledger is built with. The files are found through
//! `cargo metadata` (the client's source in cargo's registry or vendor
//! directory) and compiled with protox, a protobuf compiler in pure Rust, so
//! no `protoc` is needed on the machine.

fn main() {
    #[cfg(feature = "enabled")]
    generate();
}

#[cfg(feature = "enabled")]
fn generate() {
    use std::path::PathBuf;

    let protos = client_protos();
    let files = ["streams.proto", "serverfeatures.proto"].map(|f| protos.join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&protos]).unwrap_or_else(|e| {
        panic!(
            "cannot compile the kurrentdb client's .proto files in {}: {e}",
            protos.display()
        )
    });
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&out)
        .compile_fds(descriptors)
        .expect("tonic-build generates the double's server");
}

/// The `protos` directory of the `kurrentdb` package in this workspace's
/// dependency graph.
#[cfg(feature = "enabled")]
fn client_protos() -> std::path::PathBuf {
    use std::path::Path;
    use std::process::Command;

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let metadata = |offline: bool| {
        let mut command = Command::new(&cargo);
        command
            .args(["metadata", "--format-version", "1", "--locked"])
            .args(["--features", "kurrentdb-double/enabled"])
            .args(["--filter-platform", &target])
            .current_dir(&manifest_dir);
        if offline {
            command.arg("--offline");
        }
        command.output().expect("cargo metadata runs")
    };
    // Offline first: everything the build needs is downloaded already, unless
    // metadata wants a package this build does not (then it may fetch it).
    let mut output = metadata(true);
    if !output.status.success() {
        output = metadata(false);
    }
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let clients: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("a package list")
        .iter()
        .filter(|p| p["name"] == "kurrentdb")
        .filter_map(|p| p["manifest_path"].as_str())
        .collect();
    let [manifest] = clients.as_slice() else {
        panic!("expected exactly one kurrentdb package in the workspace, found {clients:?}");
    };
    let protos = Path::new(manifest)
        .parent()
        .expect("a manifest in a directory")
        .join("protos");
    assert!(
        protos.join("streams.proto").is_file(),
        "the kurrentdb package at {} ships no protos/streams.proto",
        protos.display()
    );
    protos
}
