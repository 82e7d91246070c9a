//! One EP run: replay epoch k of one process from checkpoint k, its threads
//! serialised on one core, switching only at syscalls in the order the TP
//! log recorded; then check the result against checkpoint k+1.
//!
//! At each syscall stop the thread must make the syscall the log says it
//! makes next, with the same arguments. Then, per the shared syscall table,
//! the syscall is *emulated* (skipped; the logged result and output bytes
//! are put in place) or *executed* (it shapes the process itself: memory
//! map, threads, signal state) and its result checked. Bytes the program
//! hands the kernel (writes, paths) are compared with the recording, never
//! sent anywhere.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    time::Duration,
};

use recorder_common::{nr, spec, ACTION_EXECUTE, SLOT_INPUT};
use serde::Serialize;
use tracelog::{Event, EventKind, SignalPhase, Syscall, Trace};

use crate::{
    compare::{compare, Difference},
    drive::{Driver, Regs, Stop, Watchdog},
    restore::{restore, Restored},
    ReplayError,
};

/// How long a thread may run without reaching a syscall before the replay
/// gives up on the epoch (a spin loop waiting for another thread), beyond
/// twice what the same stretch took in the recording (`Run::slice`): a
/// recorder may wait seconds for a computing thread's next syscall to cut
/// an epoch there.
pub const TIME_SLICE: Duration = Duration::from_secs(2);

/// The first point where the replay left the recording.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Divergence {
    /// Sequence number of the recorded event where it happened (if any).
    pub seq: Option<u64>,
    /// Recorded thread id.
    pub tid: u32,
    pub expected: String,
    pub actual: String,
}

/// Outcome of one process's replay of one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessOutcome {
    pub pid: u32,
    pub events: u64,
    pub threads: usize,
    pub divergence: Option<Divergence>,
    /// Differences with the next checkpoint.
    pub differences: Vec<String>,
    /// Output bytes (writes) that differ from the recording.
    pub output_mismatches: u64,
    /// Exit status matched the recording (when the process exited).
    pub exit_status_match: Option<bool>,
    /// What was not replayed and why (e.g. a process forked inside the epoch).
    pub notes: Vec<String>,
    /// Why this process's epoch could not be replayed to its end (then it
    /// is neither verified nor diverged).
    pub skipped: Option<String>,
    /// The epoch ended, for this process, at an exec (checked up to it; the
    /// new image is the next checkpoint's, replayed from there).
    pub ended_at_exec: bool,
    /// Futex calls that changed nothing in the recording (a wait that
    /// returned EAGAIN, a wake that woke nobody) the serial run did not
    /// make, and such wakes it made that the recording did not: timing,
    /// not a divergence (the epoch is still checked against the next
    /// checkpoint).
    #[serde(skip_serializing_if = "is_zero")]
    pub futex_noops_dropped: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub futex_noops_added: u64,
    /// Recorded entries into synchronisation functions the run followed
    /// (timed interleaving), and entries it passed that the log does not
    /// have (made before the process was probed, at its second thread).
    #[serde(skip_serializing_if = "is_zero")]
    pub sync_events: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub sync_unlogged: u64,
    /// Processes it created during the epoch, replayed from their birth.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ProcessOutcome>,
}

/// Offsets in an x86-64 rt_sigframe, from the handler's stack pointer:
/// pretcode, then the ucontext (flags, link, stack, sigcontext, sigmask).
mod frame {
    const SIGCONTEXT: u64 = 8 + 8 + 8 + 24;
    pub const EFLAGS: u64 = SIGCONTEXT + 136;
    /// err, then trapno.
    pub const ERR: u64 = SIGCONTEXT + 152;
    pub const OLDMASK: u64 = SIGCONTEXT + 168;
    pub const CR2: u64 = SIGCONTEXT + 176;
    /// The pointer to the FPU save area.
    pub const FPSTATE: u64 = SIGCONTEXT + 184;
    pub const UC_SIGMASK: u64 = SIGCONTEXT + 256;
}

/// Live thread `tid` has a handler for `sig` (asked before delivering it:
/// SA_RESETHAND drops the handler as it runs).
fn caught(tid: u32, sig: i32) -> bool {
    crate::sys::signal_sets(tid)
        .is_ok_and(|(caught, _)| (1..=64).contains(&sig) && caught & (1 << (sig - 1)) != 0)
}

/// `UNIPLAY_REPLAY_DEBUG` is set: say more on stderr.
fn debug() -> bool {
    std::env::var_os("UNIPLAY_REPLAY_DEBUG").is_some()
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ProcessOutcome {
    /// No divergence, no difference with the next checkpoint, same exit.
    pub fn ok(&self) -> bool {
        self.skipped.is_none()
            && self.divergence.is_none()
            && self.differences.is_empty()
            && self.exit_status_match != Some(false)
            && self.children.iter().all(ProcessOutcome::ok)
    }

    fn new(pid: u32, events: usize) -> ProcessOutcome {
        ProcessOutcome {
            pid,
            events: events as u64,
            threads: 0,
            divergence: None,
            differences: Vec::new(),
            output_mismatches: 0,
            exit_status_match: None,
            notes: Vec::new(),
            skipped: None,
            ended_at_exec: false,
            futex_noops_dropped: 0,
            futex_noops_added: 0,
            sync_events: 0,
            sync_unlogged: 0,
            children: Vec::new(),
        }
    }

    /// This outcome and its descendants', parents first (children moved out).
    pub fn flatten(mut self) -> Vec<ProcessOutcome> {
        let children = std::mem::take(&mut self.children);
        let mut out = vec![self];
        for c in children {
            out.extend(c.flatten());
        }
        out
    }
}

/// The syscall events of one process in one epoch, in recorded order.
#[derive(Debug, Default)]
struct Log {
    order: VecDeque<Event>,
    /// Signals delivered to a thread before a syscall event (by its seq)
    /// and after the thread's previous one.
    signals: HashMap<u64, Vec<u32>>,
    exit: Option<(i32, u32)>,
    /// The CPU the first thread ran on when it made its first real
    /// syscall: where it was last switched in before it (or the syscall's).
    start_cpu: Option<u32>,
    /// The recorded siginfo of each signal delivered, by thread, in order.
    siginfos: HashMap<u32, VecDeque<Delivery>>,
    /// Images exec'd: (tid, path, argv), in order.
    execs: Vec<(u32, String, Vec<String>)>,
    /// Threads that received signals.
    tids: std::collections::HashSet<u32>,
    /// Signals delivered to a thread after its last syscall of the epoch
    /// (the checkpoint caught it as their handler started).
    final_signals: HashMap<u32, Vec<u32>>,
    /// Entries into recorded synchronisation functions (`EventKind::Sync`),
    /// for the timed interleaving.
    syncs: Vec<Event>,
}

/// Registers worth naming in a divergence.
fn call_text(nr: u32, args: &[u64]) -> String {
    let name = recorder_common::name(nr)
        .map(str::to_string)
        .unwrap_or_else(|| format!("syscall_{nr}"));
    let a: Vec<String> = args
        .iter()
        .map(|a| {
            if *a < 0x10000 {
                a.to_string()
            } else {
                format!("{a:#x}")
            }
        })
        .collect();
    format!("{name}({})", a.join(", "))
}

/// How the threads of a replayed process take turns (one runs at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interleave {
    /// A thread runs when the log says it makes its next syscall, up to it.
    Lazy,
    /// As `Lazy`, and after each syscall the thread runs ahead to its next
    /// one, so what it does in between is visible to the others at once.
    Eager,
    /// For processes with recorded sync events: breakpoints stop threads
    /// at the entries of the recorded lock calls too, and each call is
    /// placed just before its thread's next event (`Run::merge_syncs`), so
    /// critical sections follow each other as they did.
    Timed,
    /// As `Timed`, but a thread whose futex call returned runs on only
    /// just before its next event, not when the call returned: what it did
    /// in between (a woken condition waiter's own bookkeeping) may have
    /// come after other threads' calls in the recording.
    TimedLate,
}

impl Interleave {
    fn timed(self) -> bool {
        matches!(self, Interleave::Timed | Interleave::TimedLate)
    }
}

/// Replays epoch `epoch` of process `pid` on CPU `cpu`: a process whose
/// log has sync events first in the timed interleaving; then (or else)
/// with each thread run only when the log says it makes its next syscall;
/// if that diverges (threads that synchronise without syscalls can order
/// their critical sections differently), once more from the checkpoint
/// with each thread run ahead to its next syscall; last, for a process
/// with sync events, timed again with threads woken from futex waits run
/// on late (`Interleave::TimedLate`).
pub fn replay_process(
    trace: &Trace,
    epoch: u32,
    pid: u32,
    cpu: Option<usize>,
    known: &Knowledge,
    watchdog: &Watchdog,
) -> Result<ProcessOutcome, ReplayError> {
    let once = |mode| replay_once(trace, epoch, pid, cpu, known, watchdog, mode);
    let timed = match once(Interleave::Timed)? {
        Some(t) if t.ok() => return Ok(t),
        timed => timed,
    };
    let Some(first) = once(Interleave::Lazy)? else {
        unreachable!("only a timed run is ever left out");
    };
    if first.ok() {
        return Ok(first);
    }
    let later = [
        (
            Interleave::Eager,
            "verified on the second interleaving (threads run ahead to their next syscall)",
        ),
        (
            Interleave::TimedLate,
            "verified on the last interleaving (lock calls followed; threads woken from a futex wait run on just before their next event)",
        ),
    ];
    for (mode, note) in later {
        // A timed mode has nothing to do where the first timed run did not.
        if mode.timed() && timed.is_none() {
            continue;
        }
        if let Some(mut run) = once(mode)? {
            if run.ok() {
                run.notes.push(note.into());
                return Ok(run);
            }
        }
    }
    Ok(timed.unwrap_or(first))
}

fn replay_once(
    trace: &Trace,
    epoch: u32,
    pid: u32,
    cpu: Option<usize>,
    known: &Knowledge,
    watchdog: &Watchdog,
    mode: Interleave,
) -> Result<Option<ProcessOutcome>, ReplayError> {
    let mut logs = load_logs(trace, epoch)?;
    let log = logs.remove(&pid).unwrap_or_default();
    if mode.timed() && log.syncs.is_empty() {
        return Ok(None);
    }
    // `cpuid` reports the CPU it runs on (its APIC id) and cannot be trapped
    // here (no CPUID faulting); ld.so stores what it reads as a program
    // starts, possibly epochs after its exec. So an epoch that starts while
    // a process is still between its exec and its first syscall past that
    // (`recorder_common::before_cpuid`) replays on
    // the CPU the recording ran it on, with this thread (its tracer) beside
    // it; other epochs stay on their job's CPU.
    // (Not available_parallelism: this worker thread is pinned to one CPU.)
    // SAFETY: sysconf has no preconditions.
    let ncpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let job_cpu = cpu;
    let cut = trace
        .checkpoints()
        .iter()
        .find(|c| c.epoch == epoch)
        .map(|c| c.time_ns)
        .unwrap_or(0);
    let cpu = match log.start_cpu.map(|c| c as usize) {
        Some(c) if c < ncpus && (epoch == 0 || known.starting(pid, cut)) => Some(c),
        _ => cpu,
    };
    if cpu != job_cpu {
        if let Some(c) = cpu {
            crate::engine::pin_self(c);
        }
    }
    let outcome = replay_on(trace, epoch, pid, cpu, log, logs, known, watchdog, mode).map(Some);
    if cpu != job_cpu {
        if let Some(c) = job_cpu {
            crate::engine::pin_self(c);
        }
    }
    outcome
}

#[expect(
    clippy::too_many_arguments,
    reason = "one EP run's inputs, passed once"
)]
fn replay_on(
    trace: &Trace,
    epoch: u32,
    pid: u32,
    cpu: Option<usize>,
    log: Log,
    logs: HashMap<u32, Log>,
    known: &Knowledge,
    watchdog: &Watchdog,
    mode: Interleave,
) -> Result<ProcessOutcome, ReplayError> {
    if debug() {
        eprintln!(
            "replay: epoch {epoch} pid {pid}: start cpu {:?}, running on {cpu:?}",
            log.start_cpu
        );
    }
    let next = trace
        .checkpoints()
        .iter()
        .map(|c| c.epoch)
        .find(|&e| e > epoch);
    let next_execs = match next {
        Some(k1) => trace
            .checkpoint(k1)
            .map(|c| exec_pids(&c.reason))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut live = restore(trace, epoch, pid, cpu)?;
    let drv = Driver::new(live.pid, watchdog.clone());
    let mut run = Run::new(drv, pid, &mut live, trace, known, mode);
    run.logs = logs;
    run.next = next;
    run.next_execs = next_execs;
    run.out.threads = run.live.tids.len();
    run.prepare(epoch)?;
    run.play_and_check(log)?;
    Ok(run.out)
}

/// The processes a checkpoint's reason says it caught as their new image
/// started ("exec PID PID...").
fn exec_pids(reason: &str) -> Vec<u32> {
    match reason.strip_prefix("exec ") {
        Some(rest) => rest
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        None => Vec::new(),
    }
}

/// Facts about threads gathered from the whole trace: the clear_child_tid
/// address each thread was given (by set_tid_address or clone).
#[derive(Debug, Default, Clone)]
pub struct Knowledge {
    pub clear_child_tid: HashMap<u32, u64>,
    /// rseq areas registered (address, length): the kernel writes the CPU
    /// number there, so they are not compared.
    pub rseq: Vec<(u64, u64)>,
    /// Per process, its break as successful `brk` calls returned it, by
    /// time; 0 from an exec on (the new image's break is not known yet).
    pub brks: HashMap<u32, Vec<(u64, u64)>>,
    /// Per process, each image's start-up: (time execve returned, time of
    /// its first syscall after that other than those ld.so makes before it
    /// reads `cpuid`, `recorder_common::before_cpuid`). The recorder kept
    /// the process on one CPU in between.
    pub startups: HashMap<u32, Vec<(u64, u64)>>,
}

/// A signal's delivery as the recorder saw it at its signal-delivery-stop.
#[derive(Debug, Clone)]
struct Delivery {
    sig: u32,
    /// The kernel's siginfo_t.
    info: Vec<u8>,
    /// The thread's registers then (27 words), in traces that have them.
    regs: Option<Vec<u64>>,
}

impl Knowledge {
    /// Process `pid`'s break at `time`, if a `brk` of its current image
    /// said it before then.
    fn brk_at(&self, pid: u32, time: u64) -> Option<u64> {
        let v = self.brks.get(&pid)?;
        let at = v.partition_point(|&(t, _)| t < time);
        Some(v.get(at.checked_sub(1)?)?.1).filter(|&b| b != 0)
    }

    /// Process `pid` was between an exec and its first syscall past
    /// ld.so's `cpuid` at `time` (so it may not have run that yet).
    fn starting(&self, pid: u32, time: u64) -> bool {
        self.startups
            .get(&pid)
            .is_some_and(|v| v.iter().any(|&(exec, first)| exec <= time && time < first))
    }
}

impl Knowledge {
    pub fn gather(trace: &Trace) -> Knowledge {
        let mut k = Knowledge::default();
        for e in trace.events().flatten() {
            let EventKind::Syscall(s) = &e.kind else {
                continue;
            };
            if s.nr < recorder_common::PSEUDO_RDTSC && !recorder_common::before_cpuid(s.nr as u64) {
                if let Some(last) = k.startups.get_mut(&e.pid).and_then(|v| v.last_mut()) {
                    if last.1 == u64::MAX {
                        last.1 = e.time_ns;
                    }
                }
            }
            if matches!(s.nr, nr::EXECVE | nr::EXECVEAT) && s.ret == 0 {
                k.startups
                    .entry(e.pid)
                    .or_default()
                    .push((e.time_ns, u64::MAX));
                k.brks.entry(e.pid).or_default().push((e.time_ns, 0));
            }
            if s.nr == nr::BRK && s.ret > 0 {
                k.brks
                    .entry(e.pid)
                    .or_default()
                    .push((e.time_ns, s.ret as u64));
            }
            let a = s.args.as_slice();
            match s.nr {
                218 if !a.is_empty() => {
                    // set_tid_address
                    k.clear_child_tid.insert(e.tid, a[0]);
                }
                nr::CLONE if s.ret > 0 && a.len() >= 4 && a[0] & 0x0020_0000 != 0 => {
                    // CLONE_CHILD_CLEARTID
                    k.clear_child_tid.insert(s.ret as u32, a[3]);
                }
                nr::CLONE3 if s.ret > 0 => {
                    // struct clone_args: flags at 0, child_tid at 16.
                    if let Some(o) = s
                        .outputs
                        .iter()
                        .find(|o| o.arg == SLOT_INPUT && o.data.len() >= 24)
                    {
                        let w = |i: usize| {
                            u64::from_le_bytes(o.data[i..i + 8].try_into().expect("8 bytes"))
                        };
                        if w(0) & 0x0020_0000 != 0 {
                            k.clear_child_tid.insert(s.ret as u32, w(16));
                        }
                    }
                }
                334 if a.len() >= 2 && a[2] == 0 => k.rseq.push((a[0], a[1])),
                _ => {}
            }
        }
        k
    }
}

/// The logs of every process with events in epoch `epoch`, by pid.
fn load_logs(trace: &Trace, epoch: u32) -> Result<HashMap<u32, Log>, ReplayError> {
    let mut logs: HashMap<u32, Log> = HashMap::new();
    // Per tid: signals delivered since its last syscall; the CPU it was
    // last switched in on (until its process's start CPU is known).
    let mut pending: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut last_switch_in: HashMap<u32, u32> = HashMap::new();
    // Threads whose last siginfo no delivery has followed yet: a second one
    // for the same signal is the same stop reported again (a checkpoint
    // resumed the thread in between), not another delivery.
    let mut unmatched: HashSet<u32> = HashSet::new();
    for e in trace.events_in_epoch(epoch) {
        let e = e.map_err(|source| ReplayError::Trace { epoch, source })?;
        if let EventKind::EpochMark { epoch: m } = e.kind {
            // Events before the epoch's own mark happened before its
            // checkpoint (epoch 0 also holds what preceded the first cut).
            if m == epoch {
                logs.clear();
                pending.clear();
                last_switch_in.clear();
            }
            continue;
        }
        let log = logs.entry(e.pid).or_default();
        match &e.kind {
            EventKind::Syscall(sc) if sc.nr == recorder_common::PSEUDO_SIGINFO => {
                let sig = sc.args.as_slice().first().copied().unwrap_or(0) as u32;
                if let Some(o) = sc.outputs.iter().find(|o| o.arg == 0) {
                    let regs = sc
                        .outputs
                        .iter()
                        .find(|o| o.arg == 1 && o.data.len() == 27 * 8)
                        .map(|o| {
                            o.data
                                .chunks_exact(8)
                                .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
                                .collect()
                        });
                    let d = Delivery {
                        sig,
                        info: o.data.to_vec(),
                        regs,
                    };
                    let q = log.siginfos.entry(e.tid).or_default();
                    match q.back_mut() {
                        Some(last) if unmatched.contains(&e.tid) && last.sig == sig => *last = d,
                        _ => q.push_back(d),
                    }
                    unmatched.insert(e.tid);
                }
            }
            EventKind::Switch { next_tid, .. } if *next_tid == e.tid && log.start_cpu.is_none() => {
                last_switch_in.insert(e.tid, e.cpu);
            }
            EventKind::Syscall(sc) => {
                if log.start_cpu.is_none() && sc.nr != recorder_common::PSEUDO_RDTSC {
                    log.start_cpu = Some(last_switch_in.get(&e.tid).copied().unwrap_or(e.cpu));
                }
                if let Some(sigs) = pending.remove(&e.tid) {
                    log.signals.insert(e.seq, sigs);
                }
                log.order.push_back(e)
            }
            EventKind::Signal {
                sig,
                phase: SignalPhase::Delivered,
                ..
            } => {
                pending.entry(e.tid).or_default().push(*sig);
                unmatched.remove(&e.tid);
                log.tids.insert(e.tid);
            }
            EventKind::Exec { path, argv } => {
                log.execs.push((e.tid, path.clone(), argv.clone()));
            }
            EventKind::Sync { .. } => log.syncs.push(e),
            EventKind::Exit {
                code,
                signal,
                group_dead: true,
            } => {
                // After exit_group(c), the thread that dies last is killed
                // (SIGKILL) but the process's status is c.
                let group_code = log.order.iter().rev().find_map(|o| match &o.kind {
                    EventKind::Syscall(sc) if sc.nr == nr::EXIT_GROUP => {
                        sc.args.as_slice().first().map(|&c| c as i32 & 0xff)
                    }
                    _ => None,
                });
                log.exit = Some(match group_code {
                    Some(c) if *signal == libc::SIGKILL as u32 => (c, 0),
                    _ => (*code, *signal),
                });
            }
            _ => {}
        }
    }
    for (tid, sigs) in pending {
        if let Some(pid) = trace_pid_of(&logs, tid) {
            logs.entry(pid).or_default().final_signals.insert(tid, sigs);
        }
    }
    for log in logs.values_mut() {
        schedule_by_entry(&mut log.order);
        hoist_clones(&mut log.order);
    }
    Ok(logs)
}

/// The process whose log saw thread `tid` take a signal.
fn trace_pid_of(logs: &HashMap<u32, Log>, tid: u32) -> Option<u32> {
    logs.iter()
        .find(|(_, l)| l.tids.contains(&tid))
        .map(|(&p, _)| p)
}

const FUTEX_CMD: u64 = 0x7f;
const FUTEX_WAIT_OPS: [u64; 2] = [0, 9]; // FUTEX_WAIT, FUTEX_WAIT_BITSET
const FUTEX_WAKE_OPS: [u64; 2] = [1, 10]; // FUTEX_WAKE, FUTEX_WAKE_BITSET

/// A futex call of one of `ops`: its word and value.
fn futex_call(e: &Event, ops: &[u64]) -> Option<(u64, u64)> {
    match &e.kind {
        EventKind::Syscall(s) if s.nr == nr::FUTEX => {
            let a = s.args.as_slice();
            (a.len() >= 3 && ops.contains(&(a[1] & FUTEX_CMD))).then(|| (a[0], a[2]))
        }
        _ => None,
    }
}

/// The arguments of `sc` a replayed call must match: futex ignores the
/// registers its operation does not use (beyond word, operation and
/// value), and programs leave anything there.
fn compared_args(sc: &Syscall) -> usize {
    if sc.nr == nr::FUTEX {
        3
    } else {
        sc.args.as_slice().len()
    }
}

/// Whether the thread stopped at `regs` makes the call `sc`.
fn same_call(regs: &Regs, sc: &Syscall) -> bool {
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    let n = compared_args(sc);
    regs.orig_rax as u32 == sc.nr && args[..n] == sc.args.as_slice()[..n]
}

/// A futex call that changed nothing: a wait that returned at once (the
/// word had moved on: EAGAIN) or a wake that woke nobody. Whether a thread
/// makes one depends on how its lock attempts and releases fell against
/// the other threads' in time, which the serial run does not repeat.
fn noop_futex(sc: &Syscall) -> bool {
    const EAGAIN: i64 = -11;
    let a = sc.args.as_slice();
    sc.nr == nr::FUTEX
        && a.len() >= 2
        && ((FUTEX_WAIT_OPS.contains(&(a[1] & FUTEX_CMD)) && sc.ret == EAGAIN)
            || (FUTEX_WAKE_OPS.contains(&(a[1] & FUTEX_CMD)) && sc.ret == 0))
}

/// The thread stopped at `regs` is about to make a futex wait.
fn is_futex_wait(regs: &Regs) -> bool {
    regs.orig_rax as u32 == nr::FUTEX && FUTEX_WAIT_OPS.contains(&(regs.rsi & FUTEX_CMD))
}

/// The thread stopped at `regs` is about to make a futex wake.
fn is_futex_wake(regs: &Regs) -> bool {
    regs.orig_rax as u32 == nr::FUTEX && FUTEX_WAKE_OPS.contains(&(regs.rsi & FUTEX_CMD))
}

/// The x86 breakpoint instruction.
const INT3: u8 = 0xcc;

/// The largest of glibc's sync objects' sizes (pthread_cond_t and
/// pthread_rwlock_t: 48 and 56 bytes on x86-64): a futex word this far
/// past an object's address is taken for one of its own.
const SYNC_OBJECT_BYTES: u64 = 56;

/// A thread stopped at a sync breakpoint, for a divergence report.
fn sync_text(r: &Regs) -> String {
    format!(
        "a sync function at {:#x} (first argument {:#x})",
        r.rip, r.rdi
    )
}

/// When event `e` began: a syscall's entry, else when it was logged.
fn entered(e: &Event) -> u64 {
    match &e.kind {
        EventKind::Syscall(s)
            if s.flags & tracelog::SYSCALL_ENTER_UNSEEN == 0 && s.enter_ns != 0 =>
        {
            s.enter_ns
        }
        _ => e.time_ns,
    }
}

/// Threads switch at syscalls, and what a thread did before a syscall
/// happened before the syscall *entered* — a blocking call (a futex wait, a
/// read) returns much later than it starts. So syscalls are replayed in the
/// order they entered: a waiter has registered itself before its waker runs,
/// as in the recording. (Results come from the log either way.) A
/// successful exec goes at its return instead: the process's other threads
/// ran on while it killed them, and their last events come before it.
fn schedule_by_entry(order: &mut VecDeque<Event>) {
    order.make_contiguous().sort_by_key(|e| match &e.kind {
        EventKind::Syscall(s) if matches!(s.nr, nr::EXECVE | nr::EXECVEAT) && s.ret == 0 => {
            e.time_ns
        }
        _ => entered(e),
    });
}

/// Where each of `syncs` goes in a log of `order`: just before the next
/// event of its thread began (a syscall's entry, another sync call's), or
/// at its own time if it is its thread's last (see `Run::merge_syncs`).
fn sync_places(order: &VecDeque<Event>, syncs: &[Event]) -> Vec<u64> {
    let mut starts: HashMap<u32, Vec<u64>> = HashMap::new();
    for e in order.iter().chain(syncs) {
        starts.entry(e.tid).or_default().push(entered(e));
    }
    for v in starts.values_mut() {
        v.sort_unstable();
    }
    syncs
        .iter()
        .map(|e| {
            let next = starts.get(&e.tid).and_then(|v| {
                let i = v.partition_point(|&t| t <= e.time_ns);
                v.get(i).copied()
            });
            next.map_or(e.time_ns, |t| t - 1)
        })
        .collect()
}

/// Whether the arguments `tail` a replayed exec passes (its argv but
/// argv[0], the caller's choice) are those of `recorded`, the new image's
/// argv: a script's has the interpreter (and its argument) in front, so
/// `tail` must end it; and the recorder copies at most
/// `EXEC_ARGV_MAX` bytes of it, so a recorded argv that long may end
/// inside `tail` instead, its last string cut short.
fn argv_matches(tail: &[String], recorded: &[String]) -> bool {
    // Elementwise equal, the last recorded one possibly cut short.
    let lines_up = |live: &[String], rec: &[String]| {
        live.len() >= rec.len()
            && live
                .iter()
                .zip(rec)
                .enumerate()
                .all(|(i, (l, r))| l == r || (i + 1 == rec.len() && l.starts_with(r.as_str())))
    };
    if tail.is_empty() {
        return true;
    }
    if tail.len() < recorded.len() && lines_up(tail, &recorded[recorded.len() - tail.len()..]) {
        return true;
    }
    let bytes: u64 = recorded.iter().map(|a| a.len() as u64 + 1).sum();
    bytes + 1 >= recorder_common::EXEC_ARGV_MAX
        // argv[0], or an interpreter, its argument and the script, in front.
        && (1..recorded.len().min(4)).any(|j| lines_up(tail, &recorded[j..]))
}

/// Whether a thread other than `e`'s has a pending event in `order` on
/// `object` (a sync call on it, or a futex call on a word inside it) that
/// began before `began`, when `e` did (`entries`: sync events' entry
/// times by seq).
fn used_first_by_another(
    e: &Event,
    object: u64,
    began: u64,
    order: &VecDeque<Event>,
    entries: &HashMap<u64, u64>,
) -> bool {
    order.iter().any(|n| {
        n.tid != e.tid
            && match &n.kind {
                EventKind::Sync { object: o, .. } => {
                    *o == object && entries.get(&n.seq).is_some_and(|&b| b < began)
                }
                _ => {
                    entered(n) < began
                        && futex_call(n, &FUTEX_WAIT_OPS)
                            .or_else(|| futex_call(n, &FUTEX_WAKE_OPS))
                            .is_some_and(|(w, _)| (object..object + SYNC_OBJECT_BYTES).contains(&w))
                }
            }
    })
}

/// A new thread can run (and be logged) before the clone that made it
/// returns in its parent. The clone's entry came first, so the replay runs
/// the parent's clone just before the child's first event.
fn hoist_clones(order: &mut VecDeque<Event>) {
    let mut i = 0;
    while i < order.len() {
        let creator = match &order[i].kind {
            EventKind::Syscall(s) if matches!(s.nr, nr::CLONE | nr::CLONE3) && s.ret > 0 => {
                Some(s.ret as u32)
            }
            _ => None,
        };
        if let Some(child) = creator {
            if let Some(first) = order.iter().take(i).position(|e| e.tid == child) {
                let e = order.remove(i).expect("in range");
                order.insert(first, e);
            }
        }
        i += 1;
    }
}

struct Run<'a> {
    drv: Driver,
    /// The recorded pid.
    pid: u32,
    live: &'a mut Restored,
    trace: &'a Trace,
    known: &'a Knowledge,
    /// The emulated program break.
    brk: Option<u64>,
    /// Recorded fd → absolute path, for file mappings.
    fds: HashMap<i64, String>,
    /// The process's working directory (relative opens resolve against it).
    cwd: String,
    out: ProcessOutcome,
    /// Recorded tids whose thread exited.
    exited: Vec<u32>,
    /// Stack pointers of threads that exited in the epoch (not the last
    /// of their process), at their exit.
    exited_sps: Vec<u64>,
    /// Recorded tids stopped at the syscall the next checkpoint caught them in.
    at_cut: Vec<u32>,
    /// How threads take turns.
    mode: Interleave,
    /// Sync breakpoints (`Interleave::Timed`): address → the byte the
    /// breakpoint replaces there; and whether they are in.
    sync_points: HashMap<u64, u8>,
    armed: bool,
    /// Sync breakpoints to arm once their code is mapped (an epoch that
    /// starts before the C library is loaded).
    sync_unmapped: Vec<u64>,
    /// Sync breakpoints are in use (from the log's merge, or `arm_after`,
    /// to the end).
    sync_on: bool,
    /// The clone of the process's second thread, after which they are.
    arm_after: Option<u64>,
    /// Timed: threads to run ahead once the log reaches a time (the return
    /// of their futex call): (time, its seq, recorded tid).
    resumes: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// Live threads stopped at a sync breakpoint (rip on it), by the
    /// breakpoint's address: stepped over before they run on.
    at_bp: HashMap<u32, u64>,
    /// Timed: each recorded thread's sync entries not reached yet, in its
    /// program order: (seq, function, object).
    sync_queue: HashMap<u32, VecDeque<(u64, u64, u64)>>,
    /// Live threads stopped at the breakpoint of their next sync entry
    /// (its seq), and entries threads went through before their turn (on
    /// their way to a syscall made inside the function: a contended lock).
    reached: HashMap<u32, u64>,
    passed: HashSet<u64>,
    /// When each sync call began (its entry's time), by seq.
    sync_entry_ns: HashMap<u64, u64>,
    /// Recorded siginfo of delivered signals, by recorded tid.
    siginfos: HashMap<u32, VecDeque<Delivery>>,
    /// The syscall being handled is its thread's (process's) last in the
    /// epoch.
    last_of_thread: bool,
    last_of_process: bool,
    /// The syscall being handled, if interrupted, is restarted by the
    /// thread's next event with no signal in between.
    restarted_plainly: bool,
    /// Where threads run ahead stopped (live tid).
    prerun: HashMap<u32, Stop>,
    /// When the epoch began, and when each thread's last event handled
    /// ended (recorded tid; monotonic ns of the recording).
    start_ns: u64,
    last_ns: HashMap<u32, u64>,
    exit_status: Option<(i32, u32)>,
    /// Logs of the epoch's other processes, for children forked here.
    logs: HashMap<u32, Log>,
    /// The next checkpoint, and the processes it caught as they exec'd.
    next: Option<u32>,
    next_execs: Vec<u32>,
    /// Images this process exec'd in the recording: (tid, path, argv).
    execs: VecDeque<(u32, String, Vec<String>)>,
    /// Signal frames the replay had the kernel write (handler-entry sp).
    frames: Vec<u64>,
    /// Their bytes the kernel may or may not have written (`fpstate_holes`).
    frame_holes: Vec<(u64, u64)>,
    /// Live threads that took a debug trap (a replay breakpoint or
    /// watchpoint) since their last trapped rdtsc: see `handler_entered`.
    debug_trapped: HashSet<u32>,
    /// Recorded tid → the signal mask its last syscall installed for its
    /// duration (pselect6, ppoll, epoll_pwait, rt_sigsuspend), when a signal
    /// cut that call short: replay skipped the call, so the mask is
    /// installed for the delivery (see `step`).
    call_mask: HashMap<u32, u64>,
    /// Signals to deliver after the log, by recorded tid.
    final_signals: HashMap<u32, Vec<u32>>,
    /// The process ended its epoch by exec'ing (checked up to there; the
    /// new image is the next checkpoint's).
    exec_end: bool,
}

impl<'a> Run<'a> {
    fn new(
        drv: Driver,
        pid: u32,
        live: &'a mut Restored,
        trace: &'a Trace,
        known: &'a Knowledge,
        mode: Interleave,
    ) -> Run<'a> {
        Run {
            drv,
            pid,
            live,
            trace,
            known,
            brk: None,
            fds: HashMap::new(),
            cwd: "/".into(),
            out: ProcessOutcome::new(pid, 0),
            exited: Vec::new(),
            exited_sps: Vec::new(),
            at_cut: Vec::new(),
            mode,
            sync_points: HashMap::new(),
            armed: false,
            sync_unmapped: Vec::new(),
            sync_on: false,
            arm_after: None,
            resumes: BinaryHeap::new(),
            at_bp: HashMap::new(),
            sync_queue: HashMap::new(),
            reached: HashMap::new(),
            passed: HashSet::new(),
            sync_entry_ns: HashMap::new(),
            siginfos: HashMap::new(),
            last_of_thread: false,
            last_of_process: false,
            restarted_plainly: false,
            prerun: HashMap::new(),
            start_ns: 0,
            last_ns: HashMap::new(),
            exit_status: None,
            logs: HashMap::new(),
            next: None,
            next_execs: Vec::new(),
            execs: VecDeque::new(),
            exec_end: false,
            final_signals: HashMap::new(),
            frames: Vec::new(),
            frame_holes: Vec::new(),
            debug_trapped: HashSet::new(),
            call_mask: HashMap::new(),
        }
    }

    /// Plays the process's log, then checks where it ended: its exit
    /// status, or the next checkpoint.
    fn play_and_check(&mut self, log: Log) -> Result<(), ReplayError> {
        let Log {
            order,
            signals,
            exit,
            start_cpu: _,
            siginfos,
            execs,
            final_signals,
            tids: _,
            syncs,
        } = log;
        self.final_signals = final_signals;
        self.out.events = order.len() as u64;
        self.siginfos = siginfos;
        self.execs = execs.into();
        let order = if self.mode.timed() {
            self.out.sync_events = syncs.len() as u64;
            self.merge_syncs(order, syncs)?
        } else {
            order
        };
        let finished = self.play(order, signals)?;
        // What follows runs threads to recorded states, which sync
        // breakpoints would get in the way of; and compares memory.
        self.sync_on = false;
        self.disarm()?;
        if !finished || self.out.divergence.is_some() || self.out.skipped.is_some() {
            return Ok(());
        }
        if self.exec_end {
            self.out.ended_at_exec = true;
            return Ok(());
        }
        if self.next.is_none() && self.exit_status.is_none() && exit.is_some() {
            // Killed by a signal after its last syscall (a SIGTERM, say).
            self.deliver_final_signals()?;
        }
        match (self.next, self.exit_status) {
            (_, Some(status)) => self.out.exit_status_match = Some(Some(status) == exit),
            (Some(k1), None) => self.check_against(k1)?,
            (None, None) => self
                .out
                .notes
                .push("the trace ends before this process exits: nothing to compare".into()),
        }
        Ok(())
    }

    /// The last epoch: signals the log shows delivered after a thread's
    /// last syscall are delivered; one that kills the process gives it its
    /// exit status.
    fn deliver_final_signals(&mut self) -> Result<(), ReplayError> {
        for (rec, sigs) in std::mem::take(&mut self.final_signals) {
            let Some(tid) = self.live_tid(rec) else {
                continue;
            };
            for sig in sigs {
                self.drv.tgkill(tid, sig as i32)?;
                let stop = match self.drv.run_to_syscall(tid, TIME_SLICE)? {
                    Stop::Signal(s) if s == sig as i32 => self.drv.enter_handler(tid, s)?,
                    other => other,
                };
                if let Stop::Exited(status) = stop {
                    self.exit_status = Some(status);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// How long recorded thread `tid` may run to reach what it reached at
    /// `until_ns` in the recording, from its last event handled.
    fn slice(&self, tid: u32, until_ns: u64) -> Duration {
        let since = self.last_ns.get(&tid).copied().unwrap_or(self.start_ns);
        TIME_SLICE + Duration::from_nanos(until_ns.saturating_sub(since)) * 2
    }

    fn live_tid(&self, tid: u32) -> Option<u32> {
        self.live.tids.get(&tid).copied()
    }

    fn diverge(&mut self, seq: Option<u64>, tid: u32, expected: String, actual: String) {
        if self.out.divergence.is_none() {
            self.out.divergence = Some(Divergence {
                seq,
                tid,
                expected,
                actual,
            });
        }
    }

    /// Before running: the fd table and clear_child_tid of restored threads.
    fn prepare(&mut self, epoch: u32) -> Result<(), ReplayError> {
        let cp = self
            .trace
            .checkpoint(epoch)
            .map_err(|source| ReplayError::Trace { epoch, source })?;
        self.start_ns = cp.time_ns;
        // Restored threads' last trap is whatever restoring them left; the
        // recorded ones' is an rdtsc's (see `handler_entered`).
        self.debug_trapped = self.live.tids.values().copied().collect();
        if let Some(p) = cp.processes.iter().find(|p| p.pid == self.pid) {
            self.cwd = p.cwd.clone();
            for f in &p.fds {
                self.fds.insert(f.fd as i64, f.path.clone());
            }
            // The heap can be several mappings (a part made after write
            // tracking registered the rest does not merge with it).
            // An empty heap has no mapping: then the break the log last
            // showed (glibc's malloc grows it without asking brk(0) again).
            self.brk = p
                .maps
                .iter()
                .filter(|m| m.path == "[heap]")
                .map(|m| m.end)
                .max()
                .or_else(|| self.known.brk_at(self.pid, cp.time_ns));
        }
        let tids: Vec<(u32, u32)> = self.live.tids.iter().map(|(&r, &l)| (r, l)).collect();
        for &(_, live) in &tids {
            // rdtsc traps, so the logged values can be handed back.
            const PR_SET_TSC: u64 = 26;
            const PR_TSC_SIGSEGV: u64 = 2;
            self.live
                .inject(live, 157, [PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0, 0])?;
        }
        for (rec, live) in tids {
            if let Some(&addr) = self.known.clear_child_tid.get(&rec) {
                self.live.inject(live, 218, [addr, 0, 0, 0, 0, 0])?;
            }
        }
        Ok(())
    }

    /// Runs the log. Returns false if the run stopped early (divergence).
    fn play(
        &mut self,
        mut order: VecDeque<Event>,
        mut signals: HashMap<u64, Vec<u32>>,
    ) -> Result<bool, ReplayError> {
        loop {
            if self.sync_on && !self.sync_unmapped.is_empty() {
                self.arm()?;
            }
            self.run_resumes(&order, &signals)?;
            let Some(e) = order.pop_front() else {
                break;
            };
            if let EventKind::Sync { op, ip, object } = e.kind {
                if !self.sync_event(&e, (op, ip, object), &order, &signals)? {
                    return Ok(false);
                }
                continue;
            }
            let EventKind::Syscall(sc) = &e.kind else {
                continue;
            };
            // A new thread's first event is its side of clone: already done.
            if sc.ret == 0
                && matches!(sc.nr, nr::CLONE | nr::CLONE3 | nr::FORK | nr::VFORK)
                && self.born_here(e.tid)
            {
                continue;
            }
            let Some(tid) = self.live_tid(e.tid) else {
                self.out.notes.push(format!(
                    "thread {} has events but no replayed thread (created by a process fork?)",
                    e.tid
                ));
                continue;
            };
            // Signals the log shows delivered to this thread before this
            // syscall: made pending now, delivered on the way.
            let mut sent: Vec<i32> = Vec::new();
            // A signal that got in through the mask of the call it cut short
            // (skipped here): that mask for the delivery, and the thread's
            // own back in the handler's frame, where the kernel saves it.
            let mut own_mask = None;
            for sig in signals.remove(&e.seq).unwrap_or_default() {
                if let (true, Some(mask)) = (sent.is_empty(), self.call_mask.remove(&e.tid)) {
                    own_mask = Some(self.drv.sigmask(tid)?);
                    self.drv.set_sigmask(tid, mask)?;
                }
                // One that interrupted user code goes where it did: run the
                // thread to that state first (it is right after its last
                // syscall, unless it was run ahead).
                if sent.is_empty()
                    && !self.prerun.contains_key(&tid)
                    && !self.go_to_delivery(Some(e.seq), e.tid, tid, sig)?
                {
                    return Ok(false);
                }
                self.drv.tgkill(tid, sig as i32)?;
                sent.push(sig as i32);
            }
            let slice = self.slice(e.tid, entered(&e));
            self.last_ns.insert(e.tid, e.time_ns);
            let mut stop = match (sent.is_empty(), self.prerun.remove(&tid)) {
                (true, Some(stop)) => stop,
                _ => {
                    self.hold_lock_for(&e, &order, &signals)?;
                    self.run_to_syscall(tid, slice, entered(&e))?
                }
            };
            if debug() {
                eprintln!(
                    "replay: event {} tid {} syscall {}: {stop:?}",
                    e.seq, e.tid, sc.nr
                );
            }
            let inside = self
                .reached
                .get(&tid)
                .and_then(|s| self.sync_entry_ns.get(s))
                .is_some_and(|&b| b < entered(&e));
            if matches!(stop, Stop::Breakpoint(_)) && inside {
                // Run ahead to the entry of a sync call this syscall is
                // made inside (a lock's wait): on into it.
                self.hold_lock_for(&e, &order, &signals)?;
                stop = self.run_to_syscall(tid, slice, entered(&e))?;
            }
            while let Stop::Signal(sig) = stop {
                let Some(i) = sent.iter().position(|&s| s == sig) else {
                    break;
                };
                sent.remove(i);
                // With the siginfo it had (sender, code, status), so the
                // handler and the signal frame see what they saw.
                let delivery = self.take_delivery(e.tid, sig as u32);
                if let Some(d) = &delivery {
                    self.drv.set_siginfo(tid, &d.info)?;
                }
                let caught = caught(tid, sig);
                stop = match self.drv.enter_handler(tid, sig)? {
                    Stop::Reached => {
                        if caught {
                            let flags = delivery.and_then(|d| d.regs).map(|r| r[18]);
                            self.handler_entered(tid, own_mask.take(), flags)?;
                        }
                        self.run_to_syscall(tid, TIME_SLICE, entered(&e))?
                    }
                    other => other,
                };
            }
            if sc.nr == recorder_common::PSEUDO_RDTSC {
                if !self.rdtsc(&e, sc, tid, stop)? {
                    return Ok(false);
                }
                continue;
            }
            // Futex calls that changed nothing (see `noop_futex`) come and go
            // with timing: a wake the recording did not make is answered
            // "woke nobody"; a lock wait it did not make is answered "the
            // word moved on" (EAGAIN) once the lock's holder has let go
            // (`release_lock`); one the recording made that did nothing is
            // dropped if the thread does not make it.
            // Timed: sync events say where the thread goes next; a call the
            // log has later is not taken for one it does not have.
            if let (true, Stop::SyscallEntry(regs)) = (self.mode.timed(), stop) {
                if !same_call(&regs, sc) && noop_futex(sc) {
                    self.out.futex_noops_dropped += 1;
                    self.prerun.insert(tid, stop);
                    continue;
                }
            }
            let mut extra = 0;
            while let Stop::SyscallEntry(regs) = stop {
                if same_call(&regs, sc) || extra == 8 {
                    break;
                }
                let ret = if is_futex_wake(&regs) {
                    0
                } else if is_futex_wait(&regs)
                    && self.move_word(e.tid, regs.rdi, regs.rdx as u32, &order, &signals)?
                {
                    -11 // EAGAIN
                } else {
                    break;
                };
                extra += 1;
                self.out.futex_noops_added += 1;
                self.drv.emulate(tid, ret)?;
                stop = self.run_to_syscall(tid, slice, entered(&e))?;
            }
            if let Stop::Breakpoint(_) = stop {
                if noop_futex(sc) {
                    // Went on to a later sync call without it.
                    self.out.futex_noops_dropped += 1;
                    self.prerun.insert(tid, stop);
                    continue;
                }
            }
            if let Stop::SyscallEntry(regs) = stop {
                if !same_call(&regs, sc) && noop_futex(sc) {
                    self.out.futex_noops_dropped += 1;
                    self.prerun.insert(tid, stop);
                    continue;
                }
            }
            match stop {
                Stop::SyscallEntry(regs) => {
                    let next = order.iter().find(|n| n.tid == e.tid);
                    self.last_of_thread = next.is_none();
                    self.last_of_process = order.is_empty();
                    self.restarted_plainly = next.is_some_and(|n| {
                        !signals.contains_key(&n.seq)
                            && matches!(&n.kind, EventKind::Syscall(s) if s.nr == nr::RESTART_SYSCALL || s.nr == sc.nr)
                    });
                    if !self.syscall(&e, sc, tid, regs)? {
                        return Ok(false);
                    }
                    if self.sync_on
                        && matches!(sc.nr, nr::MMAP | nr::MPROTECT | nr::MUNMAP | nr::MREMAP)
                    {
                        self.rearm_remapped()?;
                    }
                    if self.arm_after == Some(e.seq) {
                        self.sync_on = true;
                        self.arm()?;
                    }
                    // Timed: a futex call returns into the sync call that
                    // made it, which goes on at once in its own code (a
                    // condition wait takes its mutex again): that runs
                    // when the call returned.
                    if self.mode.timed() && sc.nr == nr::FUTEX && !self.at_cut.contains(&e.tid) {
                        if let Some(next) = order.iter().find(|n| n.tid == e.tid) {
                            let at = match self.mode {
                                Interleave::TimedLate => {
                                    entered(next).saturating_sub(1).max(e.time_ns)
                                }
                                _ => e.time_ns,
                            };
                            self.resumes.push(Reverse((at, e.seq, e.tid)));
                        }
                    }
                    // Eager interleaving: let the thread run its user code up
                    // to its next syscall now, so what it does between
                    // syscalls (an uncontended unlock, say) is visible to the
                    // others, as it was when they ran at the same time.
                    if let Some(n) = order.iter().find(|n| n.tid == e.tid) {
                        if self.mode == Interleave::Eager && !self.at_cut.contains(&e.tid) {
                            self.hold_lock_for(n, &order, &signals)?;
                            let slice = self.slice(e.tid, entered(n));
                            let next = self.drv.run_to_syscall(tid, slice)?;
                            self.prerun.insert(tid, next);
                        }
                    }
                }
                Stop::Reached => {}
                other => {
                    let actual = match other {
                        Stop::Exited(status) => {
                            self.exit_status = Some(status);
                            "the process exited".to_string()
                        }
                        Stop::Signal(sig) => match self.drv.regs(tid) {
                            Ok(r) => format!("signal {sig} at {:#x} (sp {:#x})", r.rip, r.rsp),
                            Err(_) => format!("signal {sig}"),
                        },
                        Stop::Timeout => format!("no syscall within twice the recorded time plus {} s: the thread spins, waiting for another thread (preempted)", TIME_SLICE.as_secs()),
                        Stop::Other(what) => what.to_string(),
                        Stop::Breakpoint(r) => sync_text(&r),
                        Stop::SyscallEntry(_) | Stop::Reached => unreachable!("handled above"),
                    };
                    self.diverge(
                        Some(e.seq),
                        e.tid,
                        call_text(sc.nr, sc.args.as_slice()),
                        actual,
                    );
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Timed: the process's sync events merged into its log, and
    /// breakpoints armed at the functions they entered.
    ///
    /// A sync event is placed just before its thread's next event (a
    /// syscall entry, the next sync call's entry): by then what the call
    /// did (a lock taken or let go) was surely done, whereas the entry's
    /// own time can come well before its effect (the probe's trap, or a
    /// preemption right after it, delays it past other threads' events).
    /// So a critical section is placed at its end, and critical sections
    /// on one lock, which do not overlap, keep their order. A thread that
    /// in the recording found the lock taken earlier than that waits for
    /// it here too (`hold_lock_for`), and one that found a lock let go
    /// earlier makes its holder let go (`move_word`).
    fn merge_syncs(
        &mut self,
        order: VecDeque<Event>,
        syncs: Vec<Event>,
    ) -> Result<VecDeque<Event>, ReplayError> {
        let places = sync_places(&order, &syncs);
        let mut points: Vec<u64> = Vec::new();
        let mut placed: Vec<Event> = Vec::with_capacity(syncs.len());
        for (e, at) in syncs.into_iter().zip(places) {
            let EventKind::Sync { ip, object, .. } = e.kind else {
                continue;
            };
            points.push(ip);
            self.sync_entry_ns.insert(e.seq, e.time_ns);
            self.sync_queue
                .entry(e.tid)
                .or_default()
                .push_back((e.seq, ip, object));
            placed.push(Event { time_ns: at, ..e });
        }
        points.sort_unstable();
        points.dedup();
        self.sync_unmapped = points;
        // The recorder probes a process at its second thread: until then
        // (a clone of a thread before the first sync call), its calls are
        // not in the log, and breakpoints would take them for logged ones.
        let first_sync = placed.iter().map(|e| self.sync_entry_ns[&e.seq]).min();
        self.arm_after = order
            .iter()
            .find(|e| {
                matches!(&e.kind, EventKind::Syscall(sc)
                    if matches!(sc.nr, nr::CLONE | nr::CLONE3) && sc.ret > 0
                        && clone_flags(sc) & CLONE_THREAD != 0)
            })
            .filter(|e| first_sync.is_some_and(|f| entered(e) < f))
            .map(|e| e.seq);
        if self.arm_after.is_none() {
            self.sync_on = true;
            self.arm()?;
        }
        let mut order: VecDeque<Event> = order.into_iter().chain(placed).collect();
        schedule_by_entry(&mut order);
        hoist_clones(&mut order);
        Ok(order)
    }

    /// Puts the sync breakpoints in, those whose code is mapped.
    fn arm(&mut self) -> Result<(), ReplayError> {
        let mut unmapped = Vec::new();
        let mut mapped = Vec::new();
        for ip in std::mem::take(&mut self.sync_unmapped) {
            let mut b = [0u8; 1];
            match self.live.read_memory(ip, &mut b) {
                Ok(1) if b[0] != INT3 => {
                    self.sync_points.insert(ip, b[0]);
                    mapped.push(ip);
                }
                Ok(_) => {}
                Err(_) => unmapped.push(ip),
            }
        }
        self.sync_unmapped = unmapped;
        if !std::mem::replace(&mut self.armed, true) {
            mapped = self.sync_points.keys().copied().collect();
        }
        for a in mapped {
            self.live.write_memory(a, &[INT3])?;
        }
        Ok(())
    }

    /// After the process changed its mappings: breakpoints whose code was
    /// mapped anew (ld.so maps a library whole, then its segments over
    /// it) are put back, or wait for their code again.
    fn rearm_remapped(&mut self) -> Result<(), ReplayError> {
        if !self.armed {
            return Ok(());
        }
        let mut gone = Vec::new();
        for (&a, byte) in self.sync_points.iter_mut() {
            let mut b = [0u8; 1];
            match self.live.read_memory(a, &mut b) {
                Ok(1) if b[0] == INT3 => {}
                Ok(1) => {
                    *byte = b[0];
                    self.live.write_memory(a, &[INT3])?;
                }
                _ => gone.push(a),
            }
        }
        for a in gone {
            self.sync_points.remove(&a);
            self.sync_unmapped.push(a);
        }
        Ok(())
    }

    /// Takes the sync breakpoints out (threads stopped on one run on from
    /// there as if it had not been). A process that exited has none left.
    fn disarm(&mut self) -> Result<(), ReplayError> {
        if !std::mem::replace(&mut self.armed, false) {
            return Ok(());
        }
        for (&a, &b) in &self.sync_points {
            if let Err(e) = self.live.write_memory(a, &[b]) {
                if self.exit_status.is_none() && !self.live.tids.is_empty() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A live thread stopped at an armed sync breakpoint executes the
    /// instruction under it. `Some`: it stopped otherwise on the way.
    fn step_over(&mut self, tid: u32) -> Result<Option<Stop>, ReplayError> {
        if let Some(seq) = self.reached.remove(&tid) {
            self.passed.insert(seq);
        }
        let Some(addr) = self.at_bp.remove(&tid) else {
            return Ok(None);
        };
        let Some(&byte) = self.sync_points.get(&addr).filter(|_| self.armed) else {
            return Ok(None);
        };
        if self.drv.regs(tid)?.rip != addr {
            return Ok(None);
        }
        self.debug_trapped.insert(tid);
        self.live.write_memory(addr, &[byte])?;
        let stop = self.drv.step(tid);
        self.live.write_memory(addr, &[INT3])?;
        match stop? {
            Stop::Reached => Ok(None),
            other => Ok(Some(other)),
        }
    }

    /// A SIGTRAP stop at one of the armed sync breakpoints, as
    /// `Stop::Breakpoint` (rip put back on it).
    fn as_breakpoint(&mut self, tid: u32, stop: Stop) -> Result<Stop, ReplayError> {
        if !matches!(stop, Stop::Signal(libc::SIGTRAP)) || !self.armed {
            return Ok(stop);
        }
        let mut regs = self.drv.regs(tid)?;
        let addr = regs.rip.wrapping_sub(1);
        if !self.sync_points.contains_key(&addr) {
            return Ok(stop);
        }
        regs.rip = addr;
        self.drv.set_regs(tid, regs)?;
        self.at_bp.insert(tid, addr);
        self.debug_trapped.insert(tid);
        let rec = self
            .live
            .tids
            .iter()
            .find(|(_, &l)| l == tid)
            .map(|(&r, _)| r);
        if let Some(q) = rec.and_then(|r| self.sync_queue.get_mut(&r)) {
            if q.front()
                .is_some_and(|&(_, ip, obj)| ip == addr && obj == regs.rdi)
            {
                let (seq, _, _) = q.pop_front().expect("checked");
                self.reached.insert(tid, seq);
            } else {
                self.out.sync_unlogged += 1;
            }
        }
        Ok(Stop::Breakpoint(regs))
    }

    /// Runs live thread `tid` on to its next syscall entry or sync
    /// breakpoint.
    fn run_on(&mut self, tid: u32, slice: Duration) -> Result<Stop, ReplayError> {
        if let Some(stop) = self.step_over(tid)? {
            return Ok(stop);
        }
        let stop = self.drv.run_to_syscall(tid, slice)?;
        self.as_breakpoint(tid, stop)
    }

    /// Runs live thread `tid` to its next syscall entry, through sync
    /// breakpoints the log has nothing for (calls made before the process
    /// was probed, at its second thread) and through sync calls that
    /// began before `before_ns` (the syscall it goes to is made inside
    /// one: a contended lock's wait). It stops at one that began later:
    /// it went past the syscall the log has next.
    fn run_to_syscall(
        &mut self,
        tid: u32,
        slice: Duration,
        before_ns: u64,
    ) -> Result<Stop, ReplayError> {
        loop {
            match self.run_on(tid, slice)? {
                Stop::Breakpoint(r) => {
                    let began = self
                        .reached
                        .get(&tid)
                        .and_then(|s| self.sync_entry_ns.get(s).copied());
                    if began.is_some_and(|b| b >= before_ns) {
                        return Ok(Stop::Breakpoint(r));
                    }
                }
                stop => return Ok(stop),
            }
        }
    }

    /// Timed: runs recorded thread `rec` (live `tid`) ahead to its next
    /// recorded point: a syscall entry, or the entry of its next sync call
    /// (which may come later in `order`: it is placed at its return).
    fn run_ahead(
        &mut self,
        rec: u32,
        tid: u32,
        order: &VecDeque<Event>,
        signals: &HashMap<u64, Vec<u32>>,
    ) -> Result<Stop, ReplayError> {
        let next = order.iter().find(|n| n.tid == rec);
        if let Some(n) = next {
            // A lock it found taken then, whose holder has not taken it yet
            // here (it did in its own code, no event).
            self.hold_lock_for(n, order, signals)?;
        }
        let slice = self.slice(rec, next.map_or(self.start_ns, entered));
        loop {
            match self.run_on(tid, slice)? {
                Stop::Breakpoint(_) if !self.reached.contains_key(&tid) => {}
                stop => return Ok(stop),
            }
        }
    }

    /// Timed: runs ahead the threads whose futex calls returned before the
    /// next event of the log began. One with a signal to take before its
    /// next event is left where it is (the delivery places it).
    fn run_resumes(
        &mut self,
        order: &VecDeque<Event>,
        signals: &HashMap<u64, Vec<u32>>,
    ) -> Result<(), ReplayError> {
        while let Some(&Reverse((t, _, rec))) = self.resumes.peek() {
            if order.front().is_some_and(|n| entered(n) < t) {
                break;
            }
            self.resumes.pop();
            let (Some(tid), Some(next)) = (self.live_tid(rec), order.iter().find(|n| n.tid == rec))
            else {
                continue;
            };
            if self.prerun.contains_key(&tid)
                || self.at_cut.contains(&rec)
                || signals.contains_key(&next.seq)
            {
                continue;
            }
            if debug() {
                eprintln!("replay: resume {rec} at {t}");
            }
            let stop = self.run_ahead(rec, tid, order, signals)?;
            if debug() {
                eprintln!("replay: resumed {rec}: {stop:?}");
            }
            self.prerun.insert(tid, stop);
        }
        Ok(())
    }

    /// Timed: sync event `e` (op, ip, object): its thread must be at that
    /// entry (run there now, or run ahead to it before); its code from
    /// there runs on to where its next event begins.
    fn sync_event(
        &mut self,
        e: &Event,
        (op, ip, object): (u32, u64, u64),
        order: &VecDeque<Event>,
        signals: &HashMap<u64, Vec<u32>>,
    ) -> Result<bool, ReplayError> {
        let Some(tid) = self.live_tid(e.tid) else {
            return Ok(true);
        };
        let slice = self.slice(e.tid, e.time_ns);
        self.last_ns.insert(e.tid, e.time_ns);
        if self.passed.remove(&e.seq) {
            // Gone through already, to a syscall inside the function; left
            // there, or (run until it took a lock) in its code: on from it.
            if !self.prerun.contains_key(&tid)
                && !self.at_cut.contains(&e.tid)
                && order.iter().any(|n| n.tid == e.tid)
            {
                let stop = self.run_ahead(e.tid, tid, order, signals)?;
                self.prerun.insert(tid, stop);
            }
            return Ok(true);
        }
        let mut stop = match self.prerun.remove(&tid) {
            Some(stop) => stop,
            None => self.run_on(tid, slice)?,
        };
        if debug() {
            eprintln!(
                "replay: event {} tid {} sync {op} {object:#x}: {stop:?}",
                e.seq, e.tid
            );
        }
        // Futex calls that changed nothing may be missing from the log
        // (see `noop_futex`): a wake is answered "woke nobody"; a wait
        // "the word moved on" once another thread has moved it (what the
        // thread waits for happened, in the recording, while it ran).
        for _ in 0..8 {
            let ret = match stop {
                Stop::SyscallEntry(regs) if is_futex_wake(&regs) => 0,
                Stop::SyscallEntry(regs)
                    if is_futex_wait(&regs)
                        && self.move_word(e.tid, regs.rdi, regs.rdx as u32, order, signals)? =>
                {
                    -11 // EAGAIN
                }
                _ => break,
            };
            self.out.futex_noops_added += 1;
            self.drv.emulate(tid, ret)?;
            stop = self.run_on(tid, slice)?;
        }
        match stop {
            Stop::Breakpoint(r)
                if r.rip == ip && r.rdi == object && self.reached.remove(&tid) == Some(e.seq) => {}
            other => {
                let expected = format!(
                    "{}({object:#x})",
                    recorder_common::sync_name(op).unwrap_or("a sync function")
                );
                let actual = match other {
                    Stop::Breakpoint(r) => sync_text(&r),
                    Stop::SyscallEntry(r) => format!(
                        "a syscall first: {}",
                        call_text(r.orig_rax as u32, &[r.rdi, r.rsi, r.rdx])
                    ),
                    Stop::Signal(sig) => match self.drv.regs(tid) {
                        Ok(r) => format!("signal {sig} at {:#x} (sp {:#x})", r.rip, r.rsp),
                        Err(_) => format!("signal {sig}"),
                    },
                    other => format!("{other:?}"),
                };
                self.diverge(Some(e.seq), e.tid, expected, actual);
                return Ok(false);
            }
        }
        if !self.at_cut.contains(&e.tid) {
            if order.iter().any(|n| n.tid == e.tid) {
                let stop = self.run_ahead(e.tid, tid, order, signals)?;
                self.prerun.insert(tid, stop);
            } else if order.iter().any(|n| {
                n.tid != e.tid && matches!(n.kind, EventKind::Sync { object: o, .. } if o == object)
            }) {
                // Its last event here, on an object others use later: what
                // the call does (a lock let go) they wait for, and nothing
                // of its own comes to run it on (it is cut further on, or
                // an attached recording ended).
                self.run_through_call(e.tid, tid)?;
            }
        }
        Ok(true)
    }

    /// Runs live thread `tid`, at the entry of a sync call, to the call's
    /// return (a one-shot breakpoint at its return address), or to a
    /// syscall or sync entry on the way, where it stays as if run ahead.
    fn run_through_call(&mut self, rec: u32, tid: u32) -> Result<(), ReplayError> {
        let sp = self.drv.regs(tid)?.rsp;
        let mut ret = [0u8; 8];
        if self.live.read_memory(sp, &mut ret)? != 8 {
            return Ok(());
        }
        let ret = u64::from_ne_bytes(ret);
        let mut byte = [0u8; 1];
        if self.sync_points.contains_key(&ret) || self.live.read_memory(ret, &mut byte)? != 1 {
            return Ok(());
        }
        self.live.write_memory(ret, &[INT3])?;
        let stop = self.run_on(tid, self.slice(rec, self.start_ns));
        self.live.write_memory(ret, &byte)?;
        match stop? {
            Stop::Signal(libc::SIGTRAP) => {
                let mut regs = self.drv.regs(tid)?;
                if regs.rip == ret + 1 {
                    regs.rip = ret;
                    self.drv.set_regs(tid, regs)?;
                } else {
                    self.prerun.insert(tid, Stop::Signal(libc::SIGTRAP));
                }
            }
            other => {
                self.prerun.insert(tid, other);
            }
        }
        Ok(())
    }

    /// Before a thread runs to a lock's wait: in the recording another
    /// thread held the lock when this one tried it, but in the serial run
    /// that thread may not have taken it yet (an uncontended acquisition
    /// is user code, no syscall). Event `e` is a futex wait with the value
    /// 2 ("locked, with waiters": glibc's and Rust's mutexes) on a word that
    /// is 0 (free) now: the thread whose wake on that word comes next in
    /// the log is run until it writes the word (a hardware watchpoint), at
    /// most a few writes, and left there, holding the lock; it goes on
    /// from there at its turn. Should it reach a syscall first, it waits
    /// there as if run ahead.
    fn hold_lock_for(
        &mut self,
        e: &Event,
        order: &VecDeque<Event>,
        signals: &HashMap<u64, Vec<u32>>,
    ) -> Result<(), ReplayError> {
        let Some((word, 2)) = futex_call(e, &FUTEX_WAIT_OPS) else {
            return Ok(());
        };
        // One that returned at once (EAGAIN) saw the lock free by the time
        // it called: its holder let go before, nothing to stage.
        if matches!(&e.kind, EventKind::Syscall(s) if s.ret == -11) {
            return Ok(());
        }
        let held = |w: Option<u32>| w != Some(0);
        if held(self.word_at(word)) {
            return Ok(());
        }
        let Some(holder) = order
            .iter()
            .find(|n| {
                n.tid != e.tid && futex_call(n, &FUTEX_WAKE_OPS).is_some_and(|(w, _)| w == word)
            })
            .map(|n| n.tid)
        else {
            return Ok(());
        };
        self.run_until_word(holder, word, &held, order, signals)
    }

    /// A thread (recorded `waiter`) makes a futex wait on `word` (while it
    /// holds `val`) that the recording does not have there: in the
    /// recording another thread had moved the word on by then (released
    /// the lock, posted the condition), in user code the serial run has not
    /// run yet. The other threads are run on, each until it writes the
    /// word or reaches its next syscall (where it waits its turn, as if run
    /// ahead), until the word has moved: released (0) for a lock (the value
    /// 2, "locked, with waiters", of glibc's and Rust's mutexes), any other
    /// value otherwise. True if it has: the wait then returns EAGAIN, as
    /// the kernel's would, and the thread checks again.
    fn move_word(
        &mut self,
        waiter: u32,
        word: u64,
        val: u32,
        order: &VecDeque<Event>,
        signals: &HashMap<u64, Vec<u32>>,
    ) -> Result<bool, ReplayError> {
        let moved =
            |w: Option<u32>| w.is_some_and(|now| if val == 2 { now == 0 } else { now != val });
        let mut others: Vec<u32> = Vec::new();
        for n in order {
            if n.tid != waiter && !others.contains(&n.tid) {
                others.push(n.tid);
            }
        }
        for rec in others {
            if moved(self.word_at(word)) {
                break;
            }
            self.run_until_word(rec, word, &moved, order, signals)?;
        }
        Ok(moved(self.word_at(word)))
    }

    /// The 4-byte futex word at `addr` of the replayed process.
    fn word_at(&self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        let n = self.live.read_memory(addr, &mut b).ok()?;
        (n == 4).then(|| u32::from_ne_bytes(b))
    }

    /// Runs recorded thread `rec` until the futex word at `word` is `done`
    /// (it stops at each write of the word, a few at most) or it reaches
    /// its next syscall, where it waits its turn as if run ahead. A thread
    /// with a signal to take first, at its cut, or already run ahead is
    /// left where it is.
    fn run_until_word(
        &mut self,
        rec: u32,
        word: u64,
        done: &dyn Fn(Option<u32>) -> bool,
        order: &VecDeque<Event>,
        signals: &HashMap<u64, Vec<u32>>,
    ) -> Result<(), ReplayError> {
        let Some(next) = order.iter().find(|n| n.tid == rec) else {
            return Ok(());
        };
        let Some(tid) = self.live_tid(rec) else {
            return Ok(());
        };
        // One run ahead to a sync entry goes on from it (timed). One whose
        // futex call returns later (timed: `resumes`) stays in it: it took
        // a lock or a condition only then.
        let at_sync = matches!(self.prerun.get(&tid), Some(Stop::Breakpoint(_)));
        if signals.contains_key(&next.seq)
            || self.at_cut.contains(&rec)
            || (self.prerun.contains_key(&tid) && !at_sync)
            || self.resumes.iter().any(|Reverse((_, _, r))| *r == rec)
        {
            return Ok(());
        }
        self.prerun.remove(&tid);
        if debug() {
            eprintln!("replay: run_until_word {rec} {word:#x}");
        }
        let slice = self.slice(rec, entered(next));
        self.debug_trapped.insert(tid);
        // At most a few writes of the word, and sync entries on the way.
        let mut writes = 0;
        for _ in 0..16 {
            let stop = match self.step_over(tid)? {
                Some(stop) => stop,
                None => self.drv.run_until_write(tid, word, slice)?,
            };
            match self.as_breakpoint(tid, stop)? {
                Stop::Reached if done(self.word_at(word)) => break,
                Stop::Reached => {
                    writes += 1;
                    if writes == 4 {
                        break;
                    }
                }
                Stop::Breakpoint(r) if !self.may_pass(tid, order) => {
                    self.prerun.insert(tid, Stop::Breakpoint(r));
                    break;
                }
                Stop::Breakpoint(_) => {}
                other => {
                    self.prerun.insert(tid, other);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Whether live thread `tid`, stopped at the entry of the sync call the
    /// log has next for it, may go through it ahead of its turn: no other
    /// thread's pending event on the same object (a sync call on it, or a
    /// futex call on a word inside it) began before it did. Running a
    /// lock's holder on to its release must not take it through a later
    /// call on an object others used first (a condition it would wait on
    /// before they signal it).
    fn may_pass(&self, tid: u32, order: &VecDeque<Event>) -> bool {
        let Some(&seq) = self.reached.get(&tid) else {
            return true; // a call the log has nothing for
        };
        let Some(e) = order.iter().find(|n| n.seq == seq) else {
            return true;
        };
        let (EventKind::Sync { object, .. }, Some(&began)) =
            (&e.kind, self.sync_entry_ns.get(&seq))
        else {
            return true;
        };
        !used_first_by_another(e, *object, began, order, &self.sync_entry_ns)
    }

    /// Runs `tid` until it is in the state of recorded registers `regs`
    /// (and FPU/SSE state `fpregs`, if given): see `Driver::run_to_state`.
    fn run_to(&mut self, tid: u32, regs: &[u64], fpregs: &[u8]) -> Result<Stop, ReplayError> {
        let armed = self.armed;
        self.disarm()?;
        let stop = self.run_to_state(tid, regs, fpregs);
        if armed {
            self.arm()?;
        }
        stop
    }

    fn run_to_state(&mut self, tid: u32, regs: &[u64], fpregs: &[u8]) -> Result<Stop, ReplayError> {
        self.debug_trapped.insert(tid);
        let live = &*self.live;
        let poke = |a: u64, d: &[u8]| live.write_memory(a, d);
        let peek = |a: u64| {
            let mut b = [0u8; 1];
            live.read_memory(a, &mut b).map(|_| b[0])
        };
        self.drv
            .run_to_state(tid, regs, fpregs, TIME_SLICE, &poke, &peek)
    }

    /// Before `sig` is made pending for live thread `tid` (recorded `rtid`):
    /// if the recording delivered it in the middle of user code, runs the
    /// thread there first. False when the epoch diverged on the way. `seq`:
    /// the event the signal comes before (None: at the epoch's end).
    fn go_to_delivery(
        &mut self,
        seq: Option<u64>,
        rtid: u32,
        tid: u32,
        sig: u32,
    ) -> Result<bool, ReplayError> {
        let Some(at) = self.delivery_ahead(rtid, tid, sig)? else {
            return Ok(true);
        };
        match self.run_to(tid, &at, &[])? {
            Stop::Reached => {}
            // Too far (a hot loop): delivered where the thread is, as if
            // at its next syscall.
            Stop::Timeout => {
                if let Some(seq) = seq {
                    self.out.notes.push(format!(
                        "signal {sig} delivered short of where it was (event {seq})"
                    ));
                }
            }
            other => {
                let actual = match other {
                    Stop::SyscallEntry(r) => {
                        format!("a syscall ({}) first", call_text(r.orig_rax as u32, &[]))
                    }
                    Stop::Exited(_) => "the process exited".into(),
                    Stop::Signal(s) => format!("signal {s}"),
                    Stop::Other(what) => what.into(),
                    Stop::Breakpoint(r) => sync_text(&r),
                    Stop::Reached | Stop::Timeout => unreachable!("handled above"),
                };
                let expected = format!("signal {sig} delivered at {:#x}", at[16]);
                self.diverge(seq, rtid, expected, actual);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The thread must be at a trapped rdtsc/rdtscp: answer it with the
    /// logged value.
    fn rdtsc(
        &mut self,
        e: &Event,
        sc: &Syscall,
        tid: u32,
        stop: Stop,
    ) -> Result<bool, ReplayError> {
        let want = if sc.args.as_slice().first() == Some(&u64::MAX) {
            "rdtsc"
        } else {
            "rdtscp"
        };
        let got = match stop {
            Stop::Signal(libc::SIGSEGV) => {
                let mut r = self.drv.regs(tid)?;
                let mut insn = [0u8; 3];
                let _ = self.live.read_memory(r.rip, &mut insn);
                let len = match insn {
                    [0x0f, 0x31, _] if want == "rdtsc" => 2,
                    [0x0f, 0x01, 0xf9] if want == "rdtscp" => 3,
                    _ => {
                        self.diverge(
                            Some(e.seq),
                            e.tid,
                            want.into(),
                            format!("SIGSEGV at {:#x}", r.rip),
                        );
                        return Ok(false);
                    }
                };
                let v = sc.ret as u64;
                r.rax = v & 0xffff_ffff;
                r.rdx = v >> 32;
                if len == 3 {
                    r.rcx = sc.args.as_slice()[0];
                }
                r.rip += len;
                self.drv.set_regs(tid, r)?;
                // The fault set the thread's last trap as in the recording.
                self.debug_trapped.remove(&tid);
                return Ok(true);
            }
            Stop::SyscallEntry(r) => call_text(r.orig_rax as u32, &[]),
            other => format!("{other:?}"),
        };
        self.diverge(Some(e.seq), e.tid, want.into(), got);
        Ok(false)
    }

    /// The recorded siginfo of the next `sig` delivered to recorded `tid`.
    fn take_delivery(&mut self, tid: u32, sig: u32) -> Option<Delivery> {
        let q = self.siginfos.get_mut(&tid)?;
        let at = q.iter().position(|d| d.sig == sig)?;
        q.remove(at)
    }

    /// Where the recording delivered `sig` to `tid` in the middle of its
    /// user code (not at a syscall's return), if it did.
    fn delivered_in_user_code(&self, tid: u32, sig: u32) -> Option<Vec<u64>> {
        let d = self.siginfos.get(&tid)?.iter().find(|d| d.sig == sig)?;
        d.regs.clone().filter(|r| r[15] as i64 == -1)
    }

    /// `delivered_in_user_code`, unless that is where live thread `live`
    /// stands (an interrupt right after its last syscall returned): then
    /// delivering now is delivering there.
    fn delivery_ahead(
        &self,
        tid: u32,
        live: u32,
        sig: u32,
    ) -> Result<Option<Vec<u64>>, ReplayError> {
        let Some(at) = self.delivered_in_user_code(tid, sig) else {
            return Ok(None);
        };
        let here = self.drv.regs(live)?.rip;
        Ok((here != at[16]).then_some(at))
    }

    fn born_here(&self, tid: u32) -> bool {
        self.live.tids.contains_key(&tid)
    }

    /// At a syscall-entry stop: check, then emulate or execute.
    fn syscall(
        &mut self,
        e: &Event,
        sc: &Syscall,
        tid: u32,
        regs: Regs,
    ) -> Result<bool, ReplayError> {
        if !same_call(&regs, sc) {
            let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
            self.diverge(
                Some(e.seq),
                e.tid,
                call_text(sc.nr, sc.args.as_slice()),
                call_text(regs.orig_rax as u32, &args[..compared_args(sc)]),
            );
            return Ok(false);
        }
        self.compare_inputs(sc, tid)?;
        self.call_mask.remove(&e.tid);
        if let Some(mask) = self.call_mask_of(sc) {
            self.call_mask.insert(e.tid, mask);
        }
        if sc.flags & tracelog::SYSCALL_NO_RETURN != 0 {
            // exit / exit_group: run it for real.
            let group = sc.nr == nr::EXIT_GROUP || self.live.tids.len() == 1;
            if !group {
                self.exited_sps.push(regs.rsp);
            }
            let status = self.drv.execute_exit(tid, group)?;
            if group {
                self.exit_status = status.or(Some((sc.args.as_slice()[0] as i32 & 0xff, 0)));
            }
            self.live.tids.remove(&e.tid);
            self.live.forget_thread(tid);
            self.exited.push(e.tid);
            return Ok(true);
        }
        if sc.ret < 0 && (-516..=-512).contains(&sc.ret) {
            // What an interrupted call wrote on its way out stays written
            // (nanosleep's remaining time).
            self.write_outputs(sc, tid)?;
        }
        if sc.ret < 0
            && (-516..=-512).contains(&sc.ret)
            && self.last_of_thread
            && !self.final_signals.contains_key(&e.tid)
        {
            // Interrupted by the recorder's checkpoint (not by a signal it
            // then caught the thread taking): the thread stays at this
            // syscall (the cut), as it did in the recording.
            self.at_cut.push(e.tid);
            return Ok(true);
        }
        if sc.ret < 0 && (-516..=-512).contains(&sc.ret) && self.restarted_plainly {
            // Interrupted with no handler to run (a stop, the recorder
            // stopping the tree for a checkpoint it then put off): the
            // kernel re-ran the `syscall` instruction, as restart_syscall
            // for -ERESTART_RESTARTBLOCK. Replay skipped the call, so it
            // does the same.
            const ERESTART_RESTARTBLOCK: i64 = -516;
            let mut r = regs;
            r.rip -= 2;
            r.rax = if sc.ret == ERESTART_RESTARTBLOCK {
                nr::RESTART_SYSCALL as u64
            } else {
                sc.nr as u64
            };
            self.drv.set_regs(tid, r)?;
            return Ok(true);
        }
        if sc.ret < 0 && (-516..=-512).contains(&sc.ret) {
            // Interrupted by a signal: return the restart code; the signal,
            // delivered before the thread's next event, makes the kernel
            // restart the call (or fail it with EINTR) as it did then.
            return self.drv.emulate(tid, sc.ret).map(|_| true);
        }
        let action = spec(sc.nr).action;
        let result = match sc.nr {
            12 => self.emulate_brk(tid, sc)?,            // brk
            9 => self.execute_mmap(e, tid, regs, sc)?,   // mmap
            25 => self.execute_fixed(tid, regs, sc, 4)?, // mremap: force MREMAP_FIXED
            nr::CLONE | nr::CLONE3 | nr::FORK | nr::VFORK => {
                self.execute_clone(e, sc, tid, regs)?
            }
            nr::EXECVE | nr::EXECVEAT if sc.ret == 0 => {
                // A new image is not rebuilt inside an epoch: the recorder
                // checkpoints every exec'd image as it starts, so the exec
                // ends this process's epoch. Checked: it execs what it did.
                if !self.last_of_process || !self.next_execs.contains(&self.pid) {
                    self.out.skipped = Some(format!(
                        "the process exec'd inside the epoch (event {}) and the next checkpoint does not start at that exec: replayed up to the exec",
                        e.seq
                    ));
                    return Ok(false);
                }
                return self.check_exec(e, sc, regs);
            }
            // rt_sigreturn restores the registers from the signal frame: its
            // "result" is the interrupted code's rax, and no argument
            // registers must be put back.
            15 => {
                self.drv.execute_raw(tid)?;
                return Ok(true);
            }
            // rseq (the kernel would write CPU numbers), set_tid_address
            // (returns the recorded tid): emulated.
            334 => {
                // Registered, the kernel writes the CPU into cpu_id_start and
                // cpu_id (glibc reads them to know registration worked): write
                // the recorded CPU.
                let a = sc.args.as_slice();
                if sc.ret == 0 && a.len() >= 3 && a[2] == 0 {
                    let cpu = e.cpu.to_le_bytes();
                    self.live.write_memory(a[0], &[cpu, cpu].concat())?;
                }
                self.drv.emulate(tid, sc.ret)?
            }
            218 => self.drv.emulate(tid, sc.ret)?,
            _ if action == ACTION_EXECUTE => self.drv.execute(tid)?,
            _ => self.drv.emulate(tid, sc.ret)?,
        };
        if result != sc.ret {
            self.diverge(
                Some(e.seq),
                e.tid,
                format!("{} = {}", call_text(sc.nr, sc.args.as_slice()), sc.ret),
                format!("= {result}"),
            );
            return Ok(false);
        }
        if action != ACTION_EXECUTE || sc.nr == 13 || sc.nr == 14 || sc.nr == 131 {
            self.write_outputs(sc, tid)?;
        }
        self.track_fds(sc);
        Ok(true)
    }

    /// Bytes the program gave the kernel (write buffers, paths) must be
    /// what the recorded program gave.
    /// The mask `sc` installed while it waited, if a signal cut it short
    /// (EINTR or -ERESTART*) and it had one: read from the replayed
    /// process, whose memory is the recording's here.
    fn call_mask_of(&self, sc: &Syscall) -> Option<u64> {
        const EINTR: i64 = -4;
        if sc.ret != EINTR && !(-516..=-512).contains(&sc.ret) {
            return None;
        }
        let a = sc.args.as_slice();
        let read = |addr: u64| -> Option<u64> {
            let mut b = [0u8; 8];
            (addr != 0 && self.live.read_memory(addr, &mut b).ok()? == 8)
                .then(|| u64::from_ne_bytes(b))
        };
        let set = match sc.nr {
            130 => *a.first()?,       // rt_sigsuspend(set, size)
            271 => *a.get(3)?,        // ppoll(fds, n, timeout, set, size)
            281 | 441 => *a.get(4)?,  // epoll_pwait(2)(epfd, ev, n, t, set, size)
            270 => read(*a.get(5)?)?, // pselect6: {set, size} at arg 5
            _ => return None,
        };
        read(set)
    }

    fn compare_inputs(&mut self, sc: &Syscall, tid: u32) -> Result<(), ReplayError> {
        for o in sc.outputs.iter().filter(|o| o.arg >= SLOT_INPUT) {
            let mut buf = vec![0u8; o.data.len()];
            let n = self.live.read_memory(o.addr, &mut buf).unwrap_or(0);
            if n != buf.len() || buf[..] != o.data[..] {
                self.out.output_mismatches += 1;
                let _ = tid;
            }
        }
        Ok(())
    }

    fn write_outputs(&mut self, sc: &Syscall, _tid: u32) -> Result<(), ReplayError> {
        for o in sc
            .outputs
            .iter()
            .filter(|o| o.arg < SLOT_INPUT && !o.data.is_empty())
        {
            self.live.write_memory(o.addr, &o.data)?;
        }
        Ok(())
    }

    fn track_fds(&mut self, sc: &Syscall) {
        const AT_FDCWD: i64 = -100;
        let a = sc.args.as_slice();
        let path = || {
            sc.outputs.iter().find(|o| o.arg >= SLOT_INPUT).map(|o| {
                let p = o.data.strip_suffix(&[0]).unwrap_or(&o.data);
                String::from_utf8_lossy(p).into_owned()
            })
        };
        // The directory an *at call's descriptor names.
        let dir = |fd: u64| match fd as i32 as i64 {
            AT_FDCWD => Some(self.cwd.clone()),
            fd => self.fds.get(&fd).cloned(),
        };
        if sc.ret < 0 {
            return;
        }
        match sc.nr {
            2 => {
                if let Some(p) = path() {
                    self.fds
                        .insert(sc.ret, tracelog::resolve_path(&self.cwd, &p));
                }
            }
            257 | 437 if !a.is_empty() => {
                if let (Some(p), Some(d)) = (path(), dir(a[0])) {
                    self.fds.insert(sc.ret, tracelog::resolve_path(&d, &p));
                }
            }
            3 if !a.is_empty() => {
                self.fds.remove(&(a[0] as i64));
            }
            32 | 33 | 292 if !a.is_empty() => {
                if let Some(p) = self.fds.get(&(a[0] as i64)).cloned() {
                    self.fds.insert(sc.ret, p);
                }
            }
            80 => {
                if let Some(p) = path() {
                    self.cwd = tracelog::resolve_path(&self.cwd, &p);
                }
            }
            81 if !a.is_empty() => {
                if let Some(d) = self.fds.get(&(a[0] as i64)).cloned() {
                    self.cwd = d;
                }
            }
            _ => {}
        }
    }

    /// brk cannot move the kernel's break here (that needs
    /// CAP_SYS_RESOURCE): map or unmap the heap's growth ourselves.
    fn emulate_brk(&mut self, tid: u32, sc: &Syscall) -> Result<i64, ReplayError> {
        let new = sc.ret as u64;
        if let Some(cur) = self.brk {
            let (cur_end, new_end) = (page_up(cur), page_up(new));
            if new_end > cur_end {
                self.drv.inject(
                    tid,
                    self.live.scratch,
                    9,
                    [cur_end, new_end - cur_end, 3, 0x32, u64::MAX, 0],
                )?;
            } else if new_end < cur_end {
                self.drv.inject(
                    tid,
                    self.live.scratch,
                    11,
                    [new_end, cur_end - new_end, 0, 0, 0, 0],
                )?;
            }
        }
        self.brk = Some(new);
        self.drv.emulate(tid, sc.ret)
    }

    /// mmap at the recorded address; a file mapping maps the trace's copy.
    fn execute_mmap(
        &mut self,
        e: &Event,
        tid: u32,
        regs: Regs,
        sc: &Syscall,
    ) -> Result<i64, ReplayError> {
        const MAP_FIXED: u64 = 0x10;
        const MAP_ANONYMOUS: u64 = 0x20;
        if sc.ret < 0 {
            return self.drv.emulate(tid, sc.ret);
        }
        let mut r = regs;
        r.rdi = sc.ret as u64;
        r.r10 |= MAP_FIXED;
        r.r10 &= !0x10_0000; // MAP_FIXED_NOREPLACE
        let file = r.r10 & MAP_ANONYMOUS == 0 && (r.r8 as i64) >= 0;
        let mut opened = None;
        if file {
            let path = self.fds.get(&(r.r8 as i64)).cloned();
            let copy = path.as_deref().and_then(|p| self.file_copy(p, e.time_ns));
            let Some(copy) = copy else {
                self.diverge(
                    Some(e.seq),
                    e.tid,
                    format!("{} = {}", call_text(sc.nr, sc.args.as_slice()), sc.ret),
                    format!(
                        "no copy of the mapped file ({}) in the trace",
                        path.as_deref().unwrap_or("fd not opened in this epoch")
                    ),
                );
                return Ok(i64::MIN);
            };
            let fd = self.open_file(tid, &copy)?;
            r.r8 = fd as u64;
            opened = Some(fd);
            // The copy is the trace's, opened read-only: a shared mapping
            // becomes a private one (same bytes; writes stay in the
            // replayed process, never reach the trace or the host).
            const MAP_TYPE: u64 = 0x0f;
            const MAP_PRIVATE: u64 = 0x02;
            r.r10 = (r.r10 & !MAP_TYPE) | MAP_PRIVATE;
        }
        let got = self.drv.execute_with(tid, r)?;
        if let Some(fd) = opened {
            self.drv
                .inject(tid, self.live.scratch, 3, [fd as u64, 0, 0, 0, 0, 0])?;
        }
        Ok(got)
    }

    /// Opens `path` (a file of the replayer's) inside the replayed process.
    fn open_file(&mut self, tid: u32, path: &std::path::Path) -> Result<i64, ReplayError> {
        let mut bytes = path.as_os_str().as_encoded_bytes().to_vec();
        bytes.push(0);
        let at = self.live.scratch + 0x800;
        if bytes.len() > 0x800 {
            return Err(ReplayError::UnexpectedStop {
                tid,
                status: "path too long".into(),
                during: "opening a file copy",
            });
        }
        self.live.write_memory(at, &bytes)?;
        const AT_FDCWD: u64 = -100i64 as u64;
        const O_RDONLY_CLOEXEC: u64 = 0o2000000;
        let fd = self.drv.inject(
            tid,
            self.live.scratch,
            257,
            [AT_FDCWD, at, O_RDONLY_CLOEXEC, 0, 0, 0],
        )?;
        if fd < 0 {
            return Err(ReplayError::Injected {
                what: format!("openat({})", path.display()),
                tid,
                errno: std::io::Error::from_raw_os_error(-fd as i32),
            });
        }
        Ok(fd)
    }

    /// A copy of the file at `path` in the trace, from any checkpoint's map.
    fn file_copy(&self, path: &str, time_ns: u64) -> Option<std::path::PathBuf> {
        if let Some(p) = self
            .trace
            .meta()
            .file_at(path, time_ns)
            .and_then(|h| self.trace.file_path(h))
        {
            return Some(p);
        }
        for info in self.trace.checkpoints() {
            let Ok(cp) = self.trace.checkpoint(info.epoch) else {
                continue;
            };
            for p in &cp.processes {
                if let Some(h) = p
                    .maps
                    .iter()
                    .find(|m| m.path == path)
                    .and_then(|m| m.file.clone())
                {
                    return self.trace.file_path(&h);
                }
            }
        }
        None
    }

    /// mremap: move to the recorded address if it moved.
    fn execute_fixed(
        &mut self,
        tid: u32,
        regs: Regs,
        sc: &Syscall,
        _flag_arg: usize,
    ) -> Result<i64, ReplayError> {
        const MREMAP_MAYMOVE: u64 = 1;
        const MREMAP_FIXED: u64 = 2;
        let mut r = regs;
        if sc.ret >= 0 && sc.ret as u64 != r.rdi {
            r.r10 |= MREMAP_MAYMOVE | MREMAP_FIXED;
            r.r8 = sc.ret as u64;
        }
        self.drv.execute_with(tid, r)
    }

    /// A new thread: run clone for real, map its recorded tid to the live one.
    fn execute_clone(
        &mut self,
        e: &Event,
        sc: &Syscall,
        tid: u32,
        regs: Regs,
    ) -> Result<i64, ReplayError> {
        let flags = if sc.nr == nr::CLONE {
            regs.rdi
        } else {
            clone_flags(sc)
        };
        if sc.ret <= 0 {
            return self.drv.emulate(tid, sc.ret);
        }
        if sc.nr == nr::FORK || sc.nr == nr::VFORK || flags & CLONE_THREAD == 0 {
            return self.execute_fork(e, sc, tid, regs);
        }
        let child = self.drv.execute_clone(tid)?;
        self.live.tids.insert(sc.ret as u32, child);
        self.live.adopt_thread(child);
        let _ = e;
        // The live kernel returned the live tid, and wrote it where
        // CLONE_PARENT_SETTID / CLONE_CHILD_SETTID asked: the program must
        // see the recorded one.
        self.drv.set_return(tid, sc.ret)?;
        let (ptid, ctid) = if sc.nr == nr::CLONE {
            (regs.rdx, regs.r10)
        } else {
            let word = |i: usize| {
                sc.outputs
                    .iter()
                    .find(|o| o.arg == SLOT_INPUT && o.data.len() >= i + 8)
                    .map(|o| u64::from_le_bytes(o.data[i..i + 8].try_into().expect("8 bytes")))
                    .unwrap_or(0)
            };
            (word(24), word(16))
        };
        let recorded = (sc.ret as u32).to_le_bytes();
        if flags & CLONE_PARENT_SETTID != 0 && ptid != 0 {
            self.live.write_memory(ptid, &recorded)?;
        }
        if flags & CLONE_CHILD_SETTID != 0 && ctid != 0 {
            self.live.write_memory(ctid, &recorded)?;
        }
        Ok(sc.ret)
    }

    /// A new process: created for real from the replayed one (a copy of it
    /// as the recorded child was of its parent), then its own log is
    /// replayed right away, before the parent goes on: the child's syscalls
    /// are emulated, so its order against the parent's does not matter
    /// (a vfork parent waited for it anyway).
    fn execute_fork(
        &mut self,
        e: &Event,
        sc: &Syscall,
        tid: u32,
        regs: Regs,
    ) -> Result<i64, ReplayError> {
        let Some(args) = CloneArgs::of(sc, &regs) else {
            self.out.notes.push(format!(
                "process {} was created with clone flags replay does not rebuild: replayed from the next checkpoint",
                sc.ret
            ));
            return self.drv.emulate(tid, sc.ret);
        };
        // As a plain clone(2): no exit signal (the replayed parent must not
        // see its replayed child die: its waits are emulated) and no
        // CLONE_VFORK (the parent stays stopped while the child runs).
        let mut call = regs;
        call.orig_rax = nr::CLONE as u64;
        call.rdi = args.flags & !(0xff | CLONE_VFORK);
        (call.rsi, call.rdx, call.r10, call.r8) = (args.stack, args.ptid, args.ctid, args.tls);
        // The child must not inherit the sync breakpoints.
        let armed = self.armed;
        self.disarm()?;
        let forked = self.drv.execute_fork(tid, call);
        if armed {
            self.arm()?;
        }
        let (ret, child) = forked?;
        if ret < 0 || child == 0 {
            self.diverge(
                Some(e.seq),
                e.tid,
                format!("{} = {}", call_text(sc.nr, sc.args.as_slice()), sc.ret),
                format!("= {ret} (creating the process failed)"),
            );
            return Ok(i64::MIN);
        }
        let pid = sc.ret as u32;
        let recorded = pid.to_le_bytes();
        if args.flags & CLONE_PARENT_SETTID != 0 && args.ptid != 0 {
            self.live.write_memory(args.ptid, &recorded)?;
        }
        let mut child = self.live.forked(child, pid)?;
        if args.flags & CLONE_CHILD_SETTID != 0 && args.ctid != 0 {
            child.write_memory(args.ctid, &recorded)?;
        }
        let outcome = self.run_child(pid, &mut child);
        child.kill();
        self.out.children.push(outcome?);
        self.drv.set_return(tid, sc.ret)?;
        Ok(sc.ret)
    }

    /// Replays the log of child process `pid` (recorded pid), just created
    /// as `live`.
    fn run_child(&mut self, pid: u32, live: &mut Restored) -> Result<ProcessOutcome, ReplayError> {
        let log = self.logs.remove(&pid).unwrap_or_default();
        let drv = self.drv.for_process(live.pid);
        let mut run = Run::new(drv, pid, live, self.trace, self.known, self.mode);
        run.logs = std::mem::take(&mut self.logs);
        run.next = self.next;
        run.next_execs = self.next_execs.clone();
        run.brk = self.brk;
        run.fds = self.fds.clone();
        run.out.threads = 1;
        let played = run.play_and_check(log);
        self.logs = std::mem::take(&mut run.logs);
        played?;
        Ok(run.out)
    }

    /// At a successful execve that ends the process's epoch: the program
    /// must exec the recorded path with the recorded arguments.
    fn check_exec(&mut self, e: &Event, sc: &Syscall, regs: Regs) -> Result<bool, ReplayError> {
        let recorded = self
            .execs
            .iter()
            .position(|(t, _, _)| *t == e.tid)
            .and_then(|i| self.execs.remove(i));
        let (path_at, argv_at) = if sc.nr == nr::EXECVE {
            (Some(regs.rdi), regs.rsi)
        } else {
            (None, regs.rdx)
        };
        if let Some((_, path, argv)) = recorded {
            let mut live_argv = Vec::new();
            for i in 0..4096u64 {
                let mut ptr = [0u8; 8];
                if self
                    .live
                    .read_memory(argv_at + 8 * i, &mut ptr)
                    .unwrap_or(0)
                    < 8
                {
                    break;
                }
                match u64::from_le_bytes(ptr) {
                    0 => break,
                    p => live_argv.push(self.read_cstr(p)),
                }
            }
            let tail = live_argv.get(1..).unwrap_or_default();
            let args_match = argv_matches(tail, &argv);
            let path_matches = path_at.is_none_or(|at| self.read_cstr(at) == path);
            if !args_match || !path_matches {
                let actual = path_at.map(|at| self.read_cstr(at)).unwrap_or_default();
                self.diverge(
                    Some(e.seq),
                    e.tid,
                    format!("exec {path} {}", argv.join(" ")),
                    format!("exec {actual} {}", live_argv.join(" ")),
                );
                return Ok(false);
            }
        }
        self.exec_end = true;
        Ok(true)
    }

    /// A NUL-terminated string of the replayed process (up to 4 KiB).
    fn read_cstr(&self, addr: u64) -> String {
        let mut buf = vec![0u8; 4096];
        let n = self.live.read_memory(addr, &mut buf).unwrap_or(0);
        buf.truncate(n);
        if let Some(end) = buf.iter().position(|&b| b == 0) {
            buf.truncate(end);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Live thread `tid` stopped as a signal handler starts (only then is
    /// there a frame: `caught`): its frame is
    /// made what the recording's was (`own` mask, see `put_own_mask`; the
    /// trap fields) and remembered.
    fn handler_entered(
        &mut self,
        tid: u32,
        own: Option<u64>,
        recorded_flags: Option<u64>,
    ) -> Result<(), ReplayError> {
        let sp = self.drv.regs(tid)?.rsp;
        if debug() {
            eprintln!("replay: pid {}: signal frame at {sp:#x}", self.pid);
        }
        if let Some(own) = own {
            self.put_own_mask(sp, own)?;
        }
        // Replay's own breakpoints and watchpoints leave traces a recorded
        // frame does not have, in words the program may keep on its stack
        // (bash's SIGCHLD frames did, diverging epochs):
        // - sigcontext's err and trapno are the thread's last trap: debug
        //   (1) after ours, but in the recording an rdtsc's general
        //   protection fault (13, error code 0): the recorder traps rdtsc in
        //   every process it records, and ld.so executes it at start-up;
        // - the saved flags have RF (resume flag) set after an instruction
        //   breakpoint; in the recording, after a fault (a trapped rdtsc)
        //   when the signal came right at its return: the flags the
        //   recorder saw at the delivery, when the trace has them, are
        //   what the recorded frame holds.
        const RF: u64 = 1 << 16;
        let trapped = self.debug_trapped.remove(&tid);
        let mut flags = [0u8; 8];
        self.live.read_memory(sp + frame::EFLAGS, &mut flags)?;
        let flags = u64::from_ne_bytes(flags);
        let want = match recorded_flags {
            Some(rec) => flags & !RF | rec & RF,
            None if trapped => flags & !RF,
            None => flags,
        };
        if want != flags {
            self.live
                .write_memory(sp + frame::EFLAGS, &want.to_ne_bytes())?;
        }
        if trapped {
            let trap: [u64; 2] = [0, 13];
            let bytes: Vec<u8> = trap.iter().flat_map(|w| w.to_ne_bytes()).collect();
            self.live.write_memory(sp + frame::ERR, &bytes)?;
        }
        self.frames.push(sp);
        let holes = self.fpstate_holes(sp);
        if debug() {
            eprintln!("replay: pid {}: FPU area holes {holes:x?}", self.pid);
        }
        self.frame_holes.extend(holes);
        Ok(())
    }

    /// The bytes of the FPU save area of the signal frame at `sp` that
    /// the XSAVE instruction does not write: reserved and padding bytes,
    /// and the areas of components not in use. They keep what was there,
    /// except when the recorder's write protection (or a snapshot's
    /// copy-on-write) made the kernel's first XSAVE fault: then the
    /// kernel zeroed the whole area first. Which one happened is not in
    /// the trace (make's SIGCHLD frames kept old stack bytes in replay
    /// where the recording had zeros), so these bytes are not compared.
    fn fpstate_holes(&self, sp: u64) -> Vec<(u64, u64)> {
        const MAGIC1: u32 = 0x4650_5853;
        let word = |at: u64| {
            let mut b = [0u8; 8];
            (self.live.read_memory(at, &mut b).ok() == Some(8)).then(|| u64::from_ne_bytes(b))
        };
        let Some(buf) = word(sp + frame::FPSTATE).filter(|&b| b != 0) else {
            return Vec::new();
        };
        // fpx_sw_bytes at 464: magic1, extended_size (u32 each), xfeatures,
        // xstate_size (u32); XSTATE_BV at 512.
        let (Some(sw0), Some(features), Some(sw2), Some(in_use)) = (
            word(buf + 464),
            word(buf + 472),
            word(buf + 480),
            word(buf + 512),
        ) else {
            return Vec::new();
        };
        if sw0 as u32 != MAGIC1 {
            return Vec::new();
        }
        let size = sw2 & 0xffff_ffff;
        let mut written: Vec<(u64, u64)> = vec![(0, 416), (464, 520)];
        for i in 2..64u32 {
            if features & in_use & (1 << i) != 0 {
                let c = std::arch::x86_64::__cpuid_count(0xd, i);
                written.push((u64::from(c.ebx), u64::from(c.ebx) + u64::from(c.eax)));
            }
        }
        written.sort_unstable();
        let mut holes = Vec::new();
        let mut at = 0;
        for (start, end) in written {
            if start > at {
                holes.push((buf + at, buf + start.min(size)));
            }
            at = at.max(end);
        }
        if at < size {
            holes.push((buf + at, buf + size));
        }
        holes.retain(|(s, e)| s < e);
        holes
    }

    /// A signal let in by the temporary mask of the call it cut short was
    /// delivered with that mask in force: the handler's frame at `sp` gets
    /// the thread's own mask, which sigreturn restores, as the kernel's
    /// saved_sigmask does, in uc_sigmask and sigcontext's oldmask.
    fn put_own_mask(&self, sp: u64, own: u64) -> Result<(), ReplayError> {
        for at in [frame::UC_SIGMASK, frame::OLDMASK] {
            self.live.write_memory(sp + at, &own.to_ne_bytes())?;
        }
        Ok(())
    }

    /// After the log: bring every thread to where the next checkpoint caught
    /// it, then compare registers and memory.
    fn check_against(&mut self, k1: u32) -> Result<(), ReplayError> {
        let cp = self
            .trace
            .checkpoint(k1)
            .map_err(|source| ReplayError::Trace { epoch: k1, source })?;
        let Some(p) = cp.processes.iter().find(|p| p.pid == self.pid) else {
            self.out
                .notes
                .push("the process is not in the next checkpoint".into());
            return Ok(());
        };
        let mut in_syscall = Vec::new();
        for t in &p.threads {
            let Some(tid) = self.live_tid(t.tid) else {
                self.out
                    .differences
                    .push(format!("thread {} missing", t.tid));
                continue;
            };
            if let Some(sigs) = self.final_signals.remove(&t.tid) {
                // Caught as a handler started, or (a checkpoint put off
                // until its next syscall) further into the handler: deliver
                // what it took, then go where it was caught, as below.
                for sig in sigs {
                    if !self.go_to_delivery(None, t.tid, tid, sig)? {
                        return Ok(());
                    }
                    // Through the mask of the call it cut short, as in `play`.
                    let own_mask = match self.call_mask.remove(&t.tid) {
                        Some(mask) => {
                            let own = self.drv.sigmask(tid)?;
                            self.drv.set_sigmask(tid, mask)?;
                            Some(own)
                        }
                        None => None,
                    };
                    let delivery = self.take_delivery(t.tid, sig);
                    let caught = caught(tid, sig as i32);
                    let info = delivery.as_ref().map(|d| d.info.as_slice());
                    match self.drv.deliver_and_stop(tid, sig as i32, info)? {
                        Stop::Reached if caught => {
                            let flags = delivery.and_then(|d| d.regs).map(|r| r[18]);
                            self.handler_entered(tid, own_mask, flags)?
                        }
                        Stop::Reached => {}
                        other => self.diverge(
                            None,
                            t.tid,
                            format!("take signal {sig} at the checkpoint"),
                            format!("{other:?}"),
                        ),
                    }
                }
                if self.out.divergence.is_some() {
                    continue;
                }
            }
            let rip = t.regs[16];
            let rax = t.regs[10] as i64;
            if t.syscall.is_some() && !(-516..=-512).contains(&rax) {
                // Caught right after a syscall returned, before running any
                // of its own code again: where the replayed thread stands
                // after that syscall (its last event) was handled.
                continue;
            }
            if t.syscall.is_some() {
                in_syscall.push(t.tid);
                // Already at a syscall's entry: run through its last call
                // (`run_through_call`), which the cut caught it inside.
                if self.at_cut.contains(&t.tid)
                    || matches!(self.prerun.get(&tid), Some(Stop::SyscallEntry(_)))
                {
                    continue;
                }
                match self
                    .drv
                    .run_to_syscall(tid, self.slice(t.tid, cp.time_ns))?
                {
                    Stop::SyscallEntry(_) => {}
                    other => self.diverge(
                        None,
                        t.tid,
                        format!("blocked in syscall {:?} at the checkpoint", t.syscall),
                        format!("{other:?}"),
                    ),
                }
            } else if let Some(Stop::SyscallEntry(r)) = self.prerun.get(&tid) {
                // Run through its last call into a syscall the recording
                // did not make (nothing may run it: it would really run).
                let actual = format!("a syscall ({})", call_text(r.orig_rax as u32, &[]));
                self.diverge(None, t.tid, format!("user code at {rip:#x}"), actual);
            } else {
                match self.run_to(tid, &t.regs, &t.fpregs)? {
                    Stop::SyscallEntry(r) => self.diverge(
                        None,
                        t.tid,
                        format!("user code at {rip:#x}"),
                        format!("a syscall ({})", call_text(r.orig_rax as u32, &[])),
                    ),
                    Stop::Timeout => self.diverge(
                        None,
                        t.tid,
                        format!("reach {rip:#x} with the checkpoint's registers"),
                        "not reached".into(),
                    ),
                    _ => {}
                }
            }
        }
        if self.out.divergence.is_some() {
            return Ok(());
        }
        // rseq areas, registered in the epoch or before recording began
        // (attach mode): the kernel writes the CPU number there.
        let mut ignore: Vec<(u64, u64)> = self
            .known
            .rseq
            .iter()
            .copied()
            .chain(
                p.threads
                    .iter()
                    .filter(|t| t.rseq.0 != 0)
                    .map(|t| (t.rseq.0, t.rseq.1 as u64)),
            )
            .map(|(a, l)| (a, a + l.max(32)))
            .collect();
        // A signal frame's err, trapno and cr2 words are its thread's last
        // fault, which may predate the epoch (a restored thread has none).
        for &f in &self.frames {
            ignore.extend([
                (f + frame::ERR, f + frame::OLDMASK),
                (f + frame::CR2, f + frame::FPSTATE),
            ]);
        }
        ignore.extend(&self.frame_holes);
        // Below a thread's stack pointer (and its red zone) is dead memory;
        // below where a thread that exited in the epoch last stood too (its
        // stack stays mapped in libc's cache, with what its calls left).
        let sps = p.threads.iter().map(|t| t.regs[19]);
        for sp in sps.chain(self.exited_sps.iter().copied()) {
            let sp = sp.saturating_sub(128);
            if let Some(m) = p.maps.iter().find(|m| m.start <= sp && sp < m.end) {
                ignore.push((m.start, sp));
            }
        }
        let diffs = compare(self.trace, k1, self.pid, &*self.live, &ignore)?;
        for d in diffs {
            // A thread stopped at a syscall entry has rax = -ENOSYS where the
            // recording's was interrupted with -ERESTART*.
            if let Difference::Register {
                tid, name: "rax", ..
            } = &d
            {
                if in_syscall.contains(tid) {
                    continue;
                }
            }
            self.out.differences.push(d.to_string());
        }
        Ok(())
    }
}

const CLONE_VFORK: u64 = 0x4000;
const CLONE_THREAD: u64 = 0x10000;

/// The flags of a logged clone or clone3 (0 for fork and vfork).
fn clone_flags(sc: &Syscall) -> u64 {
    match sc.nr {
        nr::CLONE => sc.args.as_slice().first().copied().unwrap_or(0),
        nr::CLONE3 => sc
            .outputs
            .iter()
            .find(|o| o.arg == SLOT_INPUT && o.data.len() >= 8)
            .map(|o| u64::from_le_bytes(o.data[..8].try_into().expect("8 bytes")))
            .unwrap_or(0),
        _ => 0,
    }
}
const CLONE_PARENT_SETTID: u64 = 0x0010_0000;
const CLONE_CHILD_SETTID: u64 = 0x0100_0000;
/// Flags that make a process replay does not rebuild (new namespaces, a
/// pidfd, a parent other than the caller...).
const CLONE_UNSUPPORTED: u64 = 0x1000 // CLONE_PIDFD
    | 0x8000 // CLONE_PARENT
    | 0x7e02_0000 // CLONE_NEW*
    | 0x2_0000_0000; // CLONE_INTO_CGROUP

/// A process-creating fork, vfork, clone or clone3, as clone(2) arguments.
#[derive(Debug, Clone, Copy)]
struct CloneArgs {
    flags: u64,
    stack: u64,
    ptid: u64,
    ctid: u64,
    tls: u64,
}

impl CloneArgs {
    fn of(sc: &Syscall, regs: &Regs) -> Option<CloneArgs> {
        let a = match sc.nr {
            nr::FORK => CloneArgs {
                flags: 0,
                stack: 0,
                ptid: 0,
                ctid: 0,
                tls: 0,
            },
            nr::VFORK => CloneArgs {
                flags: 0x100 | CLONE_VFORK, // CLONE_VM
                stack: 0,
                ptid: 0,
                ctid: 0,
                tls: 0,
            },
            nr::CLONE => CloneArgs {
                flags: regs.rdi,
                stack: regs.rsi,
                ptid: regs.rdx,
                ctid: regs.r10,
                tls: regs.r8,
            },
            _ => {
                // struct clone_args: flags, pidfd, child_tid, parent_tid,
                // exit_signal, stack, stack_size, tls (u64 each).
                let o = sc
                    .outputs
                    .iter()
                    .find(|o| o.arg == SLOT_INPUT && o.data.len() >= 64)?;
                let w =
                    |i: usize| u64::from_le_bytes(o.data[i * 8..i * 8 + 8].try_into().expect("8"));
                let top = if w(5) != 0 { w(5) + w(6) } else { 0 };
                CloneArgs {
                    flags: w(0),
                    stack: top,
                    ptid: w(3),
                    ctid: w(2),
                    tls: w(7),
                }
            }
        };
        (a.flags & CLONE_UNSUPPORTED == 0).then_some(a)
    }
}

fn page_up(a: u64) -> u64 {
    (a + 4095) & !4095
}

/// All processes of epoch `epoch`.
pub fn processes_of(trace: &Trace, epoch: u32) -> Result<Vec<u32>, ReplayError> {
    let cp = trace
        .checkpoint(epoch)
        .map_err(|source| ReplayError::Trace { epoch, source })?;
    Ok(cp.processes.iter().map(|p| p.pid).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_break_from_the_log() {
        let mut k = Knowledge::default();
        // brk(0) at 10 and 30, an exec at 40, brk(0) of the new image at 50.
        k.brks
            .insert(7, vec![(10, 0x1000), (30, 0x3000), (40, 0), (50, 0x9000)]);
        assert_eq!(k.brk_at(7, 5), None);
        assert_eq!(k.brk_at(7, 20), Some(0x1000));
        assert_eq!(k.brk_at(7, 35), Some(0x3000));
        assert_eq!(k.brk_at(7, 45), None, "a new image's break is unknown");
        assert_eq!(k.brk_at(7, 60), Some(0x9000));
        assert_eq!(k.brk_at(8, 60), None);
    }

    fn ev(seq: u64, tid: u32, time_ns: u64, kind: EventKind) -> Event {
        Event {
            seq,
            epoch: 0,
            time_ns,
            cpu: 0,
            pid: 1,
            tid,
            kind,
        }
    }

    fn syscall(seq: u64, tid: u32, enter_ns: u64, exit_ns: u64) -> Event {
        ev(
            seq,
            tid,
            exit_ns,
            EventKind::Syscall(Syscall {
                nr: 0,
                args: Default::default(),
                ret: 0,
                enter_ns,
                flags: 0,
                outputs: Vec::new(),
            }),
        )
    }

    fn sync(seq: u64, tid: u32, time_ns: u64) -> Event {
        ev(
            seq,
            tid,
            time_ns,
            EventKind::Sync {
                op: 0,
                ip: 0x1000,
                object: 0x2000,
            },
        )
    }

    /// Thread 1: lock at 10, unlock at 30, a read entered at 50. Thread 2:
    /// lock at 20, unlock at 40. Each call goes just before its thread's
    /// next event began; the last one of a thread stays at its time.
    /// Critical sections on one lock keep their order (thread 1's at 29,
    /// thread 2's at 39); thread 1's unlock (49) coming after thread 2's
    /// lock is what `move_word` resolves in a run.
    #[test]
    fn sync_calls_go_just_before_their_threads_next_event() {
        let order: VecDeque<Event> = [syscall(5, 1, 50, 60)].into();
        let syncs = [
            sync(1, 1, 10),
            sync(2, 2, 20),
            sync(3, 1, 30),
            sync(4, 2, 40),
        ];
        assert_eq!(sync_places(&order, &syncs), vec![29, 39, 49, 40]);
        // Two events of a thread at the same time keep their order.
        let same = [sync(1, 1, 10), sync(2, 1, 10)];
        assert_eq!(sync_places(&VecDeque::new(), &same), vec![10, 10]);
    }

    /// Thread 1 signals a condition (entered at 10, placed later); thread 2
    /// is run ahead to its wait on it (entered at 20): another thread used
    /// the condition first, so thread 2 must not go through yet. A call on
    /// another object, or one that began later, does not hold it.
    #[test]
    fn a_call_waits_for_earlier_calls_of_others_on_its_object() {
        let signal = sync(1, 1, 10);
        let wait = sync(2, 2, 20);
        let entries: HashMap<u64, u64> = [(1, 10), (2, 20)].into();
        let order: VecDeque<Event> = [signal.clone(), wait.clone()].into();
        assert!(used_first_by_another(&wait, 0x2000, 20, &order, &entries));
        assert!(!used_first_by_another(&wait, 0x3000, 20, &order, &entries));
        assert!(!used_first_by_another(
            &signal, 0x2000, 10, &order, &entries
        ));
        // A futex call on a word inside the object, entered before.
        let mut wake = syscall(3, 1, 5, 15);
        if let EventKind::Syscall(s) = &mut wake.kind {
            s.nr = nr::FUTEX;
            s.args = tracelog::Args::new(&[0x2000 + 0x2c, 0x81, 1, 0, 0, 0]);
        }
        let order: VecDeque<Event> = [wake].into();
        assert!(used_first_by_another(&wait, 0x2000, 20, &order, &entries));
        assert!(!used_first_by_another(&wait, 0x2000, 4, &order, &entries));
    }

    #[test]
    fn exec_arguments_match_the_recorded_argv() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Plain, and a script run through its interpreter.
        assert!(argv_matches(&v(&["-l"]), &v(&["ls", "-l"])));
        assert!(argv_matches(&v(&["a"]), &v(&["/bin/sh", "./s", "a"])));
        assert!(!argv_matches(&v(&["-a"]), &v(&["ls", "-l"])));
        // The last one cut short by the recorder.
        assert!(argv_matches(&v(&["abcdef"]), &v(&["x", "abc"])));
        // A megabyte of arguments, cut inside them.
        let big = "a".repeat(4095);
        let live: Vec<String> = (0..300).map(|_| big.clone()).collect();
        let mut rec = vec!["true".to_string()];
        rec.extend((0..255).map(|_| big.clone()));
        // What fits of the next one: EXEC_ARGV_MAX bytes in all.
        rec.push("a".repeat(4090));
        assert!(argv_matches(&live, &rec));
        let mut other = live.clone();
        other[3] = "b".repeat(4095);
        assert!(!argv_matches(&other, &rec));
        // Not that long: not taken for cut.
        assert!(!argv_matches(&v(&["-l", "-a"]), &v(&["ls", "-l"])));
    }
}
