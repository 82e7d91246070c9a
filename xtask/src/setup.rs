//! `cargo xtask setup`: everything a fresh machine needs, installed once and
//! cached. Each step checks before it acts, so a second run takes a second.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::sh;

/// bpf-linker's version and the LLVM feature matching the toolchain's LLVM
/// (rustc 1.95 ships LLVM 22; bpf-linker must link the same major).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and benchmarks use: real programs to record and
/// baselines to compare with.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("strace", "strace"),
    ("perf", "linux-perf"),
    ("sqlite3", "sqlite3"),
    ("zstd", "zstd"),
    ("xz", "xz-utils"),
    ("bzip2", "bzip2"),
    ("bc", "bc"),
    ("make", "make"),
    ("gcc", "gcc"),
    ("/usr/bin/python3", "python3"),
    ("ip", "iproute2"),
    ("ps", "procps"),
];

pub fn cache_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/uniplay")
}

pub fn run() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    Ok(())
}

fn rust_src() -> Result<()> {
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    if Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core")
        .exists()
    {
        return Ok(());
    }
    eprintln!("xtask: installing the rust-src component (needed to build core for BPF)");
    sh(Command::new("rustup").args(["component", "add", "rust-src"]))
}

fn bpf_linker() -> Result<()> {
    let root = cache_dir().join("tools");
    let bin = root.join("bin/bpf-linker");
    if let Ok(v) = output(Command::new(&bin).arg("--version")) {
        if v.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against this toolchain's LLVM (about a minute, once)");
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    let so = std::fs::read_dir(sysroot.join("lib"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .context("the Rust toolchain ships no libLLVM.so.*-rust-* to link bpf-linker against")?;
    let major = so
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libLLVM.so."))
        .and_then(|n| n.split('.').next())
        .context("cannot read the LLVM version")?
        .to_string();
    let prefix = cache_dir().join("llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    for name in [
        "libLLVM.so".to_string(),
        so.file_name().unwrap().to_string_lossy().into_owned(),
    ] {
        let link = prefix.join("lib").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link)?;
    }
    sh(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .arg("--root")
            .arg(&root),
    )
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing programs from Debian packages {missing:?}: install them (apt-get install {})",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing Debian packages {missing:?}");
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

fn on_path(bin: &str) -> bool {
    if bin.starts_with('/') {
        return Path::new(bin).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("command failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
