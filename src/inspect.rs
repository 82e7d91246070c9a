//! `uniplay inspect`: look inside a trace without replaying it.
//!
//! - default / `--summary`: what was recorded (state, command, duration,
//!   processes, top syscalls, bytes, switches, signals, losses, damage);
//!   `--summary --json` prints the same as one JSON object;
//! - `--events`: one strace-like line per event; `--json`: one JSON object per
//!   event;
//! - `--checkpoint EPOCH`: one checkpoint in detail (processes, threads,
//!   memory map, fds, signal handlers); with `--json` as one JSON object;
//! - `--perfetto FILE`: a Chrome trace-event file for ui.perfetto.dev.
//!
//! Listings print every intact event of a damaged trace and then report the
//! damage (exit 5); the summary reports it and exits 0.

mod checkpoints;
mod format;
mod json;
mod perfetto;
mod summary;

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use tracelog::{Event, EventKind, Trace};

use crate::{cli::InspectArgs, exit};

const USAGE: i32 = 2;

pub fn run(args: InspectArgs) -> i32 {
    match inspect(args) {
        Ok(()) => 0,
        // `uniplay inspect --events T | head` is not an error.
        Err(Error::Write { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            exit::report(&e);
            e.exit_code()
        }
    }
}

/// Why `inspect` failed.
#[derive(Debug)]
enum Error {
    Usage(String),
    Open {
        path: PathBuf,
        source: tracelog::Error,
    },
    /// The events after an intact prefix are unreadable.
    Damaged {
        source: tracelog::Error,
    },
    Write {
        what: String,
        source: io::Error,
    },
    /// `--checkpoint EPOCH` names no checkpoint of the trace.
    NoCheckpoint {
        epoch: u32,
        available: Vec<u32>,
        first_epoch: u32,
    },
    /// The checkpoint exists but cannot be read.
    Checkpoint {
        epoch: u32,
        source: tracelog::Error,
    },
}

impl Error {
    fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => USAGE,
            Error::Open {
                source: tracelog::Error::Io { .. },
                ..
            } => exit::FAILURE,
            Error::Checkpoint {
                source: tracelog::Error::Io { .. },
                ..
            } => exit::FAILURE,
            Error::Open { .. }
            | Error::Damaged { .. }
            | Error::NoCheckpoint { .. }
            | Error::Checkpoint { .. } => exit::BAD_INPUT,
            Error::Write { .. } => exit::FAILURE,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(msg) => f.write_str(msg),
            Error::Open { path, .. } => write!(f, "cannot read trace {}", path.display()),
            Error::Damaged { .. } => f.write_str("only the events before the damage were listed"),
            Error::Write { what, .. } => write!(f, "cannot write {what}"),
            Error::NoCheckpoint {
                epoch,
                available,
                first_epoch,
            } => {
                write!(f, "no checkpoint for epoch {epoch}; ")?;
                if available.is_empty() {
                    f.write_str("the trace has no checkpoints")?;
                } else {
                    write!(
                        f,
                        "checkpoints exist for epochs {}",
                        checkpoints::ranges_text(available)
                    )?;
                }
                if epoch < first_epoch {
                    write!(
                        f,
                        " (epochs before {first_epoch} were deleted by the flight recorder)"
                    )?;
                }
                Ok(())
            }
            Error::Checkpoint { epoch, .. } => write!(f, "cannot read checkpoint {epoch}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Usage(_) | Error::NoCheckpoint { .. } => None,
            Error::Open { source, .. }
            | Error::Damaged { source }
            | Error::Checkpoint { source, .. } => Some(source),
            Error::Write { source, .. } => Some(source),
        }
    }
}

fn stdout_error(source: io::Error) -> Error {
    Error::Write {
        what: "to standard output".into(),
        source,
    }
}

fn inspect(args: InspectArgs) -> Result<(), Error> {
    let filtering = !args.tids.is_empty()
        || !args.syscalls.is_empty()
        || args.from.is_some()
        || args.to.is_some()
        || args.no_switches;
    let listing = args.checkpoint.is_none()
        && (args.events || (args.json && !args.summary) || args.perfetto.is_some());
    if filtering && args.checkpoint.is_some() {
        return Err(Error::Usage(
            "--tid, --syscall, --from, --to and --no-switches select events; \
             --checkpoint shows a whole checkpoint"
                .into(),
        ));
    }
    if filtering && !listing {
        return Err(Error::Usage(
            "--tid, --syscall, --from, --to and --no-switches select events for --events, \
             --json or --perfetto; the summary always covers the whole trace"
                .into(),
        ));
    }
    // Check the cheap things before opening the trace.
    let syscalls = parse_syscalls(&args.syscalls)?;
    for (flag, v) in [("--from", args.from), ("--to", args.to)] {
        if v.is_some_and(|s| !s.is_finite()) {
            return Err(Error::Usage(format!("{flag} needs a number of seconds")));
        }
    }
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from >= to {
            return Err(Error::Usage(format!(
                "--from {from} is not before --to {to}: nothing to show"
            )));
        }
    }

    let trace = Trace::open(&args.trace).map_err(|source| Error::Open {
        path: args.trace.clone(),
        source,
    })?;
    let base = first_time(&trace);
    let sel = Select {
        tids: args.tids.iter().copied().collect(),
        syscalls,
        no_switches: args.no_switches,
        window: window(base, args.from, args.to),
    };

    if let Some(epoch) = args.checkpoint {
        return show_checkpoint(&trace, epoch, args.json, base);
    }
    if let Some(path) = &args.perfetto {
        return perfetto::write(&trace, &sel, path);
    }
    if !listing {
        let s = summary::collect(&trace);
        let out = io::stdout().lock();
        let mut out = BufWriter::new(out);
        if args.json {
            summary::write_json(&mut out, &trace, &s)
        } else {
            summary::write_text(&mut out, &trace, &s, args.top)
        }
        .and_then(|()| out.flush())
        .map_err(stdout_error)?;
        return Ok(());
    }

    let mut out = BufWriter::new(io::stdout().lock());
    let mut line = String::new();
    let mut damage = None;
    for item in sel.events(&trace) {
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                damage = Some(e);
                break;
            }
        };
        if !sel.keep(&ev) {
            continue;
        }
        line.clear();
        if args.json {
            json::event_line(&mut line, &ev);
        } else {
            format::event_line(&mut line, &ev, base);
        }
        line.push('\n');
        out.write_all(line.as_bytes()).map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)?;
    match damage {
        Some(source) => Err(Error::Damaged { source }),
        None => Ok(()),
    }
}

/// `--checkpoint EPOCH`.
fn show_checkpoint(trace: &Trace, epoch: u32, json: bool, base: u64) -> Result<(), Error> {
    let first_epoch = trace.meta().first_epoch;
    let unknown = || Error::NoCheckpoint {
        epoch,
        available: trace.checkpoints().iter().map(|c| c.epoch).collect(),
        first_epoch,
    };
    if epoch < first_epoch {
        return Err(unknown());
    }
    let cp = match trace.checkpoint(epoch) {
        Ok(cp) => cp,
        Err(tracelog::Error::NoCheckpoint { .. }) => return Err(unknown()),
        Err(source) => return Err(Error::Checkpoint { epoch, source }),
    };
    let mut out = BufWriter::new(io::stdout().lock());
    if json {
        checkpoints::write_detail_json(&mut out, trace, &cp)
    } else {
        checkpoints::write_detail_text(&mut out, trace, &cp, base)
    }
    .and_then(|()| out.flush())
    .map_err(stdout_error)
}

/// Resolves `--syscall` names (or numbers).
fn parse_syscalls(names: &[String]) -> Result<Option<HashSet<u32>>, Error> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut set = HashSet::new();
    for name in names {
        let nr = recorder_common::number(name)
            .or_else(|| name.parse::<u32>().ok())
            .or_else(|| name.strip_prefix("syscall_")?.parse::<u32>().ok());
        match nr {
            Some(nr) => set.insert(nr),
            None => {
                let hint = similar_syscalls(name);
                let hint = if hint.is_empty() {
                    String::new()
                } else {
                    format!(" (did you mean {}?)", hint.join(", "))
                };
                return Err(Error::Usage(format!(
                    "--syscall {name}: unknown syscall name{hint}; use x86-64 names such as \
                     read, openat, clone3, or a syscall number"
                )));
            }
        };
    }
    Ok(Some(set))
}

/// Known syscall names containing `name` (or contained in it), at most five.
fn similar_syscalls(name: &str) -> Vec<&'static str> {
    if name.len() < 3 {
        return Vec::new();
    }
    (0..recorder_common::names::SYSCALL_COUNT as u32)
        .filter_map(recorder_common::name)
        .filter(|n| n.contains(name) || (n.len() >= 4 && name.contains(n)))
        .take(5)
        .collect()
}

/// Time of the trace's first event: the zero of all relative times.
fn first_time(trace: &Trace) -> u64 {
    match trace.events().next() {
        Some(Ok(ev)) => ev.time_ns,
        _ => trace.meta().start_mono_ns,
    }
}

/// `--from`/`--to` (seconds after `base`) as an absolute `[from, to)` range.
fn window(base: u64, from: Option<f64>, to: Option<f64>) -> Option<(u64, u64)> {
    if from.is_none() && to.is_none() {
        return None;
    }
    let abs = |secs: f64| -> u64 {
        let ns = i128::from(base) + (secs * 1e9).round() as i128;
        ns.clamp(0, i128::from(u64::MAX)) as u64
    };
    Some((from.map_or(0, abs), to.map_or(u64::MAX, abs)))
}

/// Which events a listing shows.
#[derive(Debug, Default)]
struct Select {
    tids: HashSet<u32>,
    syscalls: Option<HashSet<u32>>,
    no_switches: bool,
    window: Option<(u64, u64)>,
}

impl Select {
    fn events<'a>(&self, trace: &'a Trace) -> tracelog::Events<'a> {
        match self.window {
            Some((from, to)) => trace.events_in_time(from, to),
            None => trace.events(),
        }
    }

    fn keep(&self, ev: &Event) -> bool {
        if !self.tids.is_empty() {
            let hit = match &ev.kind {
                EventKind::Switch {
                    prev_tid, next_tid, ..
                } => self.tids.contains(prev_tid) || self.tids.contains(next_tid),
                _ => self.tids.contains(&ev.tid),
            };
            if !hit {
                return false;
            }
        }
        match &ev.kind {
            EventKind::Syscall(sc) => self.syscalls.as_ref().is_none_or(|s| s.contains(&sc.nr)),
            EventKind::Switch { .. } => !self.no_switches && self.syscalls.is_none(),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_window_is_relative_to_base() {
        assert_eq!(window(1_000, None, None), None);
        assert_eq!(
            window(1_000_000_000, Some(0.5), None),
            Some((1_500_000_000, u64::MAX))
        );
        assert_eq!(window(1_000, Some(-5.0), Some(1e-6)), Some((0, 2_000)));
    }

    #[test]
    fn inspect_syscall_names() {
        let s = parse_syscalls(&["read".into(), "257".into()])
            .unwrap()
            .unwrap();
        assert!(s.contains(&0) && s.contains(&257));
        let err = parse_syscalls(&["opnat".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown syscall name"), "{err}");
        let err = parse_syscalls(&["fstatat".into()]).unwrap_err().to_string();
        assert!(err.contains("newfstatat"), "{err}");
    }
}
