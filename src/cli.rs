use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Examples:
  uniplay record -o ls.trace -- ls -l /tmp     record a command from its exec
  uniplay record -o web.trace --pid 4242       record a running process tree until it exits or Ctrl-C

Exit status:
  record -- CMD   the command's own status (128+N if it died of signal N)
  0  success          1  unexpected failure     2  bad usage
  3  events were lost (unless --allow-loss)
  4  this machine cannot record here (missing capability, BTF or tracepoint)
  5  bad input (no such PID, output exists, damaged trace)";

/// Record a Linux process tree with eBPF: every syscall with the bytes it
/// returned, context switches, signals, forks, execs and exits.
#[derive(Debug, Parser)]
#[command(name = "uniplay", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record a command (from its exec) or a running process tree into a trace directory.
    #[command(after_help = AFTER_HELP)]
    Record(RecordArgs),
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Trace directory to create.
    #[arg(short, long, value_name = "DIR", default_value = "uniplay.trace")]
    pub output: PathBuf,

    /// Record this running process, its threads and all its descendants
    /// until it exits or uniplay gets Ctrl-C / SIGTERM.
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Replace DIR if it exists.
    #[arg(short, long)]
    pub force: bool,

    /// No live status line.
    #[arg(short, long)]
    pub quiet: bool,

    /// Exit 0 (or with the command's status) even if events were lost.
    /// Losses are still counted in the trace and printed.
    #[arg(long)]
    pub allow_loss: bool,

    /// Size of each per-CPU data ring buffer (power of two; K, M, G suffixes).
    /// Bigger rings absorb longer bursts before anything is lost.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    pub ring_size: u32,

    /// Size of the lifecycle ring (forks, execs, exits, signals).
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_size, hide = true)]
    pub lifecycle_ring_size: u32,

    /// The command to launch and record, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Parses `4096`, `64K`, `16M`, `1G` into a power-of-two byte count of at
/// least one page.
pub fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try 4096, 64K, 16M)"))?;
    let bytes = n.checked_mul(mult).ok_or("size too large")?;
    if bytes < 4096 || !bytes.is_power_of_two() || bytes > 1 << 30 {
        return Err(format!(
            "{s}: a ring size must be a power of two between 4K and 1G"
        ));
    }
    Ok(bytes as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert!(parse_size("3000").is_err());
        assert!(parse_size("12K").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn cli_verifies() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
