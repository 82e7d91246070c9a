//! The ptrace supervisor: a thread that PTRACE_SEIZEs every thread of the
//! target (invisible to it while it runs; new threads and processes are
//! followed by the kernel), keeps it running, and every epoch takes a
//! coordinated checkpoint:
//!
//! 1. PTRACE_INTERRUPT every thread and wait until all are stopped: the cut.
//! 2. Read every thread's registers, FPU state and signal mask, every
//!    process's memory map, descriptors and shared memory.
//! 3. In each process, make one stopped thread run `clone(CLONE_PARENT |
//!    SIGCHLD)`: the child is a copy-on-write snapshot of the memory at the
//!    cut. Resume the target. A process whose writes are tracked
//!    ([`crate::dirty`]) and wrote little is not forked: the pages it wrote
//!    are copied while it is stopped.
//! 4. With the target running again, read the snapshot's private memory,
//!    store the pages that changed since the previous checkpoint, ask it
//!    (by injected `rt_sigaction`) for the signal handlers, and kill it.
//!
//! The supervisor also patches each process's vDSO so time reads become
//! recorded syscalls, and reports how the launched command ended (it is the
//! only waiter in the recorder: ptrace and wait share one queue).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sys::wait::WaitStatus;
use tracelog::{
    Checkpoint, CheckpointInfo, CheckpointWriter, FdState, Mapping, PageSink, ProcessState,
    SigAction, ThreadState,
};

use crate::{
    dirty::{self, TrackWrites, Tracker},
    probe::{Held, SharedFilter, THROTTLE_SIGNAL},
    sync_hook::{unprobe_page, Hooked, SyncHooks},
    sys::{
        self,
        ptrace::{self as pt, Mem, Regs},
        uffd, ExitStatus,
    },
    vdso,
};

const PAGE: u64 = 4096;
const SIGTRAP: i32 = libc::SIGTRAP;
const PTRACE_EVENT_STOP: i32 = 128;

/// A thread that stopped itself because its output filled its ring is kept
/// stopped until the daemon has drained the rings (checked this often),
/// and at most `THROTTLE_MAX`.
const THROTTLE_PAUSE: Duration = Duration::from_millis(1);
const THROTTLE_MAX: Duration = Duration::from_millis(200);

/// How long at most a process that has just exec'd is kept on the CPU it
/// exec'd on. The dynamic loader and libc read `cpuid` as they start, and
/// keep what it says (the CPU's APIC id among it); replay runs such a start
/// on the CPU it was recorded on, which holds only if the start did not
/// move. The pin ends sooner, at the entry of the process's first syscall
/// other than `brk` and `arch_prctl` (`recorder_common::before_cpuid`: ld.so
/// has read `cpuid` by then), before that call runs: the program must never see the pin (`nproc` printed 1,
/// and lld, sizing its thread pool while pinned and again after, crashed).
const STARTUP_PIN: Duration = Duration::from_millis(20);

/// Pre-copy arena kept across checkpoints (page faults into fresh memory
/// would cost as much as the copies); a bigger one is freed after use.
const ARENA_KEEP: usize = 256 << 20;

/// Arena room made ready (touched) after a pre-copy for the copies at the
/// cut that follows.
const CUT_ROOM: usize = 32 << 20;

/// How long a checkpoint may wait for a thread that is alone in running
/// its own code to make a syscall (see `Deferred`). Nothing is stopped
/// meanwhile; only the epoch grows. Invariant: well above any epoch length
/// users pick for replay, so that a program computing for a few seconds
/// between syscalls still gets its cut at one.
const LONE_WAIT: Duration = Duration::from_secs(10);

/// A checkpoint put off because the only thread running was in its own
/// code: a cut there is one replay can only find by stopping at every pass
/// of a loop. Everything runs on; that thread stops at its next syscall
/// entry, and the checkpoint is taken at once, cut at that entry.
#[derive(Debug)]
struct Deferred {
    tid: u32,
    reason: String,
    /// The checkpoint is cut where the thread is by then.
    until: Instant,
    /// The thread is stopped at its syscall entry.
    arrived: bool,
}

/// Threads of the checkpoint being taken that were caught in user code and
/// are moving to their next syscall entry
/// ([`SupervisorOptions::cut_at_syscall`]).
#[derive(Debug, Default)]
struct CutSync {
    /// Until when a thread caught in user code may run on.
    until: Option<Instant>,
    /// Running on (value: interrupted again because time ran out).
    running: HashMap<u32, bool>,
    /// At their syscall entry, backing out of it: the entry registers.
    backing_out: HashMap<u32, Regs>,
    /// Caught as a signal handler starts: left there (replay delivers the
    /// signal and stops at the handler's entry).
    delivered: HashSet<u32>,
    /// Caught in their own code (whether or not they ran on).
    in_user: HashSet<u32>,
    /// Cut at a syscall entry they ran on to.
    backed_out: HashSet<u32>,
}

impl CutSync {
    /// The one thread that was running its own code at this cut and is
    /// still there, when no other thread was running at all.
    fn lone_in_user(&self) -> Option<u32> {
        match (
            self.in_user.len(),
            self.backed_out.is_empty(),
            self.delivered.is_empty(),
        ) {
            (1, true, true) => self.in_user.iter().next().copied(),
            _ => None,
        }
    }
}

/// When checkpoints are taken.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Trace directory (checkpoints go to its `checkpoints/`).
    pub trace_dir: PathBuf,
    /// Epoch length; `None`: only the first checkpoint.
    pub epoch: Option<Duration>,
    /// The launched command (whose exit status the supervisor reports).
    pub launch_root: Option<u32>,
    /// Which processes get write tracking instead of a fork per checkpoint.
    pub track_writes: TrackWrites,
    /// How long a thread caught in user code at a cut may run on to its
    /// next syscall entry while the rest of the target stays stopped.
    /// Replay finds a cut at a syscall entry by running to that syscall; a
    /// cut in user code it must find with a breakpoint that stops each time
    /// the instruction runs (thousands of times inside a loop), or cannot
    /// find at all. This bounds what it adds to the stop: a thread that
    /// makes no syscall by then is cut where it is. Zero: never.
    pub cut_at_syscall: Duration,
}

/// From the session to the supervisor.
#[derive(Debug)]
pub enum Command {
    /// Attach to these threads (tid, tgid); the reply says whether it worked.
    Seize {
        threads: Vec<(u32, u32)>,
        reply: Sender<Result<(), String>>,
    },
    /// Take a checkpoint now (e.g. `--epoch-events` reached).
    Checkpoint,
    /// From the waiter thread: a tracee or child has an event to wait for.
    Ready,
    /// From the session: the rings were drained, so threads stopped on a
    /// full ring may go on now (saves the supervisor's `THROTTLE_PAUSE`
    /// poll per stop, which a large read pays hundreds of times).
    Drained,
    /// From the session: what a thread held for a copy waited for (the
    /// file of its shared mapping, an output left in its memory) is copied
    /// (see `Stop::Throttled`).
    Copied(u32),
    /// Stop supervising; detach from whatever still runs.
    Stop,
}

/// From the supervisor to the session.
#[derive(Debug)]
pub enum Report {
    /// Epoch `epoch` starts at `time_ns` (every thread was stopped then).
    Cut { epoch: u32, time_ns: u64 },
    /// A checkpoint was stored.
    Checkpoint(CheckpointInfo),
    /// The launched command ended.
    RootExited(ExitStatus),
    /// Something went wrong that the user should know about; recording goes on.
    Warning(String),
    /// A trapped `rdtsc`/`rdtscp` the supervisor answered with `value`
    /// (`aux`: TSC_AUX for rdtscp, `u64::MAX` for rdtsc).
    Rdtsc {
        pid: u32,
        tid: u32,
        time_ns: u64,
        value: u64,
        aux: u64,
    },
    /// The siginfo of a signal about to be delivered to `tid`.
    Siginfo {
        pid: u32,
        tid: u32,
        time_ns: u64,
        sig: i32,
        info: Vec<u8>,
        /// The thread's registers where the signal is delivered (27 words,
        /// kernel order): `orig_rax` -1 means in the middle of user code.
        regs: Vec<u64>,
    },
}

/// Handle on the supervisor thread.
#[derive(Debug)]
pub struct Supervisor {
    commands: Sender<Command>,
    reports: Receiver<Report>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// `sync_hooks`: attach sync probes to multithreaded processes (`None`:
    /// do not; an error: they cannot be, which is reported).
    pub fn start(
        opts: SupervisorOptions,
        filter: SharedFilter,
        sync_hooks: Option<Result<SyncHooks, String>>,
    ) -> Supervisor {
        let (commands, cmd_rx) = mpsc::channel();
        let (rep_tx, reports) = mpsc::channel();
        let go = spawn_waiter(commands.clone());
        let thread = std::thread::Builder::new()
            .name("uniplay-supervisor".into())
            .spawn(move || {
                let mut state = State::new(opts, filter, rep_tx);
                match sync_hooks {
                    Some(Ok(h)) => state.sync_hooks = Some(h),
                    Some(Err(why)) => state.warn(format!(
                        "lock order not recorded (uprobes unavailable: {why}); replay of multithreaded programs may diverge"
                    )),
                    None => {}
                }
                state.run(cmd_rx, go)
            })
            .expect("spawn the supervisor thread");
        Supervisor {
            commands,
            reports,
            thread: Some(thread),
        }
    }

    /// Attaches to `threads`, waiting for the outcome.
    pub fn seize(&self, threads: Vec<(u32, u32)>) -> Result<(), String> {
        let (reply, rx) = mpsc::channel();
        self.commands
            .send(Command::Seize { threads, reply })
            .map_err(|_| "supervisor gone".to_string())?;
        rx.recv().map_err(|_| "supervisor gone".to_string())?
    }

    pub fn request_checkpoint(&self) {
        let _ = self.commands.send(Command::Checkpoint);
    }

    /// The session drained the rings and cleared the throttle request.
    pub fn drained(&self) {
        let _ = self.commands.send(Command::Drained);
    }

    /// The session copied the file thread `tid` just mapped shared.
    pub fn copied(&self, tid: u32) {
        let _ = self.commands.send(Command::Copied(tid));
    }

    pub fn try_report(&self) -> Option<Report> {
        self.reports.try_recv().ok()
    }

    /// Stops the supervisor (detaching from survivors) and returns the
    /// reports it had not delivered yet.
    pub fn stop(mut self) -> Vec<Report> {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.reports.try_iter().collect()
    }
}

/// How a tracee is stopped, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// PTRACE_INTERRUPT (or a new tracee's first stop): free to inject into.
    Interrupt,
    /// A PTRACE_EVENT_* stop inside a syscall (fork, clone, exec).
    Event,
    /// Group-stop (SIGSTOP and friends): resume with PTRACE_LISTEN.
    Group,
    /// About to receive this signal: resume by delivering it.
    Signal(i32),
    /// Stopped itself because its output filled its ring (the throttle
    /// signal, never delivered): resume without it. `for_copy`: stopped
    /// until the session has copied something from it or for it (the file
    /// of a shared mapping it made, an output left in its memory;
    /// `Command::Copied`), not merely drained the rings.
    Throttled { since: Instant, for_copy: bool },
}

#[derive(Debug)]
struct Tracee {
    pid: u32,
    stop: Option<Stop>,
}

/// Writes finished checkpoints (last pages, state, the fsyncs that make
/// them complete) on a thread of its own, in order, so that the next
/// ptrace event (an exec waiting for its checkpoint) is not kept waiting.
#[derive(Debug)]
struct Finisher {
    queue: Option<Sender<(PageSink, Checkpoint)>>,
    thread: Option<JoinHandle<()>>,
    reports: Sender<Report>,
}

impl Finisher {
    fn start(reports: &Sender<Report>) -> Finisher {
        let (queue, rx) = mpsc::channel::<(PageSink, Checkpoint)>();
        let to = reports.clone();
        let thread = std::thread::Builder::new()
            .name("uniplay-checkpoints".into())
            .spawn(move || {
                for (sink, cp) in rx {
                    let _ = to.send(finish(sink, &cp));
                }
            })
            .ok();
        Finisher {
            queue: thread.is_some().then_some(queue),
            thread,
            reports: reports.clone(),
        }
    }

    fn finish(&self, sink: PageSink, cp: Checkpoint) {
        match &self.queue {
            Some(q) => {
                let _ = q.send((sink, cp));
            }
            // No thread: in line.
            None => {
                let _ = self.reports.send(finish(sink, &cp));
            }
        }
    }

    /// Waits until every checkpoint handed over is written.
    fn wait(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn finish(sink: PageSink, cp: &Checkpoint) -> Report {
    match sink.finish(cp) {
        Ok(info) => Report::Checkpoint(info),
        Err(e) => Report::Warning(format!("checkpoint {} not stored: {e}", cp.epoch)),
    }
}

/// Dropped without [`Supervisor::stop`] (an error path): still detach.
impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.commands.send(Command::Stop);
            let _ = t.join();
        }
    }
}

/// A thread that blocks until some tracee or child has an event (without
/// consuming it), tells the supervisor, and waits for it to have drained
/// them before looking again.
fn spawn_waiter(commands: Sender<Command>) -> Sender<()> {
    let (go, go_rx) = mpsc::channel::<()>();
    let waiter = move || loop {
        if pt::wait_pending().is_ok() {
            if commands.send(Command::Ready).is_err() || go_rx.recv().is_err() {
                return;
            }
        } else {
            // Nothing to wait for (ECHILD): not attached yet, or all gone.
            if let Err(mpsc::RecvTimeoutError::Disconnected) =
                go_rx.recv_timeout(Duration::from_millis(2))
            {
                return;
            }
        }
    };
    std::thread::Builder::new()
        .name("uniplay-waiter".into())
        .spawn(waiter)
        .expect("spawn the waiter thread");
    go
}

/// Per-process bookkeeping.
#[derive(Debug, Default)]
struct Proc {
    /// Address of a `syscall` instruction, for injections.
    syscall_insn: Option<u64>,
    /// Hash of every page stored so far, to store only changed pages.
    hashes: HashMap<u64, u128>,
    /// vDSO already patched for the current image.
    patched: bool,
    /// The process's memory, kept open for trapped instructions.
    mem: Option<Mem>,
    /// Snapshot children it is the parent of, dead or dying: reaped by an
    /// injected wait4 at a later checkpoint (nobody else may reap them).
    zombies: Vec<u32>,
    /// Write tracking of the current image, once armed.
    tracker: Option<Tracker>,
    /// Write tracking could not be set up for this image: do not retry.
    untrackable: bool,
    /// Mappings to arm (all) or register (new ones) once the target runs.
    to_arm: Option<Vec<(u64, u64)>>,
    to_register: Vec<(u64, u64)>,
    /// Written since its previous checkpoint, per scans made before the
    /// coming cut (normalized); and copies of it made after the last such
    /// scan, in `State::arena` (address, offset, length).
    pending: Vec<(u64, u64)>,
    precopy: Vec<(u64, usize, usize)>,
    /// The signal handlers last read, with the (caught, ignored) sets of
    /// then: reused when they cannot be read again and the sets agree.
    known_sigactions: Option<((u64, u64), Vec<SigAction>)>,
    /// All its memory was stored before the coming cut (`store_first`):
    /// that checkpoint holds it whole; pages stored so.
    fresh: bool,
    streamed: u64,
    /// Sync probes of the current image, once it has a second thread.
    sync: Option<Hooked>,
    /// Attaching them was tried for this image.
    sync_tried: bool,
    /// Probed addresses of its mappings, with the bytes probes replace,
    /// as of its last cut: put back in the pages it stores.
    unprobe: Vec<(u64, u8)>,
}

struct State {
    opts: SupervisorOptions,
    filter: SharedFilter,
    reports: Sender<Report>,
    tracees: HashMap<u32, Tracee>,
    procs: HashMap<u32, Proc>,
    /// Snapshot children: traced by us, never resumed, killed when read.
    snapshots: HashSet<u32>,
    epoch: u32,
    next_due: Option<Instant>,
    /// Launch mode: checkpoint 0 is taken at the command's first exec.
    awaiting_exec: bool,
    writer: Option<CheckpointWriter>,
    finisher: Finisher,
    /// (dev, inode) of files already copied into the trace → content hash.
    files: HashMap<(String, u64), String>,
    /// Checkpoint attempts given up because a thread would not stop.
    skipped: u64,
    /// Threads whose `rdtsc` traps (PR_SET_TSC; inherited by new threads).
    tsc_trapped: HashSet<u32>,
    /// Processes that exec'd since the last checkpoint: the next one is
    /// taken as they start their new image (its reason names them).
    fresh_execs: Vec<u32>,
    /// Pages copied while the target is stopped, until stored. Kept across
    /// checkpoints (up to `ARENA_KEEP`): faulting in fresh memory for every
    /// copy would cost as much as the copy.
    arena: Vec<u8>,
    arena_used: usize,
    sync: CutSync,
    /// Pages of the coming checkpoint stored before its cut (`store_first`).
    early_sink: Option<(u32, PageSink)>,
    /// Processes kept on one CPU as they start (`STARTUP_PIN`): pid → until
    /// when, and the CPUs they may use otherwise.
    pinned: HashMap<u32, (Instant, nix::sched::CpuSet)>,
    /// Threads of pinned processes resumed to their syscalls (`STARTUP_PIN`).
    starting: HashSet<u32>,
    deferred: Option<Deferred>,
    /// vfork parent tid → its child, until the child execs or exits (see
    /// `wait_stopped`).
    vforked: HashMap<u32, u32>,
    /// Attaches sync probes to processes with a second thread (None:
    /// `--no-sync-order`, or they could not be loaded).
    sync_hooks: Option<SyncHooks>,
    /// Threads held for a copy whose copy the session has made, not yet
    /// released (the message may come before their stop is seen).
    copied: HashSet<u32>,
    /// Threads held for a copy not made yet, kept held across checkpoints.
    awaiting_copy: HashSet<u32>,
}

impl State {
    fn new(opts: SupervisorOptions, filter: SharedFilter, reports: Sender<Report>) -> State {
        let finisher = Finisher::start(&reports);
        let writer = match CheckpointWriter::new(&opts.trace_dir) {
            Ok(w) => Some(w),
            Err(e) => {
                let _ = reports.send(Report::Warning(format!("checkpoints disabled: {e}")));
                None
            }
        };
        State {
            awaiting_exec: opts.launch_root.is_some(),
            opts,
            filter,
            reports,
            tracees: HashMap::new(),
            procs: HashMap::new(),
            snapshots: HashSet::new(),
            epoch: 0,
            next_due: None,
            writer,
            finisher,
            files: HashMap::new(),
            skipped: 0,
            tsc_trapped: HashSet::new(),
            fresh_execs: Vec::new(),
            arena: Vec::new(),
            arena_used: 0,
            sync: CutSync::default(),
            early_sink: None,
            pinned: HashMap::new(),
            starting: HashSet::new(),
            deferred: None,
            copied: HashSet::new(),
            awaiting_copy: HashSet::new(),
            vforked: HashMap::new(),
            sync_hooks: None,
        }
    }

    fn warn(&self, msg: String) {
        let _ = self.reports.send(Report::Warning(msg));
    }

    /// Sleeps until a command, a ptrace event (through the waiter) or the
    /// next checkpoint is due: polling would take CPU time from the target
    /// (on a machine with as many busy target threads as CPUs, a 2 kHz
    /// poll cost it about 6%).
    fn run(mut self, commands: Receiver<Command>, go: Sender<()>) {
        let mut throttled = false;
        loop {
            let mut timeout = self.next_due.map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(Instant::now())
            });
            if throttled {
                timeout = timeout.min(THROTTLE_PAUSE);
            }
            if let Some(until) = self.unpin_due(false) {
                timeout = timeout.min(until.saturating_duration_since(Instant::now()));
            }
            let mut ready = false;
            match commands.recv_timeout(timeout) {
                Ok(Command::Seize { threads, reply }) => {
                    let r = self.seize_all(&threads);
                    let ok = r.is_ok();
                    let _ = reply.send(r);
                    if ok && !self.awaiting_exec {
                        // Attach mode: checkpoint 0 at attach time.
                        self.prepare_attached();
                        self.checkpoint("start");
                    }
                }
                Ok(Command::Checkpoint) => self.checkpoint("events"),
                Ok(Command::Ready) => ready = true,
                Ok(Command::Drained) => {}
                Ok(Command::Copied(tid)) => {
                    self.copied.insert(tid);
                }
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let mut busy = false;
            while let Ok(Some(status)) = pt::wait_any() {
                busy = true;
                self.handle(status);
            }
            throttled = self.release_throttled();
            if self.next_due.is_some_and(|t| Instant::now() >= t) && !self.tracees.is_empty() {
                let reason = self
                    .deferred
                    .as_ref()
                    .map_or_else(|| "timer".to_string(), |d| d.reason.clone());
                self.checkpoint(&reason);
            }
            if ready {
                if !busy {
                    // Reported but gone (reaped meanwhile): do not spin.
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = go.send(());
            }
        }
        if let Some(h) = &self.sync_hooks {
            h.leave_to_exit();
        }
        self.detach_all();
        self.finisher.wait();
    }

    /// The in-kernel filter (shared with the session).
    fn filter(&self) -> std::sync::MutexGuard<'_, crate::probe::Filter> {
        self.filter.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_throttled(&self, tid: u32) -> Option<Held> {
        self.filter().take_throttled(tid)
    }

    /// At a signal-delivery-stop: whether the signal is the throttle's (see
    /// `Config::throttle_signal`), and what the thread waits for.
    fn throttled(&self, tid: u32, sig: i32) -> Option<Held> {
        (sig == THROTTLE_SIGNAL)
            .then(|| self.take_throttled(tid))
            .flatten()
    }

    /// Resumes threads that stopped themselves on a full ring once the
    /// daemon has drained the rings (or after `THROTTLE_MAX`). Returns
    /// whether any is still waiting.
    fn release_throttled(&mut self) -> bool {
        // The flag is a map lookup: only asked while someone waits on it.
        if !self
            .tracees
            .values()
            .any(|t| matches!(t.stop, Some(Stop::Throttled { .. })))
        {
            return false;
        }
        let mut waiting = false;
        let drained = !self.filter().throttle_requested();
        for (&tid, t) in self.tracees.iter_mut() {
            if let Some(Stop::Throttled { since, for_copy }) = t.stop {
                let done = if for_copy {
                    self.copied.remove(&tid)
                } else {
                    drained
                };
                if done || since.elapsed() >= THROTTLE_MAX {
                    t.stop = None;
                    let _ = pt::cont(tid, None);
                } else {
                    waiting = true;
                }
            }
        }
        waiting
    }

    /// Keeps `pid` (just exec'd, stopped) on the CPU it is on for
    /// `STARTUP_PIN` (see there).
    fn pin_start(&mut self, pid: u32) {
        let (Some(cpu), Some(allowed)) = (sys::last_cpu(pid), sys::affinity(pid)) else {
            return;
        };
        // A process forked by one still pinned keeps its parent's mask.
        let allowed = self.pinned.get(&pid).map_or(allowed, |&(_, a)| a);
        sys::pin(pid, cpu);
        self.pinned
            .insert(pid, (Instant::now() + STARTUP_PIN, allowed));
        // Just exec'd: its one thread has the pid as tid.
        self.starting.insert(pid);
    }

    /// Resumes `tid` (delivering `sig`): to its next syscall while its
    /// process starts (`STARTUP_PIN`), else on.
    fn resume(&self, tid: u32, sig: Option<i32>) -> std::io::Result<()> {
        if self.starting.contains(&tid) {
            pt::to_syscall(tid, sig)
        } else {
            pt::cont(tid, sig)
        }
    }

    /// A starting thread at a syscall stop (see `STARTUP_PIN`): past the
    /// calls before `cpuid`, gives its process its CPUs back before the
    /// call runs.
    fn startup_syscall(&mut self, tid: u32) {
        if self.startup_goes_on(tid) {
            let _ = pt::to_syscall(tid, None);
        } else {
            let _ = pt::cont(tid, None);
        }
    }

    /// At a starting thread's syscall stop: whether its start-up goes on
    /// (`recorder_common::before_cpuid`); if not, its process is unpinned
    /// now.
    fn startup_goes_on(&mut self, tid: u32) -> bool {
        // -1: a call the supervisor skipped (a cut), made again next.
        let nr = pt::getregs(tid).map_or(0, |r| r.orig_rax);
        if nr == u64::MAX || recorder_common::before_cpuid(nr) {
            return true;
        }
        self.starting.remove(&tid);
        if let Some(pid) = self.tracees.get(&tid).map(|t| t.pid) {
            self.unpin(pid);
        }
        false
    }

    /// Gives `pid` its CPUs back, every thread of it.
    fn unpin(&mut self, pid: u32) {
        if let Some((_, allowed)) = self.pinned.remove(&pid) {
            for (&tid, t) in &self.tracees {
                if t.pid == pid {
                    sys::set_affinity(tid, &allowed);
                }
            }
        }
        self.starting
            .retain(|&t| self.tracees.get(&t).is_some_and(|tr| tr.pid != pid));
    }

    /// Gives processes whose start-up pin is over (all with `all`) their
    /// CPUs back, every thread of them. Returns when the next one is due.
    fn unpin_due(&mut self, all: bool) -> Option<Instant> {
        let now = Instant::now();
        let due: Vec<u32> = self
            .pinned
            .iter()
            .filter(|(_, (until, _))| all || *until <= now)
            .map(|(&p, _)| p)
            .collect();
        for pid in due {
            self.unpin(pid);
        }
        self.pinned.values().map(|(until, _)| *until).min()
    }

    /// Turns threads held by the throttle into interrupt-stops (where
    /// injections work), before a checkpoint stops the rest.
    fn interrupt_throttled(&mut self) {
        for (&tid, t) in self.tracees.iter_mut() {
            if let Some(Stop::Throttled { for_copy, .. }) = t.stop {
                if for_copy {
                    self.awaiting_copy.insert(tid);
                }
                t.stop = None;
                let _ = pt::interrupt(tid);
                let _ = pt::cont(tid, None);
            }
        }
    }

    fn seize_all(&mut self, threads: &[(u32, u32)]) -> Result<(), String> {
        for &(tid, pid) in threads {
            if let Err(e) = pt::seize(tid) {
                // A zombie (a dead child not reaped yet, e.g. a snapshot
                // copy from an earlier recording) cannot be traced: skip it.
                let dead = sys::task_state(tid).is_none_or(|s| s.starts_with(['Z', 'X']));
                if e.raw_os_error() == Some(libc::ESRCH) || dead {
                    continue;
                }
                if e.raw_os_error() == Some(libc::EPERM) {
                    let tracer = sys::tracer_of(tid).unwrap_or(0);
                    return Err(format!(
                        "thread {tid} is already being traced by PID {tracer}: stop that debugger or tracer, or record with --no-checkpoints"
                    ));
                }
                return Err(format!("cannot ptrace thread {tid}: {e}"));
            }
            self.tracees.insert(tid, Tracee { pid, stop: None });
            self.procs.entry(pid).or_default();
        }
        // Multithreaded already: probed before the first cut.
        let mut pids: Vec<u32> = threads.iter().map(|&(_, p)| p).collect();
        pids.sort_unstable();
        for w in pids.windows(2).filter(|w| w[0] == w[1]) {
            self.hook_sync(w[0]);
        }
        Ok(())
    }

    /// Normal running: keep every tracee going, note births and deaths.
    fn handle(&mut self, status: WaitStatus) {
        if let Some(d) = self.deferred.as_mut() {
            let other = !matches!(status, WaitStatus::PtraceSyscall(_));
            if other && status.pid().is_some_and(|p| p.as_raw() as u32 == d.tid) && !d.arrived {
                // Anything else (a signal, an exit, an event) ends the wait:
                // resuming it drops the stop at its next syscall.
                d.until = Instant::now();
                self.next_due = Some(d.until);
            }
        }
        match status {
            WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _) => {
                let tid = p.as_raw() as u32;
                self.gone(tid, status);
            }
            WaitStatus::PtraceEvent(p, sig, event) => {
                let tid = p.as_raw() as u32;
                if self.snapshots.contains(&tid) {
                    return;
                }
                self.ensure_known(tid);
                match event {
                    libc::PTRACE_EVENT_FORK
                    | libc::PTRACE_EVENT_VFORK
                    | libc::PTRACE_EVENT_CLONE => {
                        if let Ok(child) = pt::event_msg(tid) {
                            self.adopt(child as u32, tid, event == libc::PTRACE_EVENT_CLONE);
                            if event == libc::PTRACE_EVENT_VFORK {
                                self.vforked.insert(tid, child as u32);
                            }
                        }
                        let _ = pt::cont(tid, None);
                    }
                    libc::PTRACE_EVENT_EXEC => {
                        self.vforked.retain(|_, &mut c| c != tid);
                        self.exec_stop(tid)
                    }
                    PTRACE_EVENT_STOP => {
                        let s = sig as i32;
                        if s == SIGTRAP {
                            // A back-out left over from an abandoned
                            // checkpoint: finish it, so the syscall restarts.
                            self.finish_back_out(tid);
                            let _ = pt::cont(tid, None);
                        } else {
                            // Group-stop: stay stopped, as without us.
                            let _ = pt::listen(tid);
                        }
                    }
                    _ => {
                        let _ = pt::cont(tid, None);
                    }
                }
            }
            WaitStatus::Stopped(p, sig) => {
                let tid = p.as_raw() as u32;
                if self.snapshots.contains(&tid) {
                    return;
                }
                self.ensure_known(tid);
                let sig = sig as i32;
                if let Some(held) = self.throttled(tid, sig) {
                    // Kept stopped for a moment (see `release_throttled`).
                    if let Some(t) = self.tracees.get_mut(&tid) {
                        t.stop = Some(Stop::Throttled {
                            since: Instant::now(),
                            for_copy: held == Held::ForCopy,
                        });
                    }
                    return;
                }
                // Signal-delivery-stop: deliver it, as without us (unless it
                // is a trapped rdtsc, which we answer).
                let deliver = !(sig == libc::SIGSEGV && self.answer_rdtsc(tid));
                if deliver {
                    self.report_siginfo(tid, sig);
                }
                let _ = self.resume(tid, deliver.then_some(sig));
            }
            WaitStatus::PtraceSyscall(p) => {
                let tid = p.as_raw() as u32;
                if self.starting.contains(&tid)
                    && self.deferred.as_ref().is_none_or(|d| d.tid != tid)
                {
                    self.startup_syscall(tid);
                    return;
                }
                match self.deferred.as_mut() {
                    Some(d) if d.tid == tid => {
                        // The cut the checkpoint waited for: take it now.
                        d.arrived = true;
                        if let Some(t) = self.tracees.get_mut(&tid) {
                            t.stop = Some(Stop::Event);
                        }
                        self.next_due = Some(Instant::now());
                    }
                    _ => {
                        let _ = pt::cont(tid, None);
                    }
                }
            }
            _ => {}
        }
    }

    fn gone(&mut self, tid: u32, status: WaitStatus) {
        self.snapshots.remove(&tid);
        self.vforked.retain(|&p, &mut c| p != tid && c != tid);
        if let Some(t) = self.tracees.remove(&tid) {
            if !self.tracees.values().any(|o| o.pid == t.pid) {
                self.procs.remove(&t.pid);
            }
        }
        if Some(tid) == self.opts.launch_root {
            let st = match status {
                WaitStatus::Exited(_, code) => Some(ExitStatus::Code(code)),
                WaitStatus::Signaled(_, sig, _) => Some(ExitStatus::Signal(sig as i32)),
                _ => None,
            };
            if let Some(st) = st {
                let _ = self.reports.send(Report::RootExited(st));
            }
        }
    }

    /// A tracee we did not know reported (a child whose first stop came
    /// before its parent's fork event).
    fn ensure_known(&mut self, tid: u32) {
        if let std::collections::hash_map::Entry::Vacant(v) = self.tracees.entry(tid) {
            let pid = sys::tgid_of(tid).unwrap_or(tid);
            v.insert(Tracee { pid, stop: None });
            self.procs.entry(pid).or_default();
            if pid != tid {
                // A new thread whose first stop came before its creator's
                // clone event: probed before it runs a line of its own.
                self.hook_sync(pid);
            }
        }
    }

    fn adopt(&mut self, child: u32, parent: u32, thread: bool) {
        if self.snapshots.contains(&child) {
            return;
        }
        let ppid = self.tracees.get(&parent).map(|t| t.pid).unwrap_or(parent);
        let pid = if thread { ppid } else { child };
        if self.tsc_trapped.contains(&parent) {
            // PR_SET_TSC is inherited by new threads and processes.
            self.tsc_trapped.insert(child);
        }
        self.tracees
            .entry(child)
            .or_insert(Tracee { pid, stop: None })
            .pid = pid;
        if let (false, Some(&pin)) = (thread, self.pinned.get(&ppid)) {
            // Inherited the start-up pin: undone with the parent's.
            self.pinned.insert(pid, pin);
        }
        if thread {
            self.hook_sync(pid);
        }
        if !thread {
            // A forked child shares the parent's (patched) vDSO and, until
            // it writes, its pages; it starts with no page history.
            let insn = self.procs.get(&ppid).and_then(|p| p.syscall_insn);
            let patched = self.procs.get(&ppid).is_some_and(|p| p.patched);
            self.procs.insert(
                pid,
                Proc {
                    syscall_insn: insn,
                    patched,
                    ..Proc::default()
                },
            );
        }
    }

    /// Gives `pid`, which has (or is about to have) a second thread, its
    /// sync probes, once per image. Call with its threads stopped: a
    /// thread's lock operations after that are recorded.
    fn hook_sync(&mut self, pid: u32) {
        let (Some(hooks), Some(proc)) = (self.sync_hooks.as_mut(), self.procs.get_mut(&pid)) else {
            return;
        };
        if std::mem::replace(&mut proc.sync_tried, true) {
            return;
        }
        let t0 = Instant::now();
        match hooks.attach(pid) {
            Ok(h) => {
                proc.sync = h;
                phase(&format!("sync probes of {pid}"), t0);
            }
            Err(e) => self.warn(format!(
                "process {pid}: lock order not recorded ({e}); its replay may diverge"
            )),
        }
    }

    /// The probed addresses of `maps` with the bytes the probes replace.
    fn unprobe_points(&self, maps: &[sys::MapEntry]) -> Vec<(u64, u8)> {
        self.sync_hooks
            .as_ref()
            .map(|h| h.points_in(maps))
            .unwrap_or_default()
    }

    /// After an exec: a new vDSO, no page history; the same children.
    fn new_image(&mut self, pid: u32) {
        let zombies = self
            .procs
            .remove(&pid)
            .map(|p| p.zombies)
            .unwrap_or_default();
        self.procs.insert(
            pid,
            Proc {
                zombies,
                ..Proc::default()
            },
        );
    }

    fn exec_stop(&mut self, tid: u32) {
        let t_exec = Instant::now();
        // After an exec the process has one thread, with the leader's tid.
        let pid = sys::tgid_of(tid).unwrap_or(tid);
        self.tracees.retain(|t, tr| tr.pid != pid || *t == tid);
        self.tracees.insert(tid, Tracee { pid, stop: None });
        self.new_image(pid);
        self.patch_vdso(pid);
        self.tsc_trapped.remove(&tid);
        if self.awaiting_exec && Some(pid) == self.opts.launch_root {
            // Checkpoint 0 right before the program's first instruction:
            // let execve return, stop on the way to user mode.
            self.awaiting_exec = false;
            self.pin_start(pid);
            let _ = pt::interrupt(tid);
            let _ = pt::cont(tid, None);
            if self.wait_stopped(&[tid], Duration::from_secs(2)).is_empty() {
                self.checkpoint_stopped("exec", Instant::now());
                self.resume_all();
            }
            return;
        }
        // Every later exec starts an epoch: replay cannot rebuild a new
        // image inside an epoch (the kernel lays it out at random), so it is
        // checkpointed as it starts, right after execve returns.
        self.fresh_execs.push(pid);
        let _ = pt::interrupt(tid);
        let _ = pt::cont(tid, None);
        phase("exec: ready to checkpoint", t_exec);
        self.checkpoint("exec");
        phase("exec: checkpointed", t_exec);
    }

    /// A `syscall` instruction in `pid`'s current vDSO (checked against its
    /// map: an image whose exec we missed has moved it).
    fn syscall_insn(&mut self, pid: u32) -> Result<u64, String> {
        let range = sys::vdso_range(pid).ok_or("the process has no vDSO")?;
        let known = self.procs.get(&pid).and_then(|p| p.syscall_insn);
        if let Some(i) = known.filter(|&i| range.0 <= i && i + 2 <= range.1) {
            return Ok(i);
        }
        self.patch_vdso(pid);
        self.procs
            .get(&pid)
            .and_then(|p| p.syscall_insn)
            .ok_or_else(|| "no syscall instruction found".to_string())
    }

    /// Patches the vDSO time functions of `pid` into real syscalls.
    fn patch_vdso(&mut self, pid: u32) {
        let Some((start, end)) = sys::vdso_range(pid) else {
            return;
        };
        let Ok(mem) = Mem::open(pid) else { return };
        let mut image = vec![0u8; (end - start) as usize];
        if mem.read(start, &mut image).unwrap_or(0) != image.len() {
            return;
        }
        // Injections run from a stub that exits whatever escapes it (see
        // INJECTION_STUB); failing that, from any `syscall` in the image.
        let stub = vdso::injection_site(&image)
            .filter(|&site| mem.write(start + site, &vdso::INJECTION_STUB).is_ok())
            .map(|site| start + site);
        let proc = self.procs.entry(pid).or_default();
        proc.syscall_insn = stub.or_else(|| vdso::syscall_insn(&image).map(|o| start + o));
        let mut ok = true;
        for (off, nr) in vdso::entry_points(&image) {
            ok &= mem.write(start + off, &vdso::stub(nr)).is_ok();
        }
        proc.patched = ok;
        if !ok {
            self.warn(format!(
                "could not patch the vDSO of process {pid}: its clock reads are not recorded"
            ));
        }
    }

    /// Waits until every tid in `tids` is in a ptrace-stop; handles other
    /// tracees' events meanwhile. Returns those that did not stop in time.
    fn wait_stopped(&mut self, tids: &[u32], timeout: Duration) -> Vec<u32> {
        let mut pending: HashSet<u32> = tids.iter().copied().collect();
        let start = Instant::now();
        let deadline = start + timeout;
        let mut swept = false;
        while !pending.is_empty() && Instant::now() < deadline {
            match pt::wait_any() {
                Ok(Some(st)) => {
                    for tid in self.note_stop(st) {
                        pending.remove(&tid);
                    }
                }
                Ok(None) => std::thread::yield_now(),
                Err(_) => break,
            }
            pending.retain(|t| self.tracees.contains_key(t) && self.tracees[t].stop.is_none());
            self.sync_deadline();
            if !swept && start.elapsed() > Duration::from_millis(20) {
                // Threads reaped without a notification to us (e.g. the
                // other threads of a process that exec'd) are gone.
                swept = true;
                let gone: Vec<u32> = pending
                    .iter()
                    .copied()
                    .filter(|t| sys::task_state(*t).is_none())
                    .collect();
                for t in gone {
                    pending.remove(&t);
                    self.tracees.remove(&t);
                }
                // A thread in uninterruptible sleep will not stop. A vfork
                // parent waits for its child to exec or exit: if we
                // stopped that child, it alone runs on to its exec (where
                // it stops again, caught as its new image starts, and the
                // checkpoint counts that exec too), which wakes the parent.
                // Otherwise give up early.
                let blocked: Vec<u32> = pending
                    .iter()
                    .copied()
                    .filter(|t| sys::task_state(*t).is_some_and(|s| s.starts_with('D')))
                    .collect();
                let mut released = false;
                for parent in &blocked {
                    let Some(&child) = self.vforked.get(parent) else {
                        continue;
                    };
                    if let Some(t) = self.tracees.get_mut(&child) {
                        if t.stop.take().is_some() {
                            let _ = pt::cont(child, None);
                            pending.insert(child);
                            released = true;
                        }
                    }
                }
                if !blocked.is_empty() && !released {
                    break;
                }
            }
        }
        pending.into_iter().collect()
    }

    /// Puts a thread's registers back after an injection. After a failed
    /// one the thread may still be inside (or at the entry of) the injected
    /// syscall: stop it, and cancel that syscall (`orig_rax = -1`) so that
    /// resuming runs nothing of ours, only the thread's own restarted code.
    fn restore_after_injection(
        &mut self,
        tid: u32,
        saved: Regs,
        failed: bool,
    ) -> std::io::Result<()> {
        let mut r = restart_fixup(saved);
        if failed {
            self.force_stop(tid);
            r.orig_rax = u64::MAX;
        }
        pt::setregs(tid, r)
    }

    /// Stops a thread that is running an injection gone wrong.
    fn force_stop(&mut self, tid: u32) {
        let _ = pt::interrupt(tid);
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            match nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(tid as i32),
                Some(nix::sys::wait::WaitPidFlag::__WALL | nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::StillAlive) => std::thread::yield_now(),
                Ok(WaitStatus::Stopped(_, sig)) => {
                    if let Some(t) = self.tracees.get_mut(&tid) {
                        t.stop = Some(Stop::Signal(sig as i32));
                    }
                    return;
                }
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => return,
                Ok(_) => return,
            }
        }
    }

    /// During a checkpoint: records how a tracee stopped, without resuming
    /// it. Returns the tids that are now stopped (or gone).
    fn note_stop(&mut self, status: WaitStatus) -> Vec<u32> {
        match status {
            WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _) => {
                let tid = p.as_raw() as u32;
                self.gone(tid, status);
                vec![tid]
            }
            WaitStatus::PtraceEvent(p, sig, event) => {
                let tid = p.as_raw() as u32;
                if self.snapshots.contains(&tid) {
                    return vec![];
                }
                self.ensure_known(tid);
                let stop = match event {
                    PTRACE_EVENT_STOP if sig as i32 == SIGTRAP => {
                        if !self.finish_back_out(tid) && self.run_to_syscall(tid) {
                            return vec![];
                        }
                        Stop::Interrupt
                    }
                    PTRACE_EVENT_STOP => Stop::Group,
                    libc::PTRACE_EVENT_FORK
                    | libc::PTRACE_EVENT_VFORK
                    | libc::PTRACE_EVENT_CLONE => {
                        if let Ok(child) = pt::event_msg(tid) {
                            // The new tracee will report its own first stop.
                            self.adopt(child as u32, tid, event == libc::PTRACE_EVENT_CLONE);
                            if event == libc::PTRACE_EVENT_VFORK {
                                self.vforked.insert(tid, child as u32);
                            }
                        }
                        // Not a point to checkpoint at (halfway through the
                        // syscall, its result not logged yet): stop as it
                        // returns. (A vfork parent will not, until its
                        // child execs: the checkpoint is retried.)
                        let _ = pt::interrupt(tid);
                        let _ = pt::cont(tid, None);
                        return vec![];
                    }
                    libc::PTRACE_EVENT_EXEC => {
                        // A new image: new vDSO, no page history.
                        self.vforked.retain(|_, &mut c| c != tid);
                        let pid = sys::tgid_of(tid).unwrap_or(tid);
                        self.tracees.retain(|t, tr| tr.pid != pid || *t == tid);
                        self.new_image(pid);
                        self.patch_vdso(pid);
                        // Trap rdtsc again at the next checkpoint, whatever
                        // exec did to the flag.
                        self.tsc_trapped.remove(&tid);
                        // Caught as the new image starts (after execve has
                        // returned and been logged), as in `exec_stop`.
                        self.fresh_execs.push(pid);
                        let _ = pt::interrupt(tid);
                        let _ = pt::cont(tid, None);
                        return vec![];
                    }
                    _ => Stop::Event,
                };
                if let Some(t) = self.tracees.get_mut(&tid) {
                    t.stop = Some(stop);
                }
                vec![tid]
            }
            WaitStatus::Stopped(p, sig) => {
                let tid = p.as_raw() as u32;
                if self.snapshots.contains(&tid) {
                    return vec![];
                }
                self.ensure_known(tid);
                let sig = sig as i32;
                if let Some(held) = self.throttled(tid, sig) {
                    // Ours: drop it and stop right there instead.
                    if held == Held::ForCopy {
                        self.awaiting_copy.insert(tid);
                    }
                    let _ = pt::interrupt(tid);
                    let _ = pt::cont(tid, None);
                    return vec![];
                }
                // About to take a signal: deliver it first (or answer the
                // trapped rdtsc), and stop as its handler starts — a point
                // where injections work, so the process is captured whole.
                let deliver = !(sig == libc::SIGSEGV && self.answer_rdtsc(tid));
                if deliver {
                    self.report_siginfo(tid, sig);
                    self.sync.running.remove(&tid);
                    self.sync.delivered.insert(tid);
                }
                let _ = pt::interrupt(tid);
                let _ = pt::cont(tid, deliver.then_some(sig));
                vec![]
            }
            WaitStatus::PtraceSyscall(p) => {
                let tid = p.as_raw() as u32;
                let awaited = self.deferred.as_ref().is_some_and(|d| d.tid == tid);
                if self.starting.contains(&tid) && !awaited {
                    self.startup_goes_on(tid);
                    if !self.sync.running.contains_key(&tid) {
                        // A start-up's syscall stop (see `STARTUP_PIN`),
                        // entry or exit, not a cut: run on to an
                        // interrupt-stop, as any running thread.
                        // `resume_all` takes the start-up up again.
                        let _ = pt::interrupt(tid);
                        let _ = pt::cont(tid, None);
                        return vec![];
                    }
                    // Else the entry `run_to_syscall` ran it to: a cut.
                }
                if (self.sync.running.remove(&tid).is_some() || awaited) && self.back_out(tid) {
                    return vec![];
                }
                if let Some(t) = self.tracees.get_mut(&tid) {
                    t.stop = Some(Stop::Event);
                }
                vec![tid]
            }
            _ => vec![],
        }
    }

    /// At a thread's interrupt-stop during a checkpoint: if it was caught
    /// in user code and there is time, lets it run on to its next syscall
    /// entry ([`SupervisorOptions::cut_at_syscall`]). True if it is running
    /// again.
    fn run_to_syscall(&mut self, tid: u32) -> bool {
        if self.sync.delivered.contains(&tid) {
            return false;
        }
        // orig_rax -1: not inside (or just out of) a syscall.
        if !pt::getregs(tid).is_ok_and(|r| r.orig_rax == u64::MAX) {
            return false;
        }
        self.sync.in_user.insert(tid);
        if self.sync.until.is_none_or(|d| Instant::now() >= d)
            || self.sync.running.contains_key(&tid)
        {
            return false;
        }
        // Skipping a syscall (-1) under a seccomp filter can kill: a filter
        // that allows a list of calls rejects -1.
        if sys::seccomp_mode(tid) != Some(0) {
            return false;
        }
        if pt::to_syscall(tid, None).is_err() {
            return false;
        }
        self.sync.running.insert(tid, false);
        true
    }

    /// At the syscall entry a thread ran on to: turns it into a thread
    /// interrupted in that syscall, which the kernel restarts when resumed
    /// (the checkpoint's cut). The entry is skipped (`orig_rax = -1`, not
    /// recorded) with the registers set to run the `syscall` instruction
    /// again, and the thread stops on its way out (`finish_back_out`).
    /// Should the recorder die meanwhile, the thread just makes its call.
    fn back_out(&mut self, tid: u32) -> bool {
        let Ok(entry) = pt::getregs(tid) else {
            return false;
        };
        let mut r = entry;
        r.orig_rax = u64::MAX;
        r.rax = entry.orig_rax;
        r.rip -= 2;
        self.pause(tid, true);
        if pt::setregs(tid, r).is_err() || pt::interrupt(tid).is_err() {
            self.pause(tid, false);
            let _ = pt::setregs(tid, entry);
            return false;
        }
        if pt::cont(tid, None).is_err() {
            self.pause(tid, false);
            return false;
        }
        self.sync.backing_out.insert(tid, entry);
        true
    }

    /// At the interrupt-stop ending a back-out: the syscall entry's
    /// registers with `rax = -ERESTARTNOINTR`, as after a signal. False if
    /// the thread was not backing out.
    fn finish_back_out(&mut self, tid: u32) -> bool {
        const ERESTARTNOINTR: i64 = -513;
        let Some(mut r) = self.sync.backing_out.remove(&tid) else {
            return false;
        };
        r.rax = ERESTARTNOINTR as u64;
        let _ = pt::setregs(tid, r);
        self.pause(tid, false);
        self.sync.backed_out.insert(tid);
        true
    }

    /// During a checkpoint's wait: threads still running on to a syscall
    /// when time is up are interrupted where they are.
    fn sync_deadline(&mut self) {
        if self.sync.until.is_some_and(|d| Instant::now() >= d) {
            for (&tid, late) in self.sync.running.iter_mut() {
                if !*late {
                    *late = true;
                    let _ = pt::interrupt(tid);
                }
            }
        }
    }

    fn resume_all(&mut self) {
        let stops: Vec<(u32, Option<Stop>)> = self
            .tracees
            .iter_mut()
            .map(|(&tid, t)| (tid, t.stop.take()))
            .collect();
        for (tid, stop) in stops {
            if stop.is_some() && self.awaiting_copy.remove(&tid) && !self.copied.remove(&tid) {
                // Still held (see `Stop::Throttled`): released by
                // `release_throttled` once the copy is made.
                if let Some(t) = self.tracees.get_mut(&tid) {
                    t.stop = Some(Stop::Throttled {
                        since: Instant::now(),
                        for_copy: true,
                    });
                }
                continue;
            }
            let _ = match stop {
                Some(Stop::Group) => pt::listen(tid),
                Some(Stop::Signal(libc::SIGSEGV)) if self.answer_rdtsc(tid) => {
                    self.resume(tid, None)
                }
                Some(Stop::Signal(sig)) => {
                    self.report_siginfo(tid, sig);
                    self.resume(tid, Some(sig))
                }
                Some(Stop::Throttled { .. }) => {
                    self.take_throttled(tid);
                    self.resume(tid, None)
                }
                Some(_) => self.resume(tid, None),
                None => Ok(()),
            };
        }
    }

    /// Logs the siginfo of the signal `tid` is about to receive.
    fn report_siginfo(&self, tid: u32, sig: i32) {
        let Some(pid) = self.tracees.get(&tid).map(|t| t.pid) else {
            return;
        };
        if let Ok(info) = pt::siginfo(tid) {
            let _ = self.reports.send(Report::Siginfo {
                pid,
                tid,
                time_ns: sys::monotonic_ns(),
                sig,
                info,
                regs: pt::getregs(tid).map(|r| regs_words(&r)).unwrap_or_default(),
            });
        }
    }

    /// A thread stopped with SIGSEGV: if it is at `rdtsc` or `rdtscp` (which
    /// trap under PR_TSC_SIGSEGV), runs the instruction for it, logs the
    /// value and returns true.
    fn answer_rdtsc(&mut self, tid: u32) -> bool {
        let Some(pid) = self.tracees.get(&tid).map(|t| t.pid) else {
            return false;
        };
        let Ok(mut r) = pt::getregs(tid) else {
            return false;
        };
        let proc = self.procs.entry(pid).or_default();
        if proc.mem.is_none() {
            proc.mem = Mem::open(pid).ok();
        }
        let Some(mem) = &proc.mem else { return false };
        let mut insn = [0u8; 3];
        if mem.read(r.rip, &mut insn).unwrap_or(0) < 2 {
            return false;
        }
        let (len, value, aux) = match insn {
            // SAFETY: rdtsc has no preconditions.
            [0x0f, 0x31, _] => (2, unsafe { core::arch::x86_64::_rdtsc() }, None),
            [0x0f, 0x01, 0xf9] => {
                let mut aux = 0u32;
                // SAFETY: rdtscp writes TSC_AUX into `aux`, a valid u32.
                let v = unsafe { core::arch::x86_64::__rdtscp(&mut aux) };
                (3, v, Some(aux))
            }
            _ => return false,
        };
        r.rax = value & 0xffff_ffff;
        r.rdx = value >> 32;
        if let Some(a) = aux {
            r.rcx = a as u64;
        }
        r.rip += len;
        if pt::setregs(tid, r).is_err() {
            return false;
        }
        let _ = self.reports.send(Report::Rdtsc {
            pid,
            tid,
            time_ns: sys::monotonic_ns(),
            value,
            aux: aux.map_or(u64::MAX, u64::from),
        });
        // ld.so executes rdtsc before it reads cpuid: a start-up that waited
        // here (the supervisor busy storing a checkpoint) must not find its
        // pin expired meanwhile and read cpuid on another CPU.
        if let Some((until, _)) = self.pinned.get_mut(&pid) {
            *until = (*until).max(Instant::now() + STARTUP_PIN);
        }
        true
    }

    /// Makes `rdtsc` trap in `tid` (a thread in an interrupt-stop), so the
    /// supervisor can log what it reads.
    fn trap_tsc(&mut self, pid: u32, tid: u32) {
        const PR_SET_TSC: u64 = 26;
        const PR_TSC_SIGSEGV: u64 = 2;
        match self.inject_call(pid, tid, 157, [PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0, 0]) {
            Ok(_) => {
                self.tsc_trapped.insert(tid);
            }
            Err(e) => self.warn(format!(
                "thread {tid}: rdtsc cannot be trapped ({e}); its reads are not recorded"
            )),
        }
    }

    /// Runs one syscall of our own in `tid` (in an interrupt-stop) and puts
    /// its registers back; its events are not recorded.
    fn inject_call(&mut self, pid: u32, tid: u32, nr: u64, args: [u64; 6]) -> Result<u32, String> {
        let insn = self.syscall_insn(pid)?;
        let saved = pt::getregs(tid).map_err(|e| e.to_string())?;
        let mut r = saved;
        r.rip = insn;
        r.rax = nr;
        r.orig_rax = u64::MAX;
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) =
            (args[0], args[1], args[2], args[3], args[4], args[5]);
        self.pause(tid, true);
        let result = self.run_injected(tid, r, false);
        let restore = self.restore_after_injection(tid, saved, result.is_err());
        self.pause(tid, false);
        restore.map_err(|e| e.to_string())?;
        result
    }

    fn detach_all(&mut self) {
        self.unpin_due(true);
        for (&tid, t) in self.tracees.iter() {
            if t.stop.is_none() {
                let _ = pt::interrupt(tid);
            }
        }
        let all: Vec<u32> = self.tracees.keys().copied().collect();
        self.wait_stopped(&all, Duration::from_millis(500));
        for (&tid, t) in self.tracees.iter() {
            let sig = match t.stop {
                Some(Stop::Signal(s)) => Some(s),
                _ => None,
            };
            let _ = pt::detach(tid, sig);
        }
        for &s in &self.snapshots {
            sys::kill(s, libc::SIGKILL);
        }
    }

    /// Attach mode, before checkpoint 0: what launch mode does at exec
    /// (patch each vDSO, trap rdtsc in each thread) in a stop of its own,
    /// so that checkpoint 0 stops the target only for the checkpoint.
    fn prepare_attached(&mut self) {
        let all: Vec<u32> = self.tracees.keys().copied().collect();
        for &tid in &all {
            if self.tracees[&tid].stop.is_none() {
                let _ = pt::interrupt(tid);
            }
        }
        self.wait_stopped(&all, Duration::from_secs(1));
        let mut pids: Vec<u32> = self.tracees.values().map(|t| t.pid).collect();
        pids.sort();
        pids.dedup();
        for pid in pids {
            if !self.procs.get(&pid).is_some_and(|p| p.patched) {
                self.patch_vdso(pid);
            }
        }
        // Write trackers of big processes, armed here: their whole memory
        // is stored just before checkpoint 0 while they run (`precopy`),
        // and the cut copies only what they wrote meanwhile, instead of
        // forking (the fork's page-table copy stops them ~16 ms per GiB).
        let stopped: Vec<(u32, u32)> = self
            .tracees
            .iter()
            .filter(|(_, tr)| tr.stop == Some(Stop::Interrupt))
            .map(|(&t, tr)| (tr.pid, t))
            .collect();
        let mut done = HashSet::new();
        for &(pid, tid) in &stopped {
            if self
                .opts
                .track_writes
                .wants(sys::resident_bytes(pid), false)
                && done.insert(pid)
            {
                if let Ok(mut t) = self.make_tracker(pid, tid) {
                    let private = private_ranges(pid);
                    t.arm(&private);
                    t.synced = true;
                    let proc = self.procs.entry(pid).or_default();
                    proc.pending = dirty::normalize(private);
                    proc.tracker = Some(t);
                }
            }
        }
        let ready: Vec<(u32, u32)> = self
            .tracees
            .iter()
            .filter(|(t, tr)| tr.stop == Some(Stop::Interrupt) && !self.tsc_trapped.contains(t))
            .map(|(&t, tr)| (tr.pid, t))
            .collect();
        for (pid, tid) in ready {
            self.trap_tsc(pid, tid);
        }
        self.resume_all();
    }

    /// A coordinated checkpoint of the whole tree.
    fn checkpoint(&mut self, reason: &str) {
        // A thread held for a copy must stay held until the copy is made
        // (see `Stop::Throttled`): releasing it for the cut lets it write a
        // shared mapping first (replay of the epoch before would start from
        // a copy that already holds those writes), or change an output
        // still to be read from its memory. A timed cut waits a moment for
        // the copy; an exec's cannot.
        let copying = self
            .tracees
            .values()
            .any(|t| matches!(t.stop, Some(Stop::Throttled { for_copy: true, .. })));
        if copying && (reason == "timer" || reason == "events") {
            self.next_due = Some(Instant::now() + Duration::from_millis(1));
            return;
        }
        self.precopy();
        self.interrupt_throttled();
        let t0 = Instant::now();
        self.sync = CutSync {
            until: (!self.opts.cut_at_syscall.is_zero()).then(|| t0 + self.opts.cut_at_syscall),
            ..CutSync::default()
        };
        if let Some(d) = self.deferred.as_mut().filter(|d| d.arrived) {
            // Waited for: the cut goes at the entry it stopped at.
            d.arrived = false;
            let tid = d.tid;
            if let Some(t) = self.tracees.get_mut(&tid) {
                t.stop = None;
            }
            self.back_out(tid);
        }
        let all: Vec<u32> = self.tracees.keys().copied().collect();
        for &tid in &all {
            if self.tracees[&tid].stop.is_none() && !self.sync.backing_out.contains_key(&tid) {
                let _ = pt::interrupt(tid);
            }
        }
        let late = self.wait_stopped(&all, Duration::from_secs(1));
        // Threads born during the stop report a first stop of their own.
        let mut newborn: Vec<u32> = self
            .tracees
            .iter()
            .filter(|(_, t)| t.stop.is_none())
            .map(|(&t, _)| t)
            .collect();
        newborn.retain(|t| !late.contains(t));
        let late2 = self.wait_stopped(&newborn, Duration::from_millis(200));
        // Threads still on their way (an abandoned checkpoint) just run on.
        self.sync.until = None;
        self.sync.running.clear();
        if !late.is_empty() || !late2.is_empty() {
            let states: Vec<String> = late
                .iter()
                .chain(&late2)
                .map(|t| {
                    format!(
                        "{t} ({})",
                        sys::task_state(*t).unwrap_or_else(|| "gone".into())
                    )
                })
                .collect();
            self.skipped += 1;
            if self.skipped % 20 == 1 {
                self.warn(format!(
                    "checkpoint delayed: threads {} did not stop (retrying)",
                    states.join(", ")
                ));
            }
            self.resume_all();
            // Retry soon rather than after a whole epoch.
            self.next_due = Some(Instant::now() + Duration::from_millis(2));
            self.deferred = None;
            return;
        }
        if self.defer(reason) {
            return;
        }
        self.deferred = None;
        let exiting =
            |t: &u32| sys::task_state(*t).is_none_or(|s| s.starts_with('Z') || s.starts_with('X'));
        if self.tracees.keys().all(exiting) {
            // The tree is exiting (a checkpoint due as its last thread
            // left): nothing to cut.
            self.resume_all();
            self.schedule_next();
            return;
        }
        self.checkpoint_stopped(reason, t0);
        self.resume_all();
    }

    /// Everything is stopped for a cut, but the one thread that was running
    /// is still in its own code: puts the checkpoint off until that thread
    /// makes a syscall (`Deferred`), at most until `LONE_WAIT` after the
    /// first attempt. Only epoch cuts (a start or an exec is cut where it
    /// is), and not under seccomp (see `run_to_syscall`). True if put off:
    /// everything runs again.
    fn defer(&mut self, reason: &str) -> bool {
        if self.opts.cut_at_syscall.is_zero() || !matches!(reason, "timer" | "events") {
            return false;
        }
        let Some(tid) = self.sync.lone_in_user() else {
            return false;
        };
        let now = Instant::now();
        let until = self.deferred.as_ref().map_or(now + LONE_WAIT, |d| d.until);
        if now >= until || sys::seccomp_mode(tid) != Some(0) {
            return false;
        }
        let Some(t) = self.tracees.get_mut(&tid) else {
            return false;
        };
        t.stop = None;
        self.resume_all();
        if pt::to_syscall(tid, None).is_err() {
            let _ = pt::cont(tid, None);
            return false;
        }
        self.deferred = Some(Deferred {
            tid,
            reason: reason.to_string(),
            until,
            arrived: false,
        });
        self.next_due = Some(until);
        true
    }

    /// Epochs start every `epoch` from the previous due time, not from when
    /// the previous checkpoint finished; a late one does not pile up.
    fn schedule_next(&mut self) {
        let now = Instant::now();
        self.next_due = self.opts.epoch.map(|d| match self.next_due {
            Some(prev) if prev + d > now => prev + d,
            _ => now + d,
        });
    }

    /// Every tracee is stopped: cut, save, snapshot. The caller resumes.
    fn checkpoint_stopped(&mut self, reason: &str, t0: Instant) {
        for pid in self.fresh_execs.clone() {
            self.pin_start(pid);
        }
        let reason = if self.fresh_execs.is_empty() {
            reason.to_string()
        } else {
            let pids: Vec<String> = self.fresh_execs.drain(..).map(|p| p.to_string()).collect();
            format!("exec {}", pids.join(" "))
        };
        let cut_ns = sys::monotonic_ns();
        let epoch = self.epoch;
        self.epoch += 1;
        let _ = self.reports.send(Report::Cut {
            epoch,
            time_ns: cut_ns,
        });
        let Some(writer) = self.writer.clone() else {
            self.schedule_next();
            return;
        };
        let mut processes = Vec::new();
        let mut snapshots = Vec::new();
        let early = self.early_sink.take().filter(|(e, _)| *e == epoch);
        let mut sink = match early.map_or_else(|| writer.begin(epoch), |(_, s)| Ok(s)) {
            Ok(s) => s,
            Err(e) => {
                self.warn(format!("checkpoint {epoch} not stored: {e}"));
                self.schedule_next();
                return;
            }
        };
        phase("stopped", t0);
        let pids: Vec<u32> = {
            let mut p: Vec<u32> = self.tracees.values().map(|t| t.pid).collect();
            p.sort();
            p.dedup();
            p
        };
        for pid in pids {
            match self.capture_process(pid, &mut sink, t0) {
                Ok((state, snap)) => {
                    processes.push(state);
                    snapshots.push(snap);
                }
                Err(e) => self.warn(format!("checkpoint {epoch}: process {pid}: {e}")),
            }
        }
        phase("captured", t0);
        let stop_ns = t0.elapsed().as_nanos() as u64;
        // The target may run again while we read the snapshots.
        self.resume_all();
        for (state, snap) in processes.iter_mut().zip(snapshots) {
            self.store_snapshot(state, snap, &mut sink);
            phase(&format!("stored {}", state.pid), t0);
        }
        // Copies not used by now (a process not captured) are stale.
        self.arena_used = 0;
        if self.arena.capacity() > ARENA_KEEP {
            self.arena = Vec::new();
        }
        for p in self.procs.values_mut() {
            p.precopy.clear();
        }
        let cp = Checkpoint {
            epoch,
            time_ns: cut_ns,
            first_seq: 0,
            stop_ns,
            reason,
            processes,
        };
        self.finisher.finish(sink, cp);
        phase("handed over", t0);
        self.schedule_next();
    }

    /// While stopped: thread states, map, fds, shared memory, and a
    /// copy-on-write snapshot child for the private memory.
    fn capture_process(
        &mut self,
        pid: u32,
        sink: &mut PageSink,
        t0: Instant,
    ) -> Result<(ProcessState, Snapshot), String> {
        let mut threads = Vec::new();
        let mut tids: Vec<u32> = self
            .tracees
            .iter()
            .filter(|(_, t)| t.pid == pid)
            .map(|(&t, _)| t)
            .collect();
        tids.sort();
        for &tid in &tids {
            if !self.tsc_trapped.contains(&tid) && self.tracees[&tid].stop == Some(Stop::Interrupt)
            {
                self.trap_tsc(pid, tid);
            }
        }
        for &tid in &tids {
            let regs = pt::getregs(tid).map_err(|e| format!("registers of {tid}: {e}"))?;
            let words = regs_words(&as_interrupted(pid, regs));
            let syscall = (regs.orig_rax as i64 >= 0).then_some(regs.orig_rax as i64);
            threads.push(ThreadState {
                tid,
                regs: words,
                fpregs: pt::xstate(tid).unwrap_or_default(),
                sigmask: pt::sigmask(tid).unwrap_or(0),
                syscall,
                rseq: pt::rseq_area(tid).unwrap_or_default(),
            });
        }
        phase("threads", t0);
        let maps = sys::maps(pid).map_err(|e| format!("memory map: {e}"))?;
        let mut mappings = Vec::new();
        for m in &maps {
            // Files are copied after the target resumes (store_snapshot).
            let file = None;
            mappings.push(Mapping {
                start: m.start,
                end: m.end,
                perms: m.perms.clone(),
                offset: m.offset,
                dev: m.dev.clone(),
                inode: m.inode,
                path: m.path.clone(),
                file,
                stored: stored(m),
            });
        }
        let unprobe = self.unprobe_points(&maps);
        let proc = self.procs.entry(pid).or_default();
        proc.unprobe = unprobe;
        // No page history (first checkpoint, or after an exec): store all.
        let full = proc.hashes.is_empty() || std::mem::take(&mut proc.fresh);
        // Shared writable memory is not copied by fork: read it now.
        let mem = Mem::open(pid).map_err(|e| format!("memory: {e}"))?;
        let mut pages = std::mem::take(&mut proc.streamed);
        for m in maps.iter().filter(|m| stored(m) && m.perms.ends_with('s')) {
            pages += store_range(
                &mem,
                pid,
                m.start,
                m.end,
                &mut proc.hashes,
                &proc.unprobe,
                sink,
            );
        }
        let injector = tids.iter().copied().find(|t| {
            std::env::var_os("UNIPLAY_NO_COW").is_none()
                && self.tracees[t].stop == Some(Stop::Interrupt)
        });
        phase("maps+shared", t0);
        if let Some(t) = injector {
            self.reap_snapshots(pid, t);
        }
        phase("reap", t0);
        let private = private_of(&maps);
        let resident = sys::resident_bytes(pid);
        let written = self.scan_writes(pid, &private);
        phase("scan", t0);
        let mut sigactions = Vec::new();
        let snap = match written {
            Some(w) if dirty::copy_while_stopped(dirty::bytes(&w.to_copy), resident) => {
                if let Some(t) = injector {
                    sigactions = self.sigactions(pid, t, false);
                }
                phase(&format!("sigactions ({})", sigactions.len()), t0);
                let mut pieces = w.copied;
                pieces.extend(copy_ranges(
                    pid,
                    &mem,
                    &w.to_copy,
                    &mut self.arena,
                    &mut self.arena_used,
                ));
                phase(
                    &format!("copy ({} KiB)", dirty::bytes(&w.to_copy) >> 10),
                    t0,
                );
                Snapshot::Copied(pieces)
            }
            w => match injector.map(|t| self.inject_snapshot(pid, t)) {
                Some(Ok(child)) => Snapshot::Child {
                    child,
                    only: w.map(|w| w.all),
                },
                Some(Err(e)) => {
                    self.warn(format!("process {pid}: no copy-on-write snapshot ({e}); its memory was read while stopped"));
                    Snapshot::Direct
                }
                None => Snapshot::Direct,
            },
        };
        phase("snapshot", t0);
        if let Snapshot::Direct = snap {
            let proc = self.procs.entry(pid).or_default();
            for &(s, e) in &private {
                pages += store_range(&mem, pid, s, e, &mut proc.hashes, &proc.unprobe, sink);
            }
            if let Some(t) = injector {
                sigactions = self.sigactions(pid, t, false);
            }
        }
        if injector.is_none() {
            sigactions = self.known_sigactions(pid);
        }
        if let (Some(t), Snapshot::Child { .. }) = (injector, &snap) {
            if self.opts.track_writes.wants(resident, !full) {
                self.start_tracking(pid, t, private);
            }
        }
        phase("track", t0);
        let memory = match snap {
            Snapshot::Child { .. } => "fork",
            Snapshot::Direct => "stopped",
            Snapshot::Copied(_) => "tracked",
        };
        let state = ProcessState {
            memory: memory.to_string(),
            pid,
            ppid: sys::ppid_of(pid).unwrap_or(0),
            exe: sys::exe(pid),
            cwd: sys::cwd(pid),
            maps: mappings,
            threads,
            fds: sys::fds(pid)
                .into_iter()
                .map(|f| FdState {
                    fd: f.fd,
                    path: f.path,
                    pos: f.pos,
                    flags: f.flags,
                })
                .collect(),
            sigactions,
            pages_stored: pages,
            full,
        };
        Ok((state, snap))
    }

    /// Copies a mapped file into the trace once per (device, inode), read
    /// through the mapping (`/proc/PID/map_files/...`: the inode mapped,
    /// where `path` may name another file by now, one renamed over it),
    /// else by path.
    fn copy_file(&mut self, dev: &str, inode: u64, path: &str, mapping: &str) -> Option<String> {
        let key = (dev.to_string(), inode);
        if let Some(h) = self.files.get(&key) {
            return Some(h.clone());
        }
        let writer = self.writer.as_ref()?;
        let h = writer
            .add_file(std::path::Path::new(mapping))
            .or_else(|_| writer.add_file(std::path::Path::new(path)))
            .ok()?;
        self.files.insert(key, h.clone());
        Some(h)
    }

    /// Makes `tid` (in an interrupt-stop) run clone(CLONE_PARENT | SIGCHLD);
    /// returns the child, stopped, with registers that make it exit should
    /// it ever be resumed (e.g. if the recorder dies).
    /// Reaps `pid`'s dead snapshot children from inside it (`tid` is in an
    /// interrupt-stop).
    fn reap_snapshots(&mut self, pid: u32, tid: u32) {
        const WNOHANG_WALL: u64 = 1 | 0x4000_0000;
        let zombies = match self.procs.get_mut(&pid) {
            Some(p) => std::mem::take(&mut p.zombies),
            None => return,
        };
        let mut left = Vec::new();
        for z in zombies {
            // 0: not dead yet; an error (ECHILD): gone already.
            if let Ok(0) = self.inject_call(pid, tid, 61, [z as u64, 0, WNOHANG_WALL, 0, 0, 0]) {
                left.push(z);
            }
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            p.zombies.extend(left);
        }
    }

    /// A copy-on-write copy of process `pid`, made by injecting a clone
    /// into its thread `tid`. Its parent is ours when the target is our
    /// child (CLONE_PARENT); otherwise the target's, with no exit signal,
    /// so that the target never sees it die (its SIGCHLD, a wait4(-1)
    /// returning it) and it is reaped later by `reap_snapshots`.
    fn inject_snapshot(&mut self, pid: u32, tid: u32) -> Result<u32, String> {
        const CLONE_PARENT: u64 = 0x8000;
        let ours = sys::ppid_of(pid) == Some(std::process::id());
        let insn = self.syscall_insn(pid)?;
        let saved = pt::getregs(tid).map_err(|e| e.to_string())?;
        let mut r = saved;
        r.rip = insn;
        r.rax = 56; // clone
        r.orig_rax = u64::MAX;
        r.rdi = if ours {
            CLONE_PARENT | libc::SIGCHLD as u64
        } else {
            0
        };
        r.rsi = 0;
        r.rdx = 0;
        r.r10 = 0;
        r.r8 = 0;
        self.pause(tid, true);
        let result = self.run_injected(tid, r, true);
        let restore = self.restore_after_injection(tid, saved, result.is_err());
        self.pause(tid, false);
        let child = result?;
        restore.map_err(|e| e.to_string())?;
        self.snapshots.insert(child);
        if !ours {
            self.procs.entry(pid).or_default().zombies.push(child);
        }
        // The child's first stop: then disarm it.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(child as i32),
                Some(nix::sys::wait::WaitPidFlag::__WALL | nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => std::thread::yield_now(),
                Ok(WaitStatus::PtraceEvent(..)) | Ok(WaitStatus::Stopped(..)) => break,
                other => return Err(format!("snapshot child did not stop: {other:?}")),
            }
        }
        let mut c = pt::getregs(child).map_err(|e| e.to_string())?;
        c.rip = insn;
        c.rax = 60; // exit(0) if ever resumed
        c.orig_rax = u64::MAX;
        c.rdi = 0;
        pt::setregs(child, c).map_err(|e| e.to_string())?;
        Ok(child)
    }

    /// Runs one injected syscall in a stopped thread, returning its result.
    /// With `fork`, waits for the fork event and returns the child instead.
    fn run_injected(&mut self, tid: u32, regs: Regs, fork: bool) -> Result<u32, String> {
        pt::setregs(tid, regs).map_err(|e| e.to_string())?;
        let mut child = None;
        pt::to_syscall(tid, None).map_err(|e| e.to_string())?;
        let mut entered = false;
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if Instant::now() > deadline {
                let r = pt::getregs(tid);
                return Err(format!(
                    "injected syscall did not finish (thread {tid}: {}, entered: {entered}, child: {child:?}, seen {seen:?}, regs: {})",
                    sys::task_state(tid).unwrap_or_else(|| "gone".into()),
                    match r {
                        Ok(r) => format!("rip {:#x} (set {:#x}) rax {:#x} orig_rax {:#x}", r.rip, regs.rip, r.rax, r.orig_rax as i64),
                        Err(e) => e.to_string(),
                    }
                ));
            }
            let st = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(tid as i32),
                Some(nix::sys::wait::WaitPidFlag::__WALL | nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            if !matches!(st, Ok(WaitStatus::StillAlive)) && seen.len() < 4 {
                seen.push(format!("{st:?}"));
            }
            match st {
                Ok(WaitStatus::StillAlive) => std::thread::yield_now(),
                Ok(WaitStatus::PtraceSyscall(_)) if !entered => {
                    entered = true;
                    pt::to_syscall(tid, None).map_err(|e| e.to_string())?;
                }
                Ok(WaitStatus::PtraceSyscall(_)) => {
                    let r = pt::getregs(tid).map_err(|e| e.to_string())?;
                    if (r.rax as i64) < 0 {
                        return Err(format!("injected syscall failed: {}", r.rax as i64));
                    }
                    return match (fork, child) {
                        (true, Some(c)) => Ok(c),
                        (true, None) => Ok(r.rax as u32),
                        (false, _) => Ok(r.rax as u32),
                    };
                }
                Ok(WaitStatus::PtraceEvent(_, _, ev))
                    if ev == libc::PTRACE_EVENT_FORK
                        || ev == libc::PTRACE_EVENT_CLONE
                        || ev == libc::PTRACE_EVENT_VFORK =>
                {
                    child = pt::event_msg(tid).ok().map(|c| c as u32);
                    if let Some(c) = child {
                        self.snapshots.insert(c);
                    }
                    pt::to_syscall(tid, None).map_err(|e| e.to_string())?;
                }
                Ok(WaitStatus::Stopped(_, sig)) => {
                    // A signal arrived meanwhile: keep it for the real resume.
                    if let Some(t) = self.tracees.get_mut(&tid) {
                        t.stop = Some(Stop::Signal(sig as i32));
                    }
                    pt::to_syscall(tid, None).map_err(|e| e.to_string())?;
                }
                Ok(WaitStatus::PtraceEvent(..)) => {
                    pt::to_syscall(tid, None).map_err(|e| e.to_string())?
                }
                Ok(other) => {
                    return Err(format!(
                        "thread {tid} went away during a checkpoint: {other:?}"
                    ))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn pause(&self, tid: u32, paused: bool) {
        self.filter().pause(tid, paused);
    }

    /// With the target running: reads the snapshot child's private memory,
    /// asks it for the signal handlers, and kills it.
    fn store_snapshot(&mut self, state: &mut ProcessState, snap: Snapshot, sink: &mut PageSink) {
        let pid = state.pid;
        for m in state.maps.iter_mut() {
            if m.path.starts_with('/') && m.inode != 0 {
                let mapping = sys::map_file(pid, m.start, m.end);
                m.file = self.copy_file(&m.dev, m.inode, &m.path, &mapping);
            }
        }
        self.arm_tracking(pid);
        let (child, only) = match snap {
            Snapshot::Direct => return,
            Snapshot::Copied(chunks) => {
                let proc = self.procs.entry(pid).or_default();
                for (addr, off, len) in chunks {
                    let data = &self.arena[off..off + len];
                    state.pages_stored +=
                        store_pages(pid, addr, data, &mut proc.hashes, &proc.unprobe, sink);
                }
                return;
            }
            Snapshot::Child { child, only } => (child, only),
        };
        if let Ok(mem) = Mem::open(child) {
            let proc = self.procs.entry(pid).or_default();
            let all: Vec<(u64, u64)> = state
                .maps
                .iter()
                .filter(|m| m.stored && !m.perms.ends_with('s'))
                .map(|m| (m.start, m.end))
                .collect();
            for (s, e) in only.unwrap_or(all) {
                state.pages_stored +=
                    store_range(&mem, pid, s, e, &mut proc.hashes, &proc.unprobe, sink);
            }
        }
        let t = Instant::now();
        state.sigactions = self.sigactions(pid, child, true);
        phase(
            &format!("  sigactions of {pid} ({})", state.sigactions.len()),
            t,
        );
        sys::kill(child, libc::SIGKILL);
        let t = Instant::now();
        // Reap it (we are its tracer, and in launch mode its parent).
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(child as i32),
                Some(nix::sys::wait::WaitPidFlag::__WALL | nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => break,
                _ => std::thread::yield_now(),
            }
        }
        phase("  reaped", t);
        self.snapshots.remove(&child);
    }

    /// At a cut: what `pid` wrote since its previous checkpoint, when its
    /// writes are tracked and protection was armed at that cut. The scan
    /// re-arms it either way (see [`crate::dirty`]).
    fn scan_writes(&mut self, pid: u32, private: &[(u64, u64)]) -> Option<Written> {
        let proc = self.procs.get_mut(&pid)?;
        let tracker = proc.tracker.as_mut().filter(|t| t.armed)?;
        let scan = tracker.scan(private);
        proc.to_register = scan.unregistered;
        let exact = std::mem::replace(&mut tracker.synced, true);
        let pending = std::mem::take(&mut proc.pending);
        let precopy = std::mem::take(&mut proc.precopy);
        if !exact {
            return None;
        }
        let since = dirty::normalize(scan.written);
        let private = dirty::normalize(private.to_vec());
        let all = dirty::intersect(
            &dirty::normalize(pending.into_iter().chain(since.iter().copied()).collect()),
            &private,
        );
        // Copies made before the cut hold for what was not written since.
        let copied = dirty::pieces_within(&precopy, &dirty::subtract(&all, &since));
        let covered: Vec<(u64, u64)> = copied
            .iter()
            .map(|&(a, _, len)| (a, a + len as u64))
            .collect();
        let to_copy = dirty::subtract(&all, &dirty::normalize(covered));
        Some(Written {
            all,
            copied,
            to_copy,
        })
    }

    /// Before a checkpoint, with the target running: for each tracked
    /// process, takes (and re-arms) what it wrote so far and copies it, so
    /// that the stop only copies what is written after this (see
    /// [`crate::dirty`]: a page written after the scan below is written
    /// after its copy, and the scan at the cut reports it).
    fn precopy(&mut self) {
        self.arena_used = 0;
        let mut first = Vec::new();
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            let Some(proc) = self.procs.get_mut(&pid) else {
                continue;
            };
            proc.precopy.clear();
            let Some(tracker) = proc.tracker.as_ref().filter(|t| t.synced) else {
                continue;
            };
            let private = private_ranges(pid);
            let scan = tracker.scan(&private);
            let mut pending = std::mem::take(&mut proc.pending);
            pending.extend(scan.written);
            proc.pending = dirty::normalize(pending);
            if proc.hashes.is_empty() {
                // Never checkpointed (armed at attach): all of it is pending.
                first.push(pid);
                continue;
            }
            if !dirty::copy_while_stopped(dirty::bytes(&proc.pending), sys::resident_bytes(pid)) {
                continue;
            }
            let Ok(mem) = Mem::open(pid) else { continue };
            let t0 = Instant::now();
            proc.precopy = copy_ranges(
                pid,
                &mem,
                &proc.pending,
                &mut self.arena,
                &mut self.arena_used,
            );
            phase(
                &format!(
                    "pre-copy of {pid} ({} KiB)",
                    dirty::bytes(&proc.pending) >> 10
                ),
                t0,
            );
        }
        for pid in first {
            self.store_first(pid);
        }
        // Touch room for the copies at the cut now: a first touch of a page
        // (a fault, ~10 µs in a VM) would otherwise happen with the target
        // stopped.
        if self.arena_used > 0 && self.arena.len() < self.arena_used + CUT_ROOM {
            self.arena.resize(self.arena_used + CUT_ROOM, 0);
        }
    }

    /// Before the first checkpoint of a tracked process (attach), with it
    /// running: stores all its pending memory into that checkpoint's pages,
    /// read in pieces. The cut then copies only what it writes from here
    /// on, stored after (a later page replaces an earlier one, FORMAT.md).
    fn store_first(&mut self, pid: u32) {
        const PIECE: usize = 1 << 20;
        let t0 = Instant::now();
        let epoch = self.epoch;
        if self.early_sink.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let Some(writer) = self.writer.as_ref() else {
                return;
            };
            match writer.begin(epoch) {
                Ok(sink) => self.early_sink = Some((epoch, sink)),
                Err(_) => return,
            }
        }
        let unprobe = self.unprobe_points(&sys::maps(pid).unwrap_or_default());
        if let Some(proc) = self.procs.get_mut(&pid) {
            proc.unprobe = unprobe;
        }
        let (Some((_, sink)), Some(proc), Ok(mem)) = (
            self.early_sink.as_mut(),
            self.procs.get_mut(&pid),
            Mem::open(pid),
        ) else {
            return;
        };
        let mut buf = vec![0u8; PIECE];
        for (s, e) in std::mem::take(&mut proc.pending) {
            let mut a = s;
            while a < e {
                let n = ((e - a) as usize).min(PIECE);
                let got = read_target(pid, &mem, a, &mut buf[..n]);
                let got = got - got % PAGE as usize;
                proc.streamed +=
                    store_pages(pid, a, &buf[..got], &mut proc.hashes, &proc.unprobe, sink);
                // An unreadable page is skipped (the fork would fail it too).
                a += if got < n { got as u64 + PAGE } else { n as u64 };
            }
        }
        proc.fresh = true;
        // Its compression must not run into the stop that follows.
        let _ = sink.settle();
        phase(&format!("stored all of {pid} before the cut"), t0);
    }

    /// Gives `pid` (stopped; `tid` interrupt-stopped) a write tracker,
    /// armed over `private` once the target runs again.
    fn start_tracking(&mut self, pid: u32, tid: u32, private: Vec<(u64, u64)>) {
        let Some(proc) = self.procs.get_mut(&pid) else {
            return;
        };
        if proc.tracker.as_ref().is_some_and(|t| !t.armed) {
            // Made beforehand (attach): arm it now.
            proc.to_arm.get_or_insert(private);
            return;
        }
        if proc.tracker.is_some() || proc.untrackable {
            return;
        }
        let made = self.make_tracker(pid, tid);
        let proc = self.procs.entry(pid).or_default();
        match made {
            Ok(t) => {
                proc.tracker = Some(t);
                proc.to_arm = Some(private);
            }
            Err(e) => {
                proc.untrackable = true;
                if self.opts.track_writes == TrackWrites::Always {
                    self.warn(format!(
                        "process {pid}: writes cannot be tracked ({e}); its checkpoints fork it"
                    ));
                }
            }
        }
    }

    /// A userfaultfd made inside `pid`, taken out, and closed there again
    /// before the target runs (it never sees the descriptor).
    fn make_tracker(&mut self, pid: u32, tid: u32) -> Result<Tracker, String> {
        let fd = self.inject_call(
            pid,
            tid,
            uffd::SYS_USERFAULTFD,
            [uffd::USERFAULTFD_FLAGS, 0, 0, 0, 0, 0],
        )?;
        let taken = uffd::take_fd(pid, fd);
        self.inject_call(pid, tid, 3, [fd as u64, 0, 0, 0, 0, 0])?; // close
        let taken = taken.map_err(|e| format!("pidfd_getfd: {e}"))?;
        Tracker::new(pid, taken).map_err(|e| format!("userfaultfd: {e}"))
    }

    /// With the target running: arms a new tracker, registers mappings
    /// made since.
    fn arm_tracking(&mut self, pid: u32) {
        let Some(Proc {
            tracker: Some(tracker),
            to_arm,
            to_register,
            ..
        }) = self.procs.get_mut(&pid)
        else {
            return;
        };
        if let Some(all) = to_arm.take() {
            tracker.arm(&all);
        }
        tracker.register(&std::mem::take(to_register));
    }

    /// The handlers of the signals `pid` catches, read by running
    /// `rt_sigaction(sig, NULL, &old)` in `thread`: of the snapshot child,
    /// or of the stopped target itself (the answers land below its stack
    /// pointer, whose bytes are put back after).
    fn sigactions(&mut self, pid: u32, thread: u32, snapshot: bool) -> Vec<SigAction> {
        let (caught, ignored) = sys::signal_sets(pid);
        let mut out = Vec::new();
        for sig in 1..=64u32 {
            if ignored & (1 << (sig - 1)) != 0 {
                out.push(SigAction {
                    sig,
                    handler: 1,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                });
            }
        }
        let Some(insn) = self.procs.get(&pid).and_then(|p| p.syscall_insn) else {
            return out;
        };
        let Ok(base) = pt::getregs(thread) else {
            return out;
        };
        let Ok(mem) = Mem::open(if snapshot { thread } else { pid }) else {
            return out;
        };
        let buf = (base.rsp.wrapping_sub(8192)) & !15;
        let mut saved = [0u8; 32];
        if !snapshot && mem.read(buf, &mut saved).unwrap_or(0) != 32 {
            return out;
        }
        for sig in 1..=64u32 {
            if caught & (1 << (sig - 1)) == 0 {
                continue;
            }
            let args = [sig as u64, 0, buf, 8, 0, 0];
            let done = if snapshot {
                let mut r = base;
                r.rip = insn;
                r.rax = 13; // rt_sigaction
                r.orig_rax = u64::MAX;
                (r.rdi, r.rsi, r.rdx, r.r10) = (args[0], args[1], args[2], args[3]);
                self.run_injected(thread, r, false)
            } else {
                self.inject_call(pid, thread, 13, args)
            };
            if done.is_err() {
                break;
            }
            let mut raw = [0u8; 32];
            if mem.read(buf, &mut raw).unwrap_or(0) == 32 {
                let w = |i: usize| {
                    u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
                };
                out.push(SigAction {
                    sig,
                    handler: w(0),
                    flags: w(1),
                    restorer: w(2),
                    mask: w(3),
                });
            }
        }
        if !snapshot {
            let _ = mem.write(buf, &saved);
        }
        out.sort_by_key(|a| a.sig);
        if out.len() as u32 == (caught | ignored).count_ones() {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.known_sigactions = Some(((caught, ignored), out.clone()));
            }
        }
        out
    }

    /// The handlers of a process none of whose threads can run a query
    /// (all group-stopped, by SIGSTOP or the like): the last ones read, if
    /// the caught and ignored sets are still what they were then; else only
    /// the ignored signals, with a warning.
    fn known_sigactions(&mut self, pid: u32) -> Vec<SigAction> {
        let sets = sys::signal_sets(pid);
        if let Some((was, list)) = self
            .procs
            .get(&pid)
            .and_then(|p| p.known_sigactions.as_ref())
        {
            if *was == sets {
                return list.clone();
            }
        }
        let (caught, ignored) = sets;
        if caught != 0 {
            self.warn(format!(
                "process {pid}: its signal handlers could not be read (every thread is stopped by a signal); a replay from this checkpoint runs them as defaults"
            ));
        }
        let list: Vec<SigAction> = (1..=64u32)
            .filter(|sig| ignored & (1 << (sig - 1)) != 0)
            .map(|sig| SigAction {
                sig,
                handler: 1,
                flags: 0,
                restorer: 0,
                mask: 0,
            })
            .collect();
        // Said once: the same sets next time return this quietly.
        if let Some(p) = self.procs.get_mut(&pid) {
            p.known_sigactions = Some((sets, list.clone()));
        }
        list
    }
}

/// `UNIPLAY_CHECKPOINT_DEBUG=1`: prints how far into the stop each phase
/// of a checkpoint ended.
fn phase(name: &str, t0: Instant) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("UNIPLAY_CHECKPOINT_DEBUG").is_some()) {
        eprintln!(
            "uniplay: checkpoint {name} at {:.3} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// What a tracked process wrote since its previous checkpoint, at a cut.
#[derive(Debug)]
struct Written {
    /// Everything written (normalized, within its private mappings).
    all: Vec<(u64, u64)>,
    /// Parts copied before the cut and not written since.
    copied: Vec<(u64, usize, usize)>,
    /// The rest, to copy now.
    to_copy: Vec<(u64, u64)>,
}

/// Where a process's private memory is read from.
#[derive(Debug)]
enum Snapshot {
    /// A copy-on-write child, frozen at the cut; read all private memory,
    /// or `only` these ranges (written since the previous cut).
    Child {
        child: u32,
        only: Option<Vec<(u64, u64)>>,
    },
    /// No child could be made: it was read while the target was stopped.
    Direct,
    /// The written ranges, copied while the target was stopped into
    /// `State::arena`: (address, offset, length).
    Copied(Vec<(u64, usize, usize)>),
}

/// Whether a mapping's contents belong in a checkpoint: private or writable
/// memory, except what the kernel provides anew ([vvar], [vsyscall], the
/// [uprobes] page where sync probes step through probed instructions) and
/// inaccessible guard regions.
fn stored(m: &sys::MapEntry) -> bool {
    let special = matches!(
        m.path.as_str(),
        "[vvar]" | "[vvar_vclock]" | "[vsyscall]" | "[uprobes]"
    );
    let private_or_writable = m.perms.ends_with('p') || m.perms.as_bytes().get(1) == Some(&b'w');
    !special && m.perms != "---p" && private_or_writable
}

/// Reads `[start, end)` and stores each page whose content changed since it
/// was last stored (a page never stored and all zero is not stored: absent
/// pages of stored mappings read as zero). Returns pages stored.
fn store_range(
    mem: &Mem,
    pid: u32,
    start: u64,
    end: u64,
    hashes: &mut HashMap<u64, u128>,
    unprobe: &[(u64, u8)],
    sink: &mut PageSink,
) -> u64 {
    const CHUNK: usize = 1 << 20;
    thread_local! {
        // Reused: a fresh buffer per call would be faulted in page by page
        // every time (a few ms per checkpoint of a small process).
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; CHUNK]);
    }
    BUF.with_borrow_mut(|buf| {
        let mut stored = 0;
        let mut addr = start;
        while addr < end {
            let len = ((end - addr) as usize).min(CHUNK);
            let chunk = &mut buf[..len];
            // Not process_vm_readv: its page pins would unshare (copy)
            // every page a snapshot child shares with the target.
            let n = mem.read(addr, chunk).unwrap_or(0);
            if n == 0 {
                addr += PAGE;
                continue;
            }
            stored += store_pages(pid, addr, &chunk[..n], hashes, unprobe, sink);
            addr += n as u64;
        }
        stored
    })
}

/// Stores each page of `data` (read at `addr`) that changed since it was
/// last stored, with the bytes sync probes replaced (`unprobe`, sorted by
/// address) put back. Returns pages stored.
fn store_pages(
    pid: u32,
    addr: u64,
    data: &[u8],
    hashes: &mut HashMap<u64, u128>,
    unprobe: &[(u64, u8)],
    sink: &mut PageSink,
) -> u64 {
    let mut stored = 0;
    let mut unprobed = [0u8; PAGE as usize];
    for (i, page) in data.chunks_exact(PAGE as usize).enumerate() {
        let a = addr + i as u64 * PAGE;
        let from = unprobe.partition_point(|&(p, _)| p < a);
        let page = if unprobe.get(from).is_some_and(|&(p, _)| p < a + PAGE) {
            unprobed.copy_from_slice(page);
            unprobe_page(unprobe, a, &mut unprobed);
            &unprobed[..]
        } else {
            page
        };
        let h = xxhash_rust::xxh3::xxh3_128(page);
        let prev = hashes.get(&a).copied();
        if prev == Some(h) || (prev.is_none() && page.iter().all(|&b| b == 0)) {
            continue;
        }
        if sink.page(pid, a, page).is_ok() {
            hashes.insert(a, h);
            stored += 1;
        }
    }
    stored
}

/// Copies `ranges` of a stopped process into `arena` from `arena[used..]`
/// on (see `read_target`), growing it as needed; returns (address, offset,
/// length) of each range copied.
fn copy_ranges(
    pid: u32,
    mem: &Mem,
    ranges: &[(u64, u64)],
    arena: &mut Vec<u8>,
    used: &mut usize,
) -> Vec<(u64, usize, usize)> {
    let needed = *used + dirty::bytes(ranges) as usize;
    if arena.len() < needed {
        // Room to spare: the copy at a cut follows a pre-copy into the same
        // arena, and growing a full vector moves it (5 ms for 10 MiB) while
        // the target is stopped.
        if arena.capacity() < needed {
            arena.reserve(needed + needed / 2 - arena.len());
        }
        arena.resize(needed, 0);
    }
    let mut out = Vec::new();
    for &(s, e) in ranges {
        let buf = &mut arena[*used..*used + (e - s) as usize];
        let got = read_target(pid, mem, s, buf);
        out.push((s, *used, got - got % PAGE as usize));
        *used += buf.len();
    }
    out
}

/// The private (not shared) mappings of `pid` whose contents checkpoints
/// store.
fn private_ranges(pid: u32) -> Vec<(u64, u64)> {
    private_of(&sys::maps(pid).unwrap_or_default())
}

fn private_of(maps: &[sys::MapEntry]) -> Vec<(u64, u64)> {
    maps.iter()
        .filter(|m| stored(m) && !m.perms.ends_with('s'))
        .map(|m| (m.start, m.end))
        .collect()
}

/// Reads `buf.len()` bytes of `pid` at `addr`: process_vm_readv, then
/// /proc/PID/mem for what it may not read (not readable by the process
/// itself). Returns how many bytes were read; what is unmapped reads short.
fn read_target(pid: u32, mem: &Mem, addr: u64, buf: &mut [u8]) -> usize {
    let got = pt::copy_into(pid, addr, buf);
    if got == buf.len() {
        return got;
    }
    got + mem.read(addr + got as u64, &mut buf[got..]).unwrap_or(0)
}

/// A thread stopped again after the kernel prepared to restart its
/// interrupted syscall (`rax` = the call, or `restart_syscall`, and `rip` back
/// on its `syscall` instruction) is stored as interrupted in that call, as
/// a checkpoint normally finds it (`rax` = -ERESTART*, `rip` past the
/// instruction): resumed from either, the kernel makes the same call again,
/// and replay knows only the second form.
fn as_interrupted(pid: u32, mut r: Regs) -> Regs {
    const ERESTARTNOINTR: i64 = -513;
    const ERESTART_RESTARTBLOCK: i64 = -516;
    const RESTART_SYSCALL: u64 = 219;
    if (r.orig_rax as i64) < 0 || (r.rax != r.orig_rax && r.rax != RESTART_SYSCALL) {
        return r;
    }
    let mut insn = [0u8; 2];
    let at_syscall = Mem::open(pid)
        .and_then(|m| m.read(r.rip, &mut insn))
        .is_ok_and(|n| n == 2 && insn == [0x0f, 0x05]);
    if at_syscall {
        r.rax = if r.rax == r.orig_rax {
            ERESTARTNOINTR
        } else {
            ERESTART_RESTARTBLOCK
        } as u64;
        r.rip += 2;
    }
    r
}

/// user_regs_struct as the 27 words of the kernel's order.
fn regs_words(r: &Regs) -> Vec<u64> {
    vec![
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

/// Registers to restore after an injection into a thread that was inside a
/// syscall: make the interrupted syscall restart, as the kernel would have.
pub fn restart_fixup(mut r: Regs) -> Regs {
    const ERESTARTSYS: i64 = -512;
    const ERESTARTNOINTR: i64 = -513;
    const ERESTARTNOHAND: i64 = -514;
    const ERESTART_RESTARTBLOCK: i64 = -516;
    const RESTART_SYSCALL: u64 = 219;
    let rax = r.rax as i64;
    if (r.orig_rax as i64) >= 0 {
        match rax {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r.rax = r.orig_rax;
                r.rip -= 2;
            }
            ERESTART_RESTARTBLOCK => {
                r.rax = RESTART_SYSCALL;
                r.rip -= 2;
            }
            _ => {}
        }
    }
    r
}

/// Checkpoint pages by process, for tests.
pub type Pages = BTreeMap<u64, Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> Regs {
        // SAFETY: user_regs_struct is plain integers; all-zero is valid.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn supervisor_restart_fixup() {
        let mut r = regs();
        r.orig_rax = 0;
        r.rax = (-512i64) as u64;
        r.rip = 0x1002;
        let f = restart_fixup(r);
        assert_eq!((f.rax, f.rip), (0, 0x1000));
        r.rax = (-516i64) as u64;
        let f = restart_fixup(r);
        assert_eq!((f.rax, f.rip), (219, 0x1000));
        r.orig_rax = u64::MAX;
        let f = restart_fixup(r);
        assert_eq!(f.rip, 0x1002, "not in a syscall: unchanged");
    }

    #[test]
    fn supervisor_restart_prepared_stored_as_interrupted() {
        // This process's own memory: a `syscall` instruction, then not one.
        let code: [u8; 4] = [0x0f, 0x05, 0x90, 0x90];
        let at = code.as_ptr() as u64;
        let pid = std::process::id();
        let mut r = regs();
        (r.orig_rax, r.rax, r.rip) = (61, 61, at);
        let f = as_interrupted(pid, r);
        assert_eq!((f.rax as i64, f.rip), (-513, at + 2));
        (r.orig_rax, r.rax) = (35, 219);
        let f = as_interrupted(pid, r);
        assert_eq!((f.rax as i64, f.rip), (-516, at + 2));
        // read returning 0 (its own number), past its instruction: as is.
        (r.orig_rax, r.rax, r.rip) = (0, 0, at + 2);
        let f = as_interrupted(pid, r);
        assert_eq!((f.rax, f.rip), (0, at + 2));
        std::hint::black_box(&code);
    }

    #[test]
    fn supervisor_stored_mappings() {
        let m = |perms: &str, path: &str| sys::MapEntry {
            start: 0,
            end: 4096,
            perms: perms.into(),
            offset: 0,
            dev: "00:00".into(),
            inode: 0,
            path: path.into(),
        };
        assert!(stored(&m("rw-p", "[heap]")));
        assert!(stored(&m("r-xp", "/usr/lib/libc.so.6")));
        assert!(stored(&m("rw-s", "")));
        assert!(!stored(&m("r--s", "/dev/shm/x")));
        assert!(!stored(&m("r--p", "[vvar]")));
        assert!(!stored(&m("--xp", "[uprobes]")));
        assert!(!stored(&m("---p", "")));
    }
}
