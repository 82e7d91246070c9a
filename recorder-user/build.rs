//! Builds the eBPF programs (`recorder-ebpf`) for `bpfel-unknown-none` and
//! leaves the object in OUT_DIR for `include_bytes!`.
//!
//! Needs what `cargo xtask setup` installs: the rust-src component and a
//! bpf-linker built against this toolchain's LLVM.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root").to_path_buf();
    let ebpf = root.join("recorder-ebpf");
    for p in [
        "recorder-ebpf/src",
        "recorder-ebpf/Cargo.toml",
        "recorder-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=UNIPLAY_TOOLS");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    // bpf-linker lives where `cargo xtask setup` put it.
    let tools = env::var_os("UNIPLAY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cache/uniplay/tools")
        });
    let mut path = vec![tools.join("bin")];
    path.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    let path = env::join_paths(path).expect("PATH");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out.join("ebpf-target");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--manifest-path")
        .arg(ebpf.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PATH", path)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("failed to run cargo for the eBPF programs");
    if !status.success() {
        panic!(
            "building the eBPF programs failed ({status}); if bpf-linker or rust-src is missing, run `cargo xtask setup`"
        );
    }
    let obj = target_dir.join("bpfel-unknown-none/release/recorder");
    std::fs::copy(&obj, out.join("recorder.bpf.o")).expect("copy eBPF object");
}
