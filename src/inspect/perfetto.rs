//! `--perfetto FILE`: the trace as Chrome trace-event JSON (the
//! `{"traceEvents": [...]}` object form), which ui.perfetto.dev and
//! chrome://tracing open.
//!
//! Layout:
//! - one process per recorded pid and one thread track per tid (`M`
//!   process_name / thread_name from exec paths);
//! - syscalls as `X` slices on their thread (ts = entry, dur = time inside),
//!   with the strace-like call and `ret` in args; fork/exec/exit and signals
//!   as thread-scoped `i` instants; epoch marks as global `i` instants;
//! - scheduling on a companion track per thread ("<name> <tid> sched", tid
//!   [`SCHED_TID_OFFSET`] + tid): "running" slices from switch-in to
//!   switch-out and "blocked" slices from a switch-out that was not a
//!   preemption to the next switch-in. They live on their own track because a
//!   blocking syscall's slice overlaps running/blocked slices without nesting,
//!   which a single track cannot show.
//!
//! Times are microseconds since the earliest time in the exported events
//! (usually the first syscall's entry, which can precede the first event).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};
use tracelog::{Event, EventKind, SignalPhase, Trace, SYSCALL_ENTER_UNSEEN};

use super::format::{errno_name, errno_of, event_text, signal_name, sync_name, syscall_name};
use super::{Error, Select};

/// Added to a tid to name its scheduling track (above Linux's PID_MAX_LIMIT,
/// 2^22, so it never collides with a real tid).
pub const SCHED_TID_OFFSET: u32 = 1 << 28;

#[derive(Debug, Serialize)]
struct TraceEvent<'a> {
    name: Cow<'a, str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    cat: &'static str,
    ph: &'static str,
    ts: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    tid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "Value::is_null")]
    args: Value,
}

fn basename(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// Threads, their processes and names, from a first pass.
#[derive(Debug, Default)]
struct Names {
    pid_of: HashMap<u32, u32>,
    process: HashMap<u32, String>,
    /// Threads in order of first appearance.
    order: Vec<u32>,
}

impl Names {
    fn thread(&mut self, tid: u32, pid: u32) {
        if tid == 0 {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.pid_of.entry(tid) {
            e.insert(pid);
            self.order.push(tid);
        }
    }

    fn see(&mut self, ev: &Event) {
        match &ev.kind {
            // A switch names a thread the recorder knew (or the one switched
            // to); either way its pid field is right for `tid`.
            EventKind::Switch { .. } => self.thread(ev.tid, ev.pid),
            EventKind::Fork {
                child_pid,
                child_tid,
                ..
            } => {
                self.thread(ev.tid, ev.pid);
                self.thread(*child_tid, *child_pid);
                if *child_pid != ev.pid && !self.process.contains_key(child_pid) {
                    if let Some(parent) = self.process.get(&ev.pid).cloned() {
                        self.process.insert(*child_pid, parent);
                    }
                }
            }
            EventKind::Exec { path, .. } => {
                self.thread(ev.tid, ev.pid);
                self.process.insert(ev.pid, basename(path).to_string());
            }
            _ => self.thread(ev.tid, ev.pid),
        }
    }

    fn process_name(&self, pid: u32) -> String {
        self.process
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| format!("pid {pid}"))
    }
}

/// Streams trace events into the JSON array.
struct Out<W: Write> {
    w: W,
    base: u64,
    count: u64,
}

impl<W: Write> Out<W> {
    fn us(&self, ns: u64) -> f64 {
        (i128::from(ns) - i128::from(self.base)) as f64 / 1000.0
    }

    fn emit(&mut self, e: &TraceEvent<'_>) -> std::io::Result<()> {
        if self.count > 0 {
            self.w.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut self.w, e).map_err(std::io::Error::other)?;
        self.count += 1;
        Ok(())
    }

    fn slice(
        &mut self,
        name: &str,
        cat: &'static str,
        (pid, tid): (u32, u32),
        from_ns: u64,
        to_ns: u64,
        args: Value,
    ) -> std::io::Result<()> {
        let ts = self.us(from_ns);
        let dur = to_ns.saturating_sub(from_ns) as f64 / 1000.0;
        self.emit(&TraceEvent {
            name: Cow::Borrowed(name),
            cat,
            ph: "X",
            ts,
            dur: Some(dur),
            pid,
            tid,
            s: None,
            args,
        })
    }

    fn instant(
        &mut self,
        name: Cow<'_, str>,
        cat: &'static str,
        (pid, tid): (u32, u32),
        ns: u64,
        scope: &'static str,
        args: Value,
    ) -> std::io::Result<()> {
        let ts = self.us(ns);
        self.emit(&TraceEvent {
            name,
            cat,
            ph: "i",
            ts,
            dur: None,
            pid,
            tid,
            s: Some(scope),
            args,
        })
    }

    fn metadata(
        &mut self,
        name: &'static str,
        pid: u32,
        tid: u32,
        args: Value,
    ) -> std::io::Result<()> {
        self.emit(&TraceEvent {
            name: Cow::Borrowed(name),
            cat: "",
            ph: "M",
            ts: 0.0,
            dur: None,
            pid,
            tid,
            s: None,
            args,
        })
    }
}

/// Scheduling state per thread while walking the switches.
#[derive(Debug, Default)]
struct Sched {
    running_since: BTreeMap<u32, u64>,
    blocked_since: BTreeMap<u32, (u64, u64)>,
    /// Threads with a known scheduling state.
    seen: HashSet<u32>,
    /// Exit time of exited threads.
    exited: HashMap<u32, u64>,
}

impl Sched {
    /// A thread doing something is running; without an earlier switch-in
    /// (the first thread, or one running when recording began) it has been
    /// since at least `since`.
    fn active(&mut self, tid: u32, since: u64) {
        if self.seen.insert(tid) {
            self.running_since.insert(tid, since);
        }
    }
}

pub fn write(trace: &Trace, sel: &Select, path: &Path) -> Result<(), Error> {
    let io_err = |source| Error::Write {
        what: path.display().to_string(),
        source,
    };
    let mut names = Names::default();
    let meta = trace.meta();
    if meta.root_pid != 0 {
        if let Some(cmd) = meta.command.first() {
            names
                .process
                .insert(meta.root_pid, basename(cmd).to_string());
        }
    }
    let mut base = u64::MAX;
    for ev in sel.events(trace).map_while(Result::ok) {
        if sel.keep(&ev) {
            names.see(&ev);
            base = base.min(match &ev.kind {
                EventKind::Syscall(sc) if sc.flags & SYSCALL_ENTER_UNSEEN == 0 => {
                    sc.enter_ns.min(ev.time_ns)
                }
                _ => ev.time_ns,
            });
        }
    }
    if base == u64::MAX {
        base = 0;
    }

    let file = File::create(path).map_err(io_err)?;
    let mut out = Out {
        w: BufWriter::new(file),
        base,
        count: 0,
    };
    out.w.write_all(b"{\"traceEvents\":[\n").map_err(io_err)?;

    // Names and track order first.
    let mut pids: Vec<u32> = names.order.iter().map(|t| names.pid_of[t]).collect();
    pids.sort_unstable();
    pids.dedup();
    for &pid in &pids {
        let name = names.process_name(pid);
        out.metadata("process_name", pid, pid, json!({ "name": name }))
            .map_err(io_err)?;
        // Processes in the order they appeared (the root first), not by name.
        let first = names
            .order
            .iter()
            .position(|t| names.pid_of[t] == pid)
            .unwrap_or(0);
        out.metadata(
            "process_sort_index",
            pid,
            pid,
            json!({ "sort_index": first }),
        )
        .map_err(io_err)?;
    }
    for (i, &tid) in names.order.iter().enumerate() {
        let pid = names.pid_of[&tid];
        let name = names.process_name(pid);
        let rank = 2 * i as u64;
        let sched = tid + SCHED_TID_OFFSET;
        out.metadata(
            "thread_name",
            pid,
            tid,
            json!({ "name": format!("{name} {tid}") }),
        )
        .map_err(io_err)?;
        out.metadata("thread_sort_index", pid, tid, json!({ "sort_index": rank }))
            .map_err(io_err)?;
        out.metadata(
            "thread_name",
            pid,
            sched,
            json!({ "name": format!("{name} {tid} sched") }),
        )
        .map_err(io_err)?;
        out.metadata(
            "thread_sort_index",
            pid,
            sched,
            json!({ "sort_index": rank + 1 }),
        )
        .map_err(io_err)?;
    }

    let mut sched = Sched::default();
    let mut damage = None;
    let mut last_ns = base;
    let mut text = String::new();
    for item in sel.events(trace) {
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
        last_ns = last_ns.max(ev.time_ns);
        emit_event(&mut out, &names, &mut sched, &ev, &mut text).map_err(io_err)?;
    }
    // Close what is still open where the trace ends.
    let pid_of = |tid: &u32| names.pid_of[tid];
    for (tid, since) in std::mem::take(&mut sched.running_since) {
        let until = sched
            .exited
            .get(&tid)
            .copied()
            .unwrap_or(last_ns)
            .max(since);
        out.slice(
            "running",
            "sched",
            (pid_of(&tid), tid + SCHED_TID_OFFSET),
            since,
            until,
            Value::Null,
        )
        .map_err(io_err)?;
    }
    for (tid, (since, state)) in std::mem::take(&mut sched.blocked_since) {
        out.slice(
            "blocked",
            "sched",
            (pid_of(&tid), tid + SCHED_TID_OFFSET),
            since,
            last_ns,
            json!({ "state": format!("{state:#x}") }),
        )
        .map_err(io_err)?;
    }
    out.w
        .write_all(b"\n],\"displayTimeUnit\":\"ns\"}\n")
        .and_then(|()| out.w.flush())
        .map_err(io_err)?;
    eprintln!(
        "uniplay: wrote {} trace events to {}; open it in https://ui.perfetto.dev",
        out.count,
        path.display()
    );
    match damage {
        Some(source) => Err(Error::Damaged { source }),
        None => Ok(()),
    }
}

fn emit_event<W: Write>(
    out: &mut Out<W>,
    names: &Names,
    sched: &mut Sched,
    ev: &Event,
    text: &mut String,
) -> std::io::Result<()> {
    let (pid, tid) = (ev.pid, ev.tid);
    if names.pid_of.contains_key(&tid) {
        match &ev.kind {
            EventKind::Switch { .. } => {}
            EventKind::Syscall(sc) if sc.flags & SYSCALL_ENTER_UNSEEN == 0 => {
                sched.active(tid, sc.enter_ns.min(ev.time_ns))
            }
            _ => sched.active(tid, ev.time_ns),
        }
    }
    match &ev.kind {
        EventKind::Syscall(sc) => {
            text.clear();
            event_text(text, ev);
            let mut args = json!({ "call": text.as_str(), "ret": sc.ret });
            if let Some(errno) = errno_of(sc.ret, sc.flags) {
                args["error"] = json!(errno_name(errno));
            }
            let name = syscall_name(sc.nr);
            if sc.flags & SYSCALL_ENTER_UNSEEN != 0 {
                out.instant(name, "syscall", (pid, tid), ev.time_ns, "t", args)
            } else {
                let from = sc.enter_ns.min(ev.time_ns);
                out.slice(&name, "syscall", (pid, tid), from, ev.time_ns, args)
            }
        }
        EventKind::Switch {
            prev_tid,
            next_tid,
            prev_state,
            ..
        } => {
            let t = ev.time_ns;
            sched.seen.insert(*prev_tid);
            sched.seen.insert(*next_tid);
            if let Some(&ppid) = names.pid_of.get(prev_tid) {
                if let Some(since) = sched.running_since.remove(prev_tid) {
                    out.slice(
                        "running",
                        "sched",
                        (ppid, prev_tid + SCHED_TID_OFFSET),
                        since,
                        t,
                        json!({ "cpu": ev.cpu }),
                    )?;
                }
                if *prev_state != 0 && !sched.exited.contains_key(prev_tid) {
                    sched.blocked_since.insert(*prev_tid, (t, *prev_state));
                }
            }
            if let Some(&npid) = names.pid_of.get(next_tid) {
                if let Some((since, state)) = sched.blocked_since.remove(next_tid) {
                    out.slice(
                        "blocked",
                        "sched",
                        (npid, next_tid + SCHED_TID_OFFSET),
                        since,
                        t,
                        json!({ "state": format!("{state:#x}") }),
                    )?;
                }
                sched.running_since.insert(*next_tid, t);
            }
            Ok(())
        }
        EventKind::Fork {
            child_pid,
            child_tid,
            flags,
        } => out.instant(
            Cow::Owned(format!("fork {child_tid}")),
            "process",
            (pid, tid),
            ev.time_ns,
            "t",
            json!({ "child_pid": child_pid, "child_tid": child_tid, "flags": format!("{flags:#x}") }),
        ),
        EventKind::Exec { path, argv } => out.instant(
            Cow::Owned(format!("exec {}", basename(path))),
            "process",
            (pid, tid),
            ev.time_ns,
            "t",
            json!({ "path": path, "argv": argv }),
        ),
        EventKind::Exit {
            code,
            signal,
            group_dead,
        } => {
            sched.exited.insert(tid, ev.time_ns);
            sched.blocked_since.remove(&tid);
            let name = if *signal != 0 {
                format!("killed by {}", signal_name(*signal))
            } else {
                format!("exit {code}")
            };
            out.instant(
                Cow::Owned(name),
                "process",
                (pid, tid),
                ev.time_ns,
                "t",
                json!({ "code": code, "signal": signal, "group_dead": group_dead }),
            )
        }
        EventKind::Signal {
            sig,
            phase,
            code,
            errno,
            result,
            target_tid,
        } => {
            let phase = match phase {
                SignalPhase::Generated => "generated",
                SignalPhase::Delivered => "delivered",
            };
            out.instant(
                Cow::Owned(format!("{} {phase}", signal_name(*sig))),
                "signal",
                (pid, tid),
                ev.time_ns,
                "t",
                json!({ "sig": sig, "code": code, "errno": errno, "result": result, "target_tid": target_tid }),
            )
        }
        EventKind::Sync { op, ip, object } => out.instant(
            sync_name(*op),
            "sync",
            (pid, tid),
            ev.time_ns,
            "t",
            json!({ "object": format!("{object:#x}"), "ip": format!("{ip:#x}") }),
        ),
        EventKind::EpochMark { epoch } => out.instant(
            Cow::Owned(format!("epoch {epoch}")),
            "epoch",
            (pid, tid),
            ev.time_ns,
            "g",
            json!({ "epoch": epoch, "seq": ev.seq }),
        ),
    }
}
