use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Examples:
  uniplay record -o ls.trace -- ls -l /tmp     record a command from its exec
  uniplay record -o web.trace --pid 4242       record a running process tree until it exits or Ctrl-C
  uniplay inspect ls.trace                     what was recorded (--events: strace-like listing)
  uniplay replay ls.trace                      re-run every epoch from its checkpoint and verify it

Exit status:
  record -- CMD   the command's own status (128+N if it died of signal N; 127 not found, 126 not executable)
  0  success          1  unexpected failure     2  bad usage
  3  events were lost (unless --allow-loss)
  4  this machine cannot record here (missing capability, BTF or tracepoint)
  5  bad input (no such PID, output exists, damaged trace)
  6  replay: an epoch diverged or was skipped";

/// Record a Linux process tree with eBPF (every syscall with the bytes it
/// returned, context switches, signals, forks, execs and exits, with
/// checkpoints), look inside the trace, and replay it epoch by epoch.
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
    /// Summarise a trace, list its events (strace-like or JSON) or export it for Perfetto.
    #[command(after_help = INSPECT_AFTER_HELP)]
    Inspect(InspectArgs),
    /// Re-run a recording from its checkpoints, epoch by epoch (in parallel), and verify each.
    #[command(after_help = REPLAY_HELP)]
    Replay(ReplayArgs),
}

const REPLAY_HELP: &str = "\
Each epoch is restored from its checkpoint into a fresh process, run with its threads
serialised on one core (syscalls emulated from the log, or executed when they shape the
process itself), and compared with the next checkpoint: registers and memory.
Processes forked during an epoch are created for real and replayed from their birth;
an exec ends its process's epoch (every exec starts a checkpoint while recording).
Threads take turns at syscalls and, where the recording has them (record's default
for multithreaded processes), at the C library's lock calls, in the recorded order.
Nothing is done to the host: files, sockets and other processes are never touched.

Examples:
  uniplay replay ls.trace                 replay every epoch, one per core
  uniplay replay ls.trace --epoch 3       replay epoch 3 only
  uniplay replay ls.trace --json | jq .verified

Exit status: 0 every epoch verified and outputs and exit status match;
6 an epoch diverged or was skipped; 5 bad input (no trace, no checkpoints).";

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Trace directory (as written by `uniplay record -o DIR`).
    pub trace: PathBuf,

    /// Epochs replayed at once, each pinned to its own core [default: the number of cores].
    #[arg(short, long, value_name = "J")]
    pub jobs: Option<usize>,

    /// Replay only this epoch.
    #[arg(long, value_name = "N")]
    pub epoch: Option<u32>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
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
    /// A thread whose output fills its ring past a quarter is stopped until
    /// the recorder has drained it, and one output bigger than half the
    /// free space is read from the stopped thread's memory instead (not
    /// with --no-checkpoints, which can then lose events); bigger rings
    /// mean fewer such stops.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    pub ring_size: u32,

    /// Size of the lifecycle ring (forks, execs, exits, signals).
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_size, hide = true)]
    pub lifecycle_ring_size: u32,

    /// Epoch length: every DURATION the whole tree is stopped for a moment
    /// and checkpointed (e.g. 100ms, 1s); every exec is checkpointed too.
    /// Replay starts from checkpoints.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_epoch)]
    pub epoch: std::time::Duration,

    /// Also cut an epoch after N recorded events.
    #[arg(long, value_name = "N")]
    pub epoch_events: Option<u64>,

    /// Flight recorder: keep only the newest K epochs (events and
    /// checkpoints) on disk, deleting older ones as recording goes on.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_epochs: Option<u32>,

    /// How checkpoints capture memory. `auto`: processes with at least
    /// 16 MiB resident, and those checkpointed before in their current image
    /// (a shell running commands), have their memory write-protected
    /// (userfaultfd, asynchronous mode) so a checkpoint copies only the pages
    /// written since the previous one while the target is stopped, instead
    /// of forking a copy-on-write snapshot (whose page-table copy stops the
    /// target about 16 ms per GiB resident); others are forked. `always`:
    /// every process. `never`: fork every time. Tracking costs about 1.5 µs
    /// on the first write to each page per epoch.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = TrackWritesArg::Auto)]
    pub track_writes: TrackWritesArg,

    /// How long a thread caught running its own code at a checkpoint may run
    /// on to its next syscall, to be cut at that syscall's entry (the rest
    /// of the target stays stopped meanwhile). Replay finds such a cut by
    /// running to the syscall; a cut in the middle of a loop it must find
    /// with a breakpoint hit on every iteration, or may not find at all.
    /// When that thread is the only one running (every other one blocked in
    /// a syscall), nothing needs to wait for it: the checkpoint is put off,
    /// with everything running, until its next syscall (at most 10 s; the
    /// epoch is that much longer). `0`: cut every thread where it is caught
    /// (the shortest stop), never put off.
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_cut_wait)]
    pub cut_at_syscall: std::time::Duration,

    /// Do not record the order in which threads enter the C library's lock,
    /// condition-variable, rwlock, barrier and semaphore functions. By
    /// default a process gets uprobes on them once it has a second thread
    /// (a trap: about 10 µs per call on a VM; single-threaded processes pay
    /// nothing; before Linux 6.6, attaching and detaching them costs the
    /// kernel about 0.1 s per probe, see the README), and
    /// replay runs critical sections in that order: threads that take a
    /// lock without contention leave no syscall to order them by.
    #[arg(long)]
    pub no_sync_order: bool,

    /// Record with eBPF only: no ptrace supervision, no checkpoints, no vDSO
    /// patching (time reads through the vDSO are then not recorded). For a
    /// target that is already being traced, or when checkpoints are not needed.
    #[arg(long, conflicts_with_all = ["epoch_events", "keep_epochs", "track_writes", "cut_at_syscall", "no_sync_order"])]
    pub no_checkpoints: bool,

    /// The command to launch and record, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `record --track-writes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrackWritesArg {
    Auto,
    Always,
    Never,
}

const INSPECT_AFTER_HELP: &str = "\
Examples:
  uniplay inspect ls.trace                          what was recorded: state, command, duration,
                                                    top syscalls, bytes read/written, switches, losses
  uniplay inspect ls.trace --summary --json         the same as one JSON object
  uniplay inspect ls.trace --events                 every event, strace-like
  uniplay inspect ls.trace --events --tid 4243 --syscall read --syscall write
  uniplay inspect ls.trace --events --from 0.5 --to 0.75 --no-switches
  uniplay inspect ls.trace --json | jq 'select(.kind == \"exec\")'
  uniplay inspect ls.trace --perfetto ls.json       then open ls.json in https://ui.perfetto.dev

Times in the listing are seconds since the trace's first event; --from/--to use the same scale.
A listing of a damaged trace shows every intact event, then the damage on stderr (exit 5);
the summary reports the damage and exits 0.

Exit status:
  0  success    1  unexpected failure    2  bad usage (e.g. unknown --syscall name)
  5  bad input (no trace there, another format version, damaged events in a listing)";

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Trace directory (as written by `uniplay record -o DIR`).
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,

    /// List every event, one per line, strace-like (with --json: JSON lines).
    #[arg(short, long, conflicts_with = "summary")]
    pub events: bool,

    /// Print the summary (the default); with --json, as one JSON object.
    #[arg(short, long)]
    pub summary: bool,

    /// JSON output: one object per event, or with --summary one summary object.
    #[arg(long)]
    pub json: bool,

    /// Write a Chrome trace-event JSON file for ui.perfetto.dev or
    /// chrome://tracing: syscalls, running/blocked time, signals, epochs.
    /// The filters below apply to it too.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["events", "summary", "json"])]
    pub perfetto: Option<PathBuf>,

    /// Only events of this thread (repeatable); switches match either side.
    #[arg(long = "tid", value_name = "TID")]
    pub tids: Vec<u32>,

    /// Only these syscalls (name like `read` or number; repeatable). Process
    /// lifecycle events and signals are still shown; context switches are not.
    #[arg(long = "syscall", value_name = "NAME")]
    pub syscalls: Vec<String>,

    /// Only events at or after SECS (seconds since the first event).
    #[arg(long, value_name = "SECS")]
    pub from: Option<f64>,

    /// Only events before SECS (seconds since the first event).
    #[arg(long, value_name = "SECS")]
    pub to: Option<f64>,

    /// Leave out context switches.
    #[arg(long)]
    pub no_switches: bool,

    /// Show checkpoint EPOCH in detail: processes, threads (registers,
    /// syscall, signal mask), memory map, fds, signal handlers, pages
    /// stored (with --json, as one JSON object).
    #[arg(long, value_name = "EPOCH", conflicts_with_all = ["events", "summary", "perfetto"])]
    pub checkpoint: Option<u32>,

    /// Rows in the summary's syscall table.
    #[arg(long, value_name = "N", default_value_t = 15)]
    pub top: usize,
}

/// Parses `250ms`, `1s`, `1.5s`, `500us` into a duration of at least 1 ms.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 250ms, 1s)"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" | "" => n,
        "us" => n / 1e6,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use us, ms, s, m)")),
    };
    if !(0.0..=86400.0).contains(&secs) {
        return Err(format!("{s}: a duration must be between 0 and 24h"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// `--epoch`: a duration from 1ms to 24h.
pub fn parse_epoch(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_millis(1) {
        return Err(format!("{s}: an epoch must be between 1ms and 24h"));
    }
    Ok(d)
}

/// `--cut-at-syscall`: 0 to 1s (the target stays stopped that long).
pub fn parse_cut_wait(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d > std::time::Duration::from_secs(1) {
        return Err(format!(
            "{s}: at most 1s (the rest of the target is stopped meanwhile)"
        ));
    }
    Ok(d)
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
    fn cli_durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_epoch("0ms").is_err());
        assert_eq!(parse_cut_wait("0"), Ok(Duration::ZERO));
        assert!(parse_cut_wait("2s").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn cli_verifies() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
