//! `cargo xtask`: the project's own setup, build, run, test and bench
//! commands. On a fresh machine it installs what the build and the tests
//! need (rust-src, a bpf-linker built against this toolchain's LLVM, Debian
//! packages), caches it under `~/.cache/uniplay`, and says what it does.

mod bench;
mod setup;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "uniplay's build, test and benchmark tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent, cached).
    Setup,
    /// Build the release binary at target/release/uniplay.
    Build,
    /// Build, then run uniplay with the given arguments, e.g.
    /// `cargo xtask run -- record -o trace -- ls`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Everything CI checks: rustfmt, clippy (-D warnings), all tests.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks against real baselines; prints Markdown tables.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::run()?;
            build_release()
        }
        Task::Run { args } => {
            setup::run()?;
            build_release()?;
            let status = Command::new(root().join("target/release/uniplay"))
                .args(&args)
                .status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { args } => {
            setup::run()?;
            test(&args)
        }
        Task::Bench { which } => {
            setup::run()?;
            build_release()?;
            bench::run(which)
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// Runs a command, echoing it, failing on a non-zero status.
pub fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn build_release() -> Result<()> {
    sh(cargo().args(["build", "--release", "--bin", "uniplay"]))
}

fn test(extra: &[String]) -> Result<()> {
    sh(cargo().args(["fmt", "--all", "--check"]))?;
    sh(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root().join("recorder-ebpf"))
            .args(["fmt", "--check"]),
    )?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Release mode: the recording tests drive real workloads.
    sh(cargo()
        .args(["test", "--workspace", "--release"])
        .args(extra))
}
