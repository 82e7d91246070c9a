//! `cargo xtask bench`: filled in by the benchmark work.

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Clone, Copy, Debug)]
pub enum Which {
    /// Recording overhead against native, strace and perf trace.
    Record,
    /// Trace size and read/write speed.
    Format,
}

pub fn run(which: Which) -> Result<()> {
    anyhow::bail!("bench {which:?} is not written yet")
}
