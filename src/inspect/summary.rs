//! The default output: what a trace holds, as text or (`--summary --json`)
//! as one JSON object.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use serde::Serialize;
use tracelog::{
    Event, EventKind, SignalPhase, Trace, TraceState, KIND_NAMES, SYSCALL_ENTER_UNSEEN,
    SYSCALL_INCOMPLETE_COPY,
};

use super::checkpoints::{self, EpochRange, Row};
use super::format::{errno_of, secs, signal_name, syscall_duration, syscall_name};

/// Syscalls whose positive result is bytes read / written.
const READS: &[&str] = &[
    "read", "pread64", "readv", "preadv", "preadv2", "recvfrom", "recvmsg",
];
const WRITES: &[&str] = &[
    "write", "pwrite64", "writev", "pwritev", "pwritev2", "sendto", "sendmsg",
];
const OPENS: &[&str] = &["open", "openat", "openat2", "creat"];

fn numbers(names: &[&str]) -> BTreeSet<u32> {
    names
        .iter()
        .filter_map(|n| recorder_common::number(n))
        .collect()
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct SyscallStat {
    pub calls: u64,
    pub total_ns: u64,
    pub errors: u64,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct SignalStat {
    pub generated: u64,
    pub delivered: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ExitStat {
    pub pid: u32,
    pub code: i32,
    pub signal: u32,
}

/// Everything the summary needs, from one pass over the events.
#[derive(Debug, Default)]
pub struct Stats {
    pub events: u64,
    pub by_kind: [u64; KIND_NAMES.len()],
    pub first_ns: Option<u64>,
    pub min_ns: u64,
    pub max_ns: u64,
    pub pids: BTreeSet<u32>,
    pub tids: BTreeSet<u32>,
    pub epochs: BTreeSet<u32>,
    /// Seqs of each epoch's events (by the events' epoch field; an
    /// `EpochMark` belongs to the epoch it starts).
    pub epoch_seqs: BTreeMap<u32, EpochRange>,
    pub syscalls: BTreeMap<u32, SyscallStat>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub opens: u64,
    pub opens_failed: u64,
    /// Files opened successfully: path → times.
    pub files: BTreeMap<String, u64>,
    pub execs: Vec<String>,
    pub preempted: u64,
    pub blocked: u64,
    pub signals: BTreeMap<u32, SignalStat>,
    pub incomplete_outputs: u64,
    pub enter_unseen: u64,
    /// Group exits seen, in order.
    pub exits: Vec<ExitStat>,
    /// Where and why reading stopped early.
    pub damage: Option<String>,
}

/// One line: the error and its causes joined with ": ".
pub(super) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

pub fn collect(trace: &Trace) -> Stats {
    let reads = numbers(READS);
    let writes = numbers(WRITES);
    let opens = numbers(OPENS);
    let mut s = Stats {
        min_ns: u64::MAX,
        ..Stats::default()
    };
    for item in trace.events() {
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                s.damage = Some(chain(&e));
                break;
            }
        };
        s.add(&ev, &reads, &writes, &opens);
    }
    if s.events == 0 {
        s.min_ns = 0;
    }
    s
}

impl Stats {
    fn add(
        &mut self,
        ev: &Event,
        reads: &BTreeSet<u32>,
        writes: &BTreeSet<u32>,
        opens: &BTreeSet<u32>,
    ) {
        self.events += 1;
        self.by_kind[KIND_NAMES
            .iter()
            .position(|k| *k == ev.kind.name())
            .unwrap_or(0)] += 1;
        self.first_ns.get_or_insert(ev.time_ns);
        self.min_ns = self.min_ns.min(ev.time_ns);
        self.max_ns = self.max_ns.max(ev.time_ns);
        self.epochs.insert(ev.epoch);
        let epoch = match ev.kind {
            EventKind::EpochMark { epoch } => epoch,
            _ => ev.epoch,
        };
        self.epoch_seqs.entry(epoch).or_default().add(ev.seq);
        if !matches!(ev.kind, EventKind::Switch { .. }) && ev.tid != 0 {
            self.pids.insert(ev.pid);
            self.tids.insert(ev.tid);
        }
        match &ev.kind {
            EventKind::Syscall(sc) => {
                let st = self.syscalls.entry(sc.nr).or_default();
                st.calls += 1;
                st.total_ns += syscall_duration(ev, sc).unwrap_or(0);
                let failed = errno_of(sc.ret, sc.flags).is_some();
                if failed {
                    st.errors += 1;
                }
                if sc.flags & SYSCALL_INCOMPLETE_COPY != 0 || sc.outputs.iter().any(|o| !o.complete)
                {
                    self.incomplete_outputs += 1;
                }
                if sc.flags & SYSCALL_ENTER_UNSEEN != 0 {
                    self.enter_unseen += 1;
                }
                if !failed && sc.ret > 0 {
                    if reads.contains(&sc.nr) {
                        self.bytes_read += sc.ret as u64;
                    } else if writes.contains(&sc.nr) {
                        self.bytes_written += sc.ret as u64;
                    }
                }
                if opens.contains(&sc.nr) {
                    self.opens += 1;
                    if failed {
                        self.opens_failed += 1;
                    } else if let Some(path) = opened_path(sc) {
                        *self.files.entry(path).or_default() += 1;
                    }
                }
            }
            EventKind::Switch { prev_state, .. } => {
                if *prev_state == 0 {
                    self.preempted += 1;
                } else {
                    self.blocked += 1;
                }
            }
            EventKind::Fork {
                child_pid,
                child_tid,
                ..
            } => {
                self.pids.insert(*child_pid);
                self.tids.insert(*child_tid);
            }
            EventKind::Exec { path, .. } => {
                if !self.execs.contains(path) {
                    self.execs.push(path.clone());
                }
            }
            EventKind::Exit {
                code,
                signal,
                group_dead,
            } => {
                if *group_dead {
                    self.exits.push(ExitStat {
                        pid: ev.pid,
                        code: *code,
                        signal: *signal,
                    });
                }
            }
            EventKind::Signal { sig, phase, .. } => {
                let st = self.signals.entry(*sig).or_default();
                match phase {
                    SignalPhase::Generated => st.generated += 1,
                    SignalPhase::Delivered => st.delivered += 1,
                }
            }
            EventKind::EpochMark { epoch } => {
                self.epochs.insert(*epoch);
            }
            EventKind::Sync { .. } => {}
        }
    }

    fn kind(&self, name: &str) -> u64 {
        KIND_NAMES
            .iter()
            .position(|k| *k == name)
            .map_or(0, |i| self.by_kind[i])
    }
}

/// Derived figures both outputs share.
struct Facts {
    state: TraceState,
    complete: bool,
    duration_ns: u64,
    processes: usize,
    threads: usize,
    epochs: usize,
    /// Kept epochs, in order.
    epoch_list: Vec<u32>,
    exit: Option<ExitStat>,
    lost: u64,
    /// Zero of relative times: the first event's time.
    base: u64,
    checkpoints: Vec<Row>,
    checkpoint_damage: Vec<String>,
}

fn facts(trace: &Trace, s: &Stats) -> Facts {
    let meta = trace.meta();
    let state = trace.state();
    // meta's clock span is only written at finish; a dead recorder leaves the
    // events as the only measure.
    let duration_ns = if meta.end_mono_ns > meta.start_mono_ns {
        meta.end_mono_ns - meta.start_mono_ns
    } else {
        s.max_ns.saturating_sub(s.min_ns)
    };
    let pids: BTreeSet<u32> = s.pids.iter().chain(&meta.pids).copied().collect();
    let tids: BTreeSet<u32> = s.tids.iter().chain(&meta.tids).copied().collect();
    let root = if meta.root_pid != 0 {
        Some(meta.root_pid)
    } else {
        s.pids.first().copied()
    };
    let epoch_list: Vec<u32> = if s.epochs.is_empty() {
        let mut v: Vec<u32> = meta.epochs.iter().map(|e| e.index).collect();
        v.dedup();
        v
    } else {
        s.epochs.iter().copied().collect()
    };
    let exit = match &meta.exit {
        Some(x) => Some(ExitStat {
            pid: meta.root_pid,
            code: x.code,
            signal: x.signal,
        }),
        None => s.exits.iter().find(|x| Some(x.pid) == root).copied(),
    };
    Facts {
        complete: state == TraceState::Complete && s.damage.is_none(),
        state,
        duration_ns,
        processes: pids.len(),
        threads: tids.len(),
        epochs: epoch_list.len(),
        epoch_list,
        exit,
        lost: meta.losses.ring_full + meta.losses.incomplete_copies,
        base: s.first_ns.unwrap_or(meta.start_mono_ns),
        checkpoints: checkpoints::rows(trace, &checkpoints::epoch_ranges(trace, &s.epoch_seqs)),
        checkpoint_damage: checkpoints::damage(trace),
    }
}

fn exit_text(x: &Option<ExitStat>) -> String {
    match x {
        Some(x) if x.signal != 0 => format!("killed by {}", signal_name(x.signal)),
        Some(x) => format!("exited with {}", x.code),
        None => "not recorded".into(),
    }
}

/// Syscalls, most called first (then longest total time, then by number).
fn ranked(s: &Stats) -> Vec<(u32, SyscallStat)> {
    let mut v: Vec<_> = s.syscalls.iter().map(|(k, v)| (*k, *v)).collect();
    v.sort_by(|a, b| {
        b.1.calls
            .cmp(&a.1.calls)
            .then(b.1.total_ns.cmp(&a.1.total_ns))
            .then(a.0.cmp(&b.0))
    });
    v
}

pub fn write_text(out: &mut impl Write, trace: &Trace, s: &Stats, top: usize) -> io::Result<()> {
    let meta = trace.meta();
    let f = facts(trace, s);
    if let Some(d) = &s.damage {
        writeln!(out, "DAMAGED     {d}")?;
        writeln!(
            out,
            "            (everything below covers the {} events before the damage)",
            s.events
        )?;
    }
    let mut state = f.state.to_string();
    if !meta.end_reason.is_empty() && f.state == TraceState::Complete {
        state.push_str(&format!(" ({})", meta.end_reason));
    }
    writeln!(out, "state       {state}")?;
    writeln!(out, "command     {}", meta.command.join(" "))?;
    let mut mode = meta.mode.clone();
    if meta.mode == "attach" && meta.root_pid != 0 {
        mode.push_str(&format!(" to pid {}", meta.root_pid));
    }
    if !meta.uniplay_version.is_empty() {
        mode.push_str(&format!(", recorded by uniplay {}", meta.uniplay_version));
    }
    writeln!(out, "mode        {mode}")?;
    let h = &meta.host;
    writeln!(
        out,
        "host        {}: Linux {} {}, {} CPUs",
        h.hostname, h.kernel, h.arch, h.cpus
    )?;
    writeln!(out, "duration    {} s", secs(f.duration_ns))?;
    let kinds: Vec<String> = KIND_NAMES
        .iter()
        .filter(|k| s.kind(k) > 0)
        .map(|k| format!("{} {k}", s.kind(k)))
        .collect();
    writeln!(out, "events      {} ({})", s.events, kinds.join(", "))?;
    let plural = if f.threads == 1 { "thread" } else { "threads" };
    writeln!(out, "processes   {} ({} {plural})", f.processes, f.threads)?;
    writeln!(out, "exit        {}", exit_text(&f.exit))?;
    if f.lost == 0 {
        writeln!(out, "losses      none")?;
    } else {
        writeln!(
            out,
            "losses      {} (ring buffer full: {} events dropped; outputs not copied in full: {})",
            f.lost, meta.losses.ring_full, meta.losses.incomplete_copies
        )?;
    }
    if !meta.sync_probes.is_empty() {
        writeln!(out, "lock order  {}", meta.sync_probes)?;
    }
    checkpoints::write_summary_text(
        out,
        trace,
        &f.epoch_list,
        &f.checkpoints,
        &f.checkpoint_damage,
        f.base,
    )?;
    if s.execs.is_empty() {
        writeln!(out, "execs       none")?;
    } else {
        writeln!(out, "execs       {}", s.execs.join(", "))?;
    }
    writeln!(
        out,
        "opens       {} ({} failed), {} distinct files",
        s.opens,
        s.opens_failed,
        s.files.len()
    )?;
    let mut files: Vec<_> = s.files.iter().collect();
    files.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (path, n) in files.iter().take(FILES_SHOWN) {
        writeln!(out, "            {n:>5}  {path}")?;
    }
    if files.len() > FILES_SHOWN {
        writeln!(
            out,
            "            ... {} more (inspect --json --summary lists all)",
            files.len() - FILES_SHOWN
        )?;
    }
    writeln!(
        out,
        "bytes       {} read, {} written",
        s.bytes_read, s.bytes_written
    )?;
    writeln!(
        out,
        "switches    {} ({} preempted, {} blocked)",
        s.preempted + s.blocked,
        s.preempted,
        s.blocked
    )?;
    if s.signals.is_empty() {
        writeln!(out, "signals     none")?;
    } else {
        let v: Vec<String> = s
            .signals
            .iter()
            .map(|(sig, st)| {
                format!(
                    "{} ({} generated, {} delivered)",
                    signal_name(*sig),
                    st.generated,
                    st.delivered
                )
            })
            .collect();
        writeln!(out, "signals     {}", v.join(", "))?;
    }
    let calls = s.kind("syscall");
    let errors: u64 = s.syscalls.values().map(|x| x.errors).sum();
    writeln!(
        out,
        "syscalls    {calls} calls of {} syscalls, {errors} failed",
        s.syscalls.len()
    )?;
    if s.incomplete_outputs > 0 {
        writeln!(
            out,
            "            {} with outputs not copied in full",
            s.incomplete_outputs
        )?;
    }
    if s.enter_unseen > 0 {
        writeln!(
            out,
            "            {} entered before recording started (time not counted)",
            s.enter_unseen
        )?;
    }
    let rows = ranked(s);
    if top > 0 && !rows.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<20} {:>10} {:>14} {:>8}",
            "syscall", "calls", "total s", "errors"
        )?;
        for (nr, st) in rows.iter().take(top) {
            writeln!(
                out,
                "{:<20} {:>10} {:>14} {:>8}",
                syscall_name(*nr),
                st.calls,
                secs(st.total_ns),
                st.errors
            )?;
        }
        if rows.len() > top {
            let rest = &rows[top..];
            let n: u64 = rest.iter().map(|r| r.1.calls).sum();
            writeln!(
                out,
                "({} more syscalls with {n} calls; see --top N)",
                rest.len()
            )?;
        }
    }
    if let Some(d) = &s.damage {
        writeln!(out)?;
        writeln!(out, "the trace is damaged: {d}")?;
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct JsonSummary<'a> {
    complete: bool,
    state: &'static str,
    state_reason: Option<&'a str>,
    end_reason: &'a str,
    damage: Option<&'a str>,
    command: &'a [String],
    mode: &'a str,
    root_pid: u32,
    uniplay_version: &'a str,
    host: &'a tracelog::Host,
    duration_ns: u64,
    events: u64,
    event_counts: BTreeMap<&'static str, u64>,
    processes: usize,
    threads: usize,
    epochs: usize,
    first_epoch: u32,
    keep_epochs: Option<u32>,
    checkpoints: &'a [Row],
    checkpoint_damage: &'a [String],
    exit: Option<JsonExit>,
    lost_events: u64,
    ring_full: u64,
    incomplete_copies: u64,
    /// How lock calls were recorded (meta `sync_probes`; absent in older traces).
    #[serde(skip_serializing_if = "str::is_empty")]
    lock_order: &'a str,
    syscalls: BTreeMap<String, SyscallStat>,
    syscall_errors: u64,
    bytes_read: u64,
    bytes_written: u64,
    opens: u64,
    opens_failed: u64,
    files_opened: &'a BTreeMap<String, u64>,
    execs: &'a [String],
    context_switches: u64,
    switches_preempted: u64,
    switches_blocked: u64,
    signals: u64,
    signals_by_name: BTreeMap<String, SignalStat>,
}

#[derive(Debug, Serialize)]
struct JsonExit {
    code: i32,
    signal: u32,
}

pub fn write_json(out: &mut impl Write, trace: &Trace, s: &Stats) -> io::Result<()> {
    let meta = trace.meta();
    let f = facts(trace, s);
    let (state, reason) = match &f.state {
        TraceState::Recording => ("recording", None),
        TraceState::Complete => ("complete", None),
        TraceState::Incomplete { reason } => ("incomplete", Some(reason.as_str())),
    };
    let j = JsonSummary {
        complete: f.complete,
        state,
        state_reason: reason,
        end_reason: &meta.end_reason,
        damage: s.damage.as_deref(),
        command: &meta.command,
        mode: &meta.mode,
        root_pid: meta.root_pid,
        uniplay_version: &meta.uniplay_version,
        host: &meta.host,
        duration_ns: f.duration_ns,
        events: s.events,
        event_counts: KIND_NAMES.iter().map(|k| (*k, s.kind(k))).collect(),
        processes: f.processes,
        threads: f.threads,
        epochs: f.epochs,
        first_epoch: meta.first_epoch,
        keep_epochs: meta.keep_epochs,
        checkpoints: &f.checkpoints,
        checkpoint_damage: &f.checkpoint_damage,
        exit: f.exit.map(|x| JsonExit {
            code: x.code,
            signal: x.signal,
        }),
        lost_events: f.lost,
        ring_full: meta.losses.ring_full,
        incomplete_copies: meta.losses.incomplete_copies,
        lock_order: &meta.sync_probes,
        syscalls: s
            .syscalls
            .iter()
            .map(|(nr, st)| (syscall_name(*nr).into_owned(), *st))
            .collect(),
        syscall_errors: s.syscalls.values().map(|x| x.errors).sum(),
        bytes_read: s.bytes_read,
        bytes_written: s.bytes_written,
        opens: s.opens,
        opens_failed: s.opens_failed,
        files_opened: &s.files,
        execs: &s.execs,
        context_switches: s.preempted + s.blocked,
        switches_preempted: s.preempted,
        switches_blocked: s.blocked,
        signals: s.kind("signal"),
        signals_by_name: s
            .signals
            .iter()
            .map(|(sig, st)| (signal_name(*sig).into_owned(), *st))
            .collect(),
    };
    // Serialised first, so a closed stdout is a plain (broken pipe) error.
    let mut text = serde_json::to_vec_pretty(&j).map_err(io::Error::other)?;
    text.push(b'\n');
    out.write_all(&text)
}

/// Files listed in the text summary, most opened first.
const FILES_SHOWN: usize = 10;

/// The path an open-family syscall opened: the input string recorded for
/// its path argument (`SLOT_INPUT + arg`), without its NUL.
fn opened_path(sc: &tracelog::Syscall) -> Option<String> {
    let o = sc
        .outputs
        .iter()
        .find(|o| o.arg >= recorder_common::SLOT_INPUT)?;
    let data = o.data.strip_suffix(&[0]).unwrap_or(&o.data);
    Some(String::from_utf8_lossy(data).into_owned())
}
