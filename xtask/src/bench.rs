//! `cargo xtask bench`: benchmarks against real baselines, printed as
//! Markdown tables on stdout (progress goes to stderr).
//!
//! - `record`: whole-process wall time of workloads run natively, under
//!   `uniplay record`, `strace -f` and `perf trace`; medians over repeated,
//!   interleaved runs.
//! - `format`: trace bytes per event on real recordings next to strace's and
//!   perf trace's output, and the `tracelog` crate's own write and read
//!   throughput on synthetic events.
//! - `checkpoint`: how long a checkpoint stops the target by resident
//!   memory, and the slowdown of a running workload by epoch length.
//! - `replay`: replay time at `--jobs 1` and `--jobs 2` against native.
//! - `threads`: how often the serial replay verifies real multithreaded
//!   programs, and why the other epochs diverge.

mod checkpoint;
mod format;
mod record;
mod replay;
mod threads;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::root;

#[derive(Subcommand, Clone, Copy, Debug)]
pub enum Which {
    /// Recording overhead against native, strace and perf trace.
    Record {
        /// Repetitions per workload (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds a tool may spend on one workload before its remaining
        /// repetitions are skipped (strace and perf trace take minutes on
        /// syscall-heavy workloads); every tool runs at least once.
        #[arg(long, default_value_t = 45.0)]
        budget: f64,
    },
    /// Trace size and read/write speed.
    Format {
        /// Repetitions of the tracelog throughput measurements.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Synthetic events for the tracelog throughput measurements.
        #[arg(long, default_value_t = 5_000_000)]
        events: u64,
    },
    /// Checkpoint stop time by resident memory; slowdown by epoch length.
    Checkpoint {
        /// Repetitions of each slowdown configuration (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Recordings per resident-memory size for the stop times.
        #[arg(long, default_value_t = 3)]
        recordings: usize,
    },
    /// Replay time at --jobs 1 and --jobs 2 against the native run.
    Replay {
        /// Repetitions (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Epochs verified on real multithreaded programs, and why not.
    Threads {
        /// Recordings per program.
        #[arg(long, default_value_t = 3)]
        recordings: usize,
    },
}

pub fn run(which: Which) -> Result<()> {
    if cfg!(debug_assertions) && matches!(which, Which::Format { .. }) {
        // `cargo xtask` is a debug build; tracelog's speed must be measured
        // optimised.
        return reexec_release();
    }
    let started = Instant::now();
    match which {
        Which::Record { runs, budget } => record::run(runs.max(1), budget)?,
        Which::Format { runs, events } => format::run(runs.max(1), events.max(1))?,
        Which::Checkpoint { runs, recordings } => checkpoint::run(runs.max(1), recordings.max(1))?,
        Which::Replay { runs } => replay::run(runs.max(1))?,
        Which::Threads { recordings } => threads::run(recordings.max(1))?,
    }
    println!();
    println!("Total bench time: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Builds xtask in release mode and runs the same command with it.
fn reexec_release() -> Result<()> {
    crate::sh(crate::cargo().args(["build", "--quiet", "--release", "--package", "xtask"]))?;
    let exe = root().join("target/release/xtask");
    let status = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .status()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// `argv` as a shell command line (arguments quoted where needed), with
/// paths shown relative to the workspace root.
fn shell_join(argv: &[String]) -> String {
    let prefix = format!("{}/", root().display());
    let quote = |a: &String| {
        let a = &a.replace(&prefix, "");
        if !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:+@%".contains(&b))
        {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    argv.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// `target/bench`: compiled workloads and scratch output.
fn bench_dir() -> PathBuf {
    root().join("target/bench")
}

fn uniplay() -> PathBuf {
    root().join("target/release/uniplay")
}

/// Compiles `tests/workloads/NAME.c` with `gcc -O2 -pthread` into
/// `target/bench/NAME` (when the source is newer) and returns its path.
fn workload(name: &str) -> Result<PathBuf> {
    let src = root().join("tests/workloads").join(format!("{name}.c"));
    let out = bench_dir().join(name);
    fs::create_dir_all(bench_dir())?;
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if mtime(&out).is_none() || mtime(&out) < mtime(&src) {
        crate::sh(
            Command::new("gcc")
                .args(["-O2", "-pthread", "-Wall", "-o"])
                .arg(&out)
                .arg(&src),
        )?;
    }
    Ok(out)
}

/// Runs `argv` with stdin, stdout and stderr on /dev/null and returns its
/// wall time in seconds; fails on a non-zero exit.
fn time_run(argv: &[String]) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let secs = t.elapsed().as_secs_f64();
    wait_for_detacher();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            err.trim()
        );
    }
    Ok(secs)
}

/// Waits (untimed, at most two minutes) until no `uniplay` process is
/// left: the background process a recording leaves to detach its probes
/// holds the kernel's trace-event lock meanwhile (see the README's
/// Recording), which would slow the start of the next run, whichever tool.
fn wait_for_detacher() {
    let running = || {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == "uniplay")
            })
    };
    let t = Instant::now();
    while running() && t.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `argv` runs successfully; `Err(reason)` with the first line of
/// its error output if not.
fn probe(argv: &[&str]) -> std::result::Result<(), String> {
    match Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
    {
        Err(e) => Err(format!("cannot run {}: {e}", argv[0])),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let line = err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            Err(format!(
                "`{}` failed ({}): {line}",
                argv.join(" "),
                o.status
            ))
        }
    }
}

/// The `n` (2 significant digits) for which `cmd(n)` takes about `target`
/// seconds natively, scaled from the median of 3 runs at `start`.
pub(crate) fn calibrate(start: u64, target: f64, cmd: impl Fn(u64) -> Vec<String>) -> Result<u64> {
    let argv = cmd(start);
    let times = (0..3)
        .map(|_| time_run(&argv))
        .collect::<Result<Vec<_>>>()?;
    let t = median(&times).max(1e-4);
    let n = (start as f64 * target / t).max(10.0);
    let mag = 10f64.powi(n.log10().floor() as i32 - 1);
    let n = ((n / mag).round() * mag) as u64;
    eprintln!(
        "xtask: calibrated {} → {n} ({:.3} s at {start})",
        argv[0], t
    );
    Ok(n)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Total size of the regular files under `path` (or of `path` itself).
fn disk_bytes(path: &Path) -> Result<u64> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(if meta.is_file() { meta.len() } else { 0 });
    }
    let mut sum = 0;
    for e in fs::read_dir(path)? {
        sum += disk_bytes(&e?.path())?;
    }
    Ok(sum)
}

/// What a uniplay trace directory holds, from its `meta.json` and sizes.
#[derive(Debug, Clone, Copy, Default)]
struct TraceStats {
    /// `event_counts` summed.
    events: u64,
    /// `losses.ring_full`: ring-buffer records dropped (a large output spans
    /// several records, so this can exceed the events recorded).
    ring_full: u64,
    /// `losses.incomplete_copies`: outputs not copied in full.
    incomplete: u64,
    /// Sum of the directory's file sizes (including `checkpoints/` and
    /// `files/`).
    bytes: u64,
    /// Sum of the top-level files' sizes: the event log (`meta.json`,
    /// `events.tlf`, `index.tlf`, `blobs.tlf`) without checkpoints and
    /// copied files.
    log_bytes: u64,
}

fn trace_stats(dir: &Path) -> Result<TraceStats> {
    let path = dir.join("meta.json");
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let meta: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let events = meta["event_counts"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    let losses = &meta["losses"];
    let ring_full = losses["ring_full"].as_u64().unwrap_or(0);
    let incomplete = losses["incomplete_copies"].as_u64().unwrap_or(0);
    Ok(TraceStats {
        events,
        ring_full,
        incomplete,
        bytes: disk_bytes(dir)?,
        log_bytes: top_level_bytes(dir)?,
    })
}

/// Sum of the sizes of the regular files directly in `dir`.
fn top_level_bytes(dir: &Path) -> Result<u64> {
    let mut sum = 0;
    for e in fs::read_dir(dir)? {
        let m = e?.metadata()?;
        if m.is_file() {
            sum += m.len();
        }
    }
    Ok(sum)
}

/// `uniplay record` of `cmd` into `out` (replaced).
fn uniplay_argv(out: &Path, cmd: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        uniplay().display().to_string(),
        "record".into(),
        "--quiet".into(),
        "--allow-loss".into(),
        "-o".into(),
        out.display().to_string(),
        "--force".into(),
        "--".into(),
    ];
    v.extend(cmd.iter().cloned());
    v
}

fn strace_argv(out: &str, cmd: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vec!["strace".into(), "-f".into(), "-o".into(), out.into()];
    v.extend(cmd.iter().cloned());
    v
}

fn perf_argv(out: &str, cmd: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "perf".into(),
        "trace".into(),
        "-o".into(),
        out.into(),
        "--".into(),
    ];
    v.extend(cmd.iter().cloned());
    v
}

/// Why `perf trace` cannot be used here, if it cannot.
fn perf_trace_unusable() -> Option<String> {
    probe(&["perf", "trace", "-o", "/dev/null", "--", "true"]).err()
}

fn strace_unusable() -> Option<String> {
    probe(&["strace", "-f", "-o", "/dev/null", "true"]).err()
}

/// Number of lines in a file (events in strace's and perf trace's text).
fn count_lines(path: &Path) -> Result<u64> {
    let data = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    Ok(data.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// Output size of one recording of the same workload by each tool.
#[derive(Debug, Clone)]
struct SizeRow {
    uniplay: TraceStats,
    /// (bytes, lines) or why not.
    strace: std::result::Result<(u64, u64), String>,
    perf: std::result::Result<(u64, u64), String>,
}

/// Records `cmd` once with uniplay (into `trace`), strace and perf trace
/// (into files next to it) and measures their outputs.
fn measure_sizes(cmd: &[String], trace: &Path) -> Result<SizeRow> {
    time_run(&uniplay_argv(trace, cmd))?;
    let uniplay = trace_stats(trace)?;
    let text_out =
        |tool: &str, unusable: Option<String>, argv: fn(&str, &[String]) -> Vec<String>| {
            if let Some(why) = unusable {
                return Err(why);
            }
            let file = bench_dir().join(format!("{tool}.out"));
            let r = time_run(&argv(&file.display().to_string(), cmd))
                .and_then(|_| Ok((disk_bytes(&file)?, count_lines(&file)?)))
                .map_err(|e| format!("{e:#}"));
            let _ = fs::remove_file(&file);
            r
        };
    let strace = text_out("strace", strace_unusable(), strace_argv);
    let perf = text_out("perf-trace", perf_trace_unusable(), perf_argv);
    Ok(SizeRow {
        uniplay,
        strace,
        perf,
    })
}

fn per_event(bytes: u64, events: u64) -> String {
    if events == 0 {
        "n/a".into()
    } else {
        format!("{:.2}", bytes as f64 / events as f64)
    }
}

/// `B/event (bytes / events)` for a text tool's output.
fn text_cell(r: &std::result::Result<(u64, u64), String>) -> String {
    match r {
        Ok((bytes, lines)) => format!(
            "{} ({} B / {} lines)",
            per_event(*bytes, *lines),
            bytes,
            lines
        ),
        Err(why) => format!("n/a ({why})"),
    }
}

/// `uname -r` and the CPU count.
fn machine() -> String {
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("Linux {kernel}, nproc {cpus}")
}

/// The command line this bench was started with.
fn invocation() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// Argument vector from string slices.
fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}
