//! Epochs and checkpoints: the summary's checkpoint table (text and JSON)
//! and `--checkpoint EPOCH`, one checkpoint in detail.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;
use tracelog::{Checkpoint, Trace};

use super::format::{rel_time, signal_name, syscall_name};

/// Rows of the summary's checkpoint table; more are counted, not shown.
const ROWS_SHOWN: usize = 20;

/// Indices of `user_regs_struct` words (x86-64, kernel order).
const REG_RIP: usize = 16;
const REG_RSP: usize = 19;
const REG_FS_BASE: usize = 21;

/// Hex digits of a `files/` hash shown in the memory map.
const HASH_SHOWN: usize = 12;

/// Seqs of one epoch's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EpochRange {
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: u64,
}

impl EpochRange {
    /// Adds the event `seq` (events arrive in seq order).
    pub fn add(&mut self, seq: u64) {
        if self.events == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
        self.events += 1;
    }

    fn text(r: Option<&EpochRange>) -> String {
        match r {
            Some(r) if r.events > 0 => format!("{}..{}", r.first_seq, r.last_seq),
            _ => "-".into(),
        }
    }
}

/// Event ranges by epoch: from meta.json's `epochs` (written by the writer
/// for every pushed event) when it has them, else from the events' epoch
/// field as read (`from_events`, e.g. a trace whose recorder died).
pub fn epoch_ranges(
    trace: &Trace,
    from_events: &BTreeMap<u32, EpochRange>,
) -> BTreeMap<u32, EpochRange> {
    let meta = trace.meta();
    if meta.epochs.iter().all(|e| e.events == 0) {
        return from_events.clone();
    }
    // The first event's epoch and a following EpochMark of the same number
    // are two entries: merge them.
    let mut out: BTreeMap<u32, EpochRange> = BTreeMap::new();
    for e in meta.epochs.iter().filter(|e| e.events > 0) {
        let last = e.start_seq + e.events - 1;
        let r = out.entry(e.index).or_insert(EpochRange {
            first_seq: e.start_seq,
            last_seq: last,
            events: 0,
        });
        r.first_seq = r.first_seq.min(e.start_seq);
        r.last_seq = r.last_seq.max(last);
        r.events += e.events;
    }
    out
}

/// One checkpoint, as listed by the summary (`checkpoints` in its JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub epoch: u32,
    /// CLOCK_MONOTONIC at the cut.
    pub time_ns: u64,
    pub reason: String,
    /// Event range of the epoch (null if it has no events).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub events: u64,
    pub processes: u32,
    pub threads: u32,
    /// Pages stored by the checkpoint itself.
    pub pages: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// How long the target was stopped.
    pub stop_ns: u64,
}

/// The trace's complete checkpoints of kept epochs, in epoch order.
pub fn rows(trace: &Trace, ranges: &BTreeMap<u32, EpochRange>) -> Vec<Row> {
    trace
        .checkpoints()
        .into_iter()
        .map(|info| {
            let r = ranges.get(&info.epoch).filter(|r| r.events > 0);
            Row {
                epoch: info.epoch,
                time_ns: info.time_ns,
                reason: trace
                    .checkpoint(info.epoch)
                    .map(|c| c.reason)
                    .unwrap_or_default(),
                first_seq: r.map(|r| r.first_seq),
                last_seq: r.map(|r| r.last_seq),
                events: r.map_or(0, |r| r.events),
                processes: info.processes,
                threads: info.threads,
                pages: info.pages,
                bytes: info.bytes,
                stop_ns: info.stop_ns,
            }
        })
        .collect()
}

/// Checkpoint damage (incomplete directories, unreadable state, damaged
/// page files), one line each.
pub fn damage(trace: &Trace) -> Vec<String> {
    trace
        .checkpoint_damage()
        .iter()
        .map(|e| super::summary::chain(e))
        .collect()
}

/// Median of `v` (sorted in place); the mean of the two middle values for
/// an even count.
fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => ((u128::from(v[n / 2 - 1]) + u128::from(v[n / 2])) / 2) as u64,
    }
}

fn ms(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000, ns % 1_000_000 / 1000)
}

/// `0..3, 5, 7..9`: sorted numbers as ranges.
pub fn ranges_text(v: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}..{}", v[i], v[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// The summary's `epochs` line and checkpoint table. `epochs` are the kept
/// epochs seen; `base` is the zero of relative times.
pub fn write_summary_text(
    out: &mut impl Write,
    trace: &Trace,
    epochs: &[u32],
    rows: &[Row],
    damage: &[String],
    base: u64,
) -> io::Result<()> {
    const PAD: &str = "            ";
    let meta = trace.meta();
    let mut line = format!("{}", epochs.len());
    if let (Some(a), Some(b)) = (epochs.first(), epochs.last()) {
        let _ = write!(line, " ({a}..{b})");
    }
    if rows.is_empty() {
        line.push_str(", no checkpoints");
    } else {
        let mut stops: Vec<u64> = rows.iter().map(|r| r.stop_ns).collect();
        let max = stops.iter().copied().max().unwrap_or(0);
        let med = median(&mut stops);
        let pages: u64 = rows.iter().map(|r| r.pages).sum();
        let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
        let plural = if rows.len() == 1 { "" } else { "s" };
        let _ = write!(
            line,
            "; {} checkpoint{plural}: {pages} pages, {bytes} bytes, target stopped {} ms median, {} ms max",
            rows.len(),
            ms(med),
            ms(max)
        );
    }
    writeln!(out, "epochs      {line}")?;
    if meta.first_epoch > 0 || meta.keep_epochs.is_some() {
        let keep = match meta.keep_epochs {
            Some(k) => format!(", --keep-epochs {k}"),
            None => String::new(),
        };
        let (a, b) = (
            epochs.first().copied().unwrap_or(meta.first_epoch),
            epochs.last().copied().unwrap_or(meta.first_epoch),
        );
        writeln!(
            out,
            "{PAD}flight recorder: kept epochs {a}..{b} ({}{keep})",
            epochs.len()
        )?;
    }
    if !rows.is_empty() {
        writeln!(
            out,
            "{PAD}{:>5} {:>10}  {:<8} {:>15} {:>5} {:>7} {:>7} {:>10} {:>8}",
            "epoch", "time s", "reason", "events", "procs", "threads", "pages", "bytes", "stop ms"
        )?;
        for r in rows.iter().take(ROWS_SHOWN) {
            let mut t = String::new();
            rel_time(&mut t, r.time_ns, base);
            let range = EpochRange::text(Some(&EpochRange {
                first_seq: r.first_seq.unwrap_or(0),
                last_seq: r.last_seq.unwrap_or(0),
                events: r.events,
            }));
            writeln!(
                out,
                "{PAD}{:>5} {:>10}  {:<8} {:>15} {:>5} {:>7} {:>7} {:>10} {:>8}",
                r.epoch,
                t,
                // "exec PID..." names the processes: --checkpoint shows them.
                r.reason.split_whitespace().next().unwrap_or(""),
                range,
                r.processes,
                r.threads,
                r.pages,
                r.bytes,
                ms(r.stop_ns)
            )?;
        }
        if rows.len() > ROWS_SHOWN {
            writeln!(
                out,
                "{PAD}... {} more (inspect --summary --json lists all)",
                rows.len() - ROWS_SHOWN
            )?;
        }
    }
    for d in damage {
        writeln!(out, "{PAD}checkpoint damage: {d}")?;
    }
    Ok(())
}

// ---- --checkpoint EPOCH ------------------------------------------------------

/// The event range of `epoch`: from meta.json, else by reading its events.
pub fn range_of(trace: &Trace, epoch: u32) -> Option<EpochRange> {
    let from_meta = epoch_ranges(trace, &BTreeMap::new());
    if !from_meta.is_empty() {
        return from_meta.get(&epoch).copied();
    }
    let mut r = EpochRange::default();
    for ev in trace.events_in_epoch(epoch).map_while(Result::ok) {
        if ev.epoch == epoch {
            r.add(ev.seq);
        }
    }
    (r.events > 0).then_some(r)
}

#[derive(Debug, Serialize)]
struct JsonCheckpoint<'a> {
    epoch: u32,
    time_ns: u64,
    reason: &'a str,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    events: u64,
    stop_ns: u64,
    pages: u64,
    bytes: u64,
    processes: Vec<JsonProcess<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonProcess<'a> {
    pid: u32,
    ppid: u32,
    exe: &'a str,
    cwd: &'a str,
    pages_stored: u64,
    full: bool,
    memory: &'a str,
    threads: Vec<JsonThread>,
    maps: &'a [tracelog::Mapping],
    fds: &'a [tracelog::FdState],
    sigactions: Vec<JsonSigAction>,
}

#[derive(Debug, Serialize)]
struct JsonThread {
    tid: u32,
    rip: Option<u64>,
    rsp: Option<u64>,
    fs_base: Option<u64>,
    syscall: Option<i64>,
    syscall_name: Option<String>,
    sigmask: u64,
    regs: Vec<u64>,
}

#[derive(Debug, Serialize)]
struct JsonSigAction {
    sig: u32,
    name: String,
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

fn syscall_text(nr: Option<i64>) -> Option<String> {
    let nr = nr?;
    Some(match u32::try_from(nr) {
        Ok(n) => syscall_name(n).into_owned(),
        Err(_) => format!("syscall_{nr}"),
    })
}

fn handler_text(h: u64) -> String {
    match h {
        0 => "SIG_DFL".into(),
        1 => "SIG_IGN".into(),
        _ => format!("{h:#x}"),
    }
}

fn hash_prefix(h: &str) -> &str {
    h.get(..HASH_SHOWN).unwrap_or(h)
}

/// Totals of checkpoint `cp` as the summary shows them.
fn info_of(trace: &Trace, epoch: u32) -> (u64, u64) {
    trace
        .checkpoints()
        .into_iter()
        .find(|i| i.epoch == epoch)
        .map_or((0, 0), |i| (i.pages, i.bytes))
}

pub fn write_detail_json(out: &mut impl Write, trace: &Trace, cp: &Checkpoint) -> io::Result<()> {
    let range = range_of(trace, cp.epoch);
    let (pages, bytes) = info_of(trace, cp.epoch);
    let word = |regs: &[u64], i: usize| regs.get(i).copied();
    let j = JsonCheckpoint {
        epoch: cp.epoch,
        time_ns: cp.time_ns,
        reason: &cp.reason,
        first_seq: range.map(|r| r.first_seq),
        last_seq: range.map(|r| r.last_seq),
        events: range.map_or(0, |r| r.events),
        stop_ns: cp.stop_ns,
        pages,
        bytes,
        processes: cp
            .processes
            .iter()
            .map(|p| JsonProcess {
                pid: p.pid,
                ppid: p.ppid,
                exe: &p.exe,
                cwd: &p.cwd,
                pages_stored: p.pages_stored,
                full: p.full,
                memory: &p.memory,
                threads: p
                    .threads
                    .iter()
                    .map(|t| JsonThread {
                        tid: t.tid,
                        rip: word(&t.regs, REG_RIP),
                        rsp: word(&t.regs, REG_RSP),
                        fs_base: word(&t.regs, REG_FS_BASE),
                        syscall: t.syscall,
                        syscall_name: syscall_text(t.syscall),
                        sigmask: t.sigmask,
                        regs: t.regs.clone(),
                    })
                    .collect(),
                maps: &p.maps,
                fds: &p.fds,
                sigactions: p
                    .sigactions
                    .iter()
                    .map(|s| JsonSigAction {
                        sig: s.sig,
                        name: signal_name(s.sig).into_owned(),
                        handler: s.handler,
                        flags: s.flags,
                        restorer: s.restorer,
                        mask: s.mask,
                    })
                    .collect(),
            })
            .collect(),
    };
    // Serialised first, so a closed stdout is a plain (broken pipe) error.
    let mut text = serde_json::to_vec_pretty(&j).map_err(io::Error::other)?;
    text.push(b'\n');
    out.write_all(&text)
}

pub fn write_detail_text(
    out: &mut impl Write,
    trace: &Trace,
    cp: &Checkpoint,
    base: u64,
) -> io::Result<()> {
    let range = range_of(trace, cp.epoch);
    let (pages, bytes) = info_of(trace, cp.epoch);
    let mut t = String::new();
    rel_time(&mut t, cp.time_ns, base);
    let reason = if cp.reason.is_empty() {
        "reason unknown"
    } else {
        &cp.reason
    };
    writeln!(out, "checkpoint  epoch {} ({reason})", cp.epoch)?;
    writeln!(out, "time        {t} s (monotonic {} ns)", cp.time_ns)?;
    match range {
        Some(r) => writeln!(
            out,
            "events      {}..{} ({} events)",
            r.first_seq, r.last_seq, r.events
        )?,
        None => writeln!(out, "events      none")?,
    }
    writeln!(out, "stopped     {} ms", ms(cp.stop_ns))?;
    writeln!(out, "pages       {pages} stored, {bytes} bytes on disk")?;
    let threads: usize = cp.processes.iter().map(|p| p.threads.len()).sum();
    let plural = if threads == 1 { "thread" } else { "threads" };
    writeln!(
        out,
        "processes   {} ({threads} {plural})",
        cp.processes.len()
    )?;
    for p in &cp.processes {
        writeln!(out)?;
        writeln!(out, "process {} (parent {}): {}", p.pid, p.ppid, p.exe)?;
        writeln!(out, "  cwd       {}", p.cwd)?;
        let full = if p.full {
            " (full image: does not inherit older pages)"
        } else {
            ""
        };
        writeln!(out, "  pages     {} stored{full}", p.pages_stored)?;
        let memory = match p.memory.as_str() {
            "fork" => "copy-on-write snapshot (fork), read after the target resumed",
            "tracked" if p.full => {
                "all of it stored while the target ran, then the pages written meanwhile (write tracking), copied while stopped"
            }
            "tracked" => {
                "pages written since the previous checkpoint (write tracking), copied while stopped"
            }
            "stopped" => "read while the target was stopped",
            _ => "not recorded (older trace)",
        };
        writeln!(out, "  memory    {memory}")?;
        writeln!(out, "  threads   {}", p.threads.len())?;
        for t in &p.threads {
            let reg = |i: usize| {
                t.regs
                    .get(i)
                    .map_or_else(|| "?".to_string(), |v| format!("{v:#x}"))
            };
            let sc = match syscall_text(t.syscall) {
                Some(name) => format!("in {name}"),
                None => "not in a syscall".into(),
            };
            writeln!(
                out,
                "    tid {:<7} rip {} rsp {} fs_base {}  {sc}  sigmask {:#x}",
                t.tid,
                reg(REG_RIP),
                reg(REG_RSP),
                reg(REG_FS_BASE),
                t.sigmask
            )?;
        }
        writeln!(out, "  maps      {}", p.maps.len())?;
        for m in &p.maps {
            let mut extra = Vec::new();
            if m.stored {
                extra.push("stored".to_string());
            }
            if let Some(h) = &m.file {
                extra.push(format!("file {}", hash_prefix(h)));
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!("  [{}]", extra.join(", "))
            };
            let path = if m.path.is_empty() {
                String::new()
            } else {
                format!(" {}", m.path)
            };
            writeln!(
                out,
                "    {:012x}-{:012x} {} {:08x} {} {}{path}{extra}",
                m.start, m.end, m.perms, m.offset, m.dev, m.inode
            )?;
        }
        writeln!(out, "  fds       {}", p.fds.len())?;
        for f in &p.fds {
            writeln!(
                out,
                "    {:<5} {}  pos {} flags {:#o}",
                f.fd, f.path, f.pos, f.flags
            )?;
        }
        writeln!(out, "  signals   {} handlers", p.sigactions.len())?;
        for s in &p.sigactions {
            writeln!(
                out,
                "    {:<9} handler {} flags {:#x} restorer {:#x} mask {:#x}",
                signal_name(s.sig),
                handler_text(s.handler),
                s.flags,
                s.restorer,
                s.mask
            )?;
        }
    }
    Ok(())
}
