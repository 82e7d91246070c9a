//! One recording, start to finish: load the probe, put the target in the
//! filter, drain the rings until the whole tree has exited (or the user
//! stops us), and finalise the trace.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    io::Write as _,
    os::fd::{AsFd, AsRawFd, RawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use recorder_common::{nr, Config};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};
use tracelog::{Event, EventKind, Meta, SignalPhase, TraceState, TraceWriter, WriterOptions};

use crate::{
    assemble::Assembler,
    decode::{decode, Record},
    order::Orderer,
    probe::{Probe, RingSizes},
    supervisor::{Report, Supervisor, SupervisorOptions},
    sys::{self, ExitStatus, HeldChild},
    RecordError,
};

/// What to record.
#[derive(Debug)]
pub enum Target {
    /// A command forked by [`HeldChild::spawn`], waiting to exec.
    Launch { child: HeldChild, argv: Vec<String> },
    /// A running process and all its threads and descendants.
    Attach { pid: u32 },
}

/// When checkpoints are taken (see the `supervisor` module).
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// Epoch length.
    pub epoch: Duration,
    /// Also cut an epoch after this many events.
    pub epoch_events: Option<u64>,
    /// Flight recorder: keep only the newest K epochs on disk.
    pub keep_epochs: Option<u32>,
    /// Which processes get write tracking (see the `dirty` module).
    pub track_writes: crate::dirty::TrackWrites,
    /// How long a thread caught in its own code may run on to a syscall.
    pub cut_at_syscall: Duration,
    /// Probe multithreaded processes' synchronisation functions
    /// (`sync_hook`).
    pub sync_order: bool,
}

#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub out: PathBuf,
    pub force: bool,
    pub rings: RingSizes,
    /// Print a live status line on stderr.
    pub status_line: bool,
    pub writer: WriterOptions,
    /// Checkpoints (ptrace supervision); `None` records with eBPF only.
    pub checkpoints: Option<CheckpointOptions>,
}

/// How a recording ended.
#[derive(Debug)]
pub struct Outcome {
    /// The trace's final meta data.
    pub meta: Meta,
    /// The launched command's status (launch mode).
    pub child: Option<ExitStatus>,
    /// Events lost or cut, all causes together (0 for a complete recording).
    pub lost: u64,
}

/// Checks everything recording needs before anything is started, and reads
/// the tracepoint layout. Call it before [`HeldChild::spawn`].
pub fn preflight() -> Result<Config, RecordError> {
    sys::check_capabilities()?;
    sys::check_btf()?;
    crate::tracefs::load_config()
}

struct EpollFd(Epoll);
impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

/// Interval at which the rings are drained even without a wakeup.
/// Invariant: well below `order::HOLD_NS`, so the orderer's hold covers it.
const DRAIN_INTERVAL: Duration = Duration::from_millis(5);

/// The orderer's queue for events the supervisor makes (after the rings).
const SUPERVISOR_SOURCE: usize = recorder_common::DATA_RINGS as usize + 1;

/// After the launched command is reaped, how long to wait for exit events of
/// threads the recorder still believes alive before finalising anyway.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Records `target` into `opts.out`.
pub async fn record(
    config: Config,
    target: Target,
    opts: RecordOptions,
) -> Result<Outcome, RecordError> {
    let (root, argv, mode) = match &target {
        Target::Launch { child, argv } => (child.pid, argv.clone(), "launch"),
        Target::Attach { pid } => (*pid, sys::cmdline(*pid), "attach"),
    };
    let result = record_inner(config, target, &opts, root).await;
    if result.is_err() && mode == "launch" {
        // Never leave a held child waiting at its gate.
        sys::kill(root, libc::SIGKILL);
        let _ = sys::try_wait(root);
    }
    let _ = argv;
    result
}

async fn record_inner(
    config: Config,
    mut target: Target,
    opts: &RecordOptions,
    root: u32,
) -> Result<Outcome, RecordError> {
    let launch = matches!(target, Target::Launch { .. });
    if let Target::Attach { pid } = target {
        if !sys::process_exists(pid) || pid == std::process::id() {
            return Err(RecordError::NoSuchProcess { pid });
        }
    }
    // Before the slow part of starting (loading, attaching, the first
    // checkpoint): a Ctrl-C then stops the recording as soon as its loop
    // runs.
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| RecordError::Io {
        what: "installing a SIGINT handler",
        source,
    })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| RecordError::Io {
        what: "installing a SIGTERM handler",
        source,
    })?;
    // Blocked since `record` started (a signal sent meanwhile is pending):
    // the handlers take them now.
    sys::block_stop_signals(false);
    let mut config = config;
    if opts.checkpoints.is_some() {
        // A supervisor will be there to stop and resume throttled threads.
        config.throttle_signal = crate::probe::THROTTLE_SIGNAL as u32;
    }
    let mut probe = Probe::load(config, opts.rings)?;
    let mut meta = initial_meta(&target, root);
    meta.sync_probes = match &opts.checkpoints {
        Some(c) if c.sync_order => probe.sync_probes(),
        Some(_) => "off (--no-sync-order)".into(),
        None => "off (--no-checkpoints)".into(),
    };
    let mut writer = TraceWriter::create(&opts.out, meta.clone(), opts.writer.clone())?;
    // This thread (the drain) and those started from here on (the ptrace
    // supervisor) get a CPU ahead of the target and of the compressor,
    // started above at the default priority: threads stopped on a full ring
    // wait for the drain.
    sys::raise_priority();
    let mut state = State::new(root, launch);
    let supervisor = opts.checkpoints.as_ref().map(|c| {
        let sync_hooks = c.sync_order.then(|| probe.sync_hooks());
        Supervisor::start(
            SupervisorOptions {
                trace_dir: opts.out.clone(),
                epoch: Some(c.epoch),
                launch_root: launch.then_some(root),
                track_writes: c.track_writes,
                cut_at_syscall: c.cut_at_syscall,
            },
            probe.filter(),
            sync_hooks,
        )
    });
    if opts.checkpoints.is_some() {
        state.copier = FileCopier::start(&opts.out);
    }
    let seize = |threads: Vec<(u32, u32)>| -> Result<(), RecordError> {
        match &supervisor {
            Some(s) => s
                .seize(threads)
                .map_err(|reason| RecordError::Supervise { reason }),
            None => Ok(()),
        }
    };

    match &mut target {
        Target::Launch { child, .. } => {
            probe.add_target(child.pid, child.pid)?;
            state.live.insert(child.pid);
            state.tids.insert(child.pid);
            seize(vec![(child.pid, child.pid)])?;
            child.release().map_err(|source| RecordError::Io {
                what: "starting the command",
                source,
            })?;
        }
        Target::Attach { pid } => {
            // Threads forked while we enumerate are caught by the in-kernel
            // fork hook once their parent is in the filter; rescan until no
            // new thread shows up.
            for _ in 0..10 {
                let tree = sys::process_tree(*pid);
                let new: Vec<_> = tree
                    .into_iter()
                    .filter(|(t, _)| !state.tids.contains(t))
                    .collect();
                if new.is_empty() {
                    break;
                }
                for (tid, tgid) in new {
                    probe.add_target(tid, tgid)?;
                    state.assembler.know_thread(tid, tgid);
                    state.live.insert(tid);
                    state.tids.insert(tid);
                    state.pids.insert(tgid);
                }
            }
            if state.live.is_empty() {
                return Err(RecordError::NoSuchProcess { pid: *pid });
            }
            let threads: Vec<(u32, u32)> = state
                .live
                .iter()
                .map(|&t| (t, state.assembler.tgid(t).unwrap_or(t)))
                .collect();
            seize(threads)?;
        }
    }

    let mut rings = probe.take_rings()?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
        .map_err(|e| io_err("creating an epoll instance", e))?;
    for (i, ring) in rings.iter().enumerate() {
        epoll
            .add(ring.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .map_err(|e| io_err("watching a ring buffer", e))?;
    }
    // SAFETY: EpollFd owns the epoll descriptor, which stays open for as
    // long as the AsyncFd that holds it.
    let epoll = unsafe { AsyncFd::register(EpollFd(epoll)) }.map_err(|e| RecordError::Io {
        what: "registering with tokio",
        source: e.into(),
    })?;
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let mut status = StatusLine::new(opts.status_line);
    let mut child_status = None;
    let mut reaped_at: Option<Instant> = None;
    let mut interrupted_at: Option<Instant> = None;
    let mut last_liveness = Instant::now();
    let end_reason;
    loop {
        let mut stop_signal = None;
        tokio::select! {
            r = epoll.readable() => {
                if let Ok(mut guard) = r {
                    let mut evs = [EpollEvent::empty(); 16];
                    let _ = guard.get_inner().0.wait(&mut evs, EpollTimeout::ZERO);
                    guard.clear_ready();
                }
            }
            _ = tick.tick() => {}
            _ = sigint.recv() => stop_signal = Some("SIGINT"),
            _ = sigterm.recv() => stop_signal = Some("SIGTERM"),
        }
        if let Some(sup) = &supervisor {
            while let Some(r) = sup.try_report() {
                if let Some(s) = state.report(r) {
                    child_status = Some(s);
                    reaped_at = Some(Instant::now());
                }
            }
            if state.want_checkpoint(opts.checkpoints.as_ref()) {
                sup.request_checkpoint();
            }
        }
        drain(&mut rings, &mut state, &mut writer, sys::monotonic_ns())?;
        // Threads that stopped themselves on a full ring may go on now
        // (see `Config::throttle_signal`).
        if probe.throttle_requested() {
            probe.clear_throttle();
            if let Some(sup) = &supervisor {
                sup.drained();
            }
        }
        let fetched = state.assembler.take_fetched();
        for tid in std::mem::take(&mut state.mapped_shared)
            .into_iter()
            .chain(fetched)
        {
            if let Some(sup) = &supervisor {
                sup.copied(tid);
            }
        }
        state.drop_old_epochs(&mut writer, opts.checkpoints.as_ref())?;
        writer.tick()?;
        status.update(&writer, &probe);

        if let Some(sig) = stop_signal {
            if !launch || interrupted_at.is_some() {
                end_reason = format!("stopped by {sig}");
                break;
            }
            // The terminal sent it to the command too: give the tree a
            // moment to exit by itself.
            interrupted_at = Some(Instant::now());
        }
        if launch && child_status.is_none() && supervisor.is_none() {
            if let Some(s) = sys::try_wait(root).map_err(|source| RecordError::Io {
                what: "waiting for the command",
                source,
            })? {
                child_status = Some(s);
                reaped_at = Some(Instant::now());
            }
        }
        if last_liveness.elapsed() > Duration::from_secs(1) {
            // Exit events can be lost (ring full), or never come (an
            // attached target that exited while the recorder started, a
            // zombie its parent has not reaped): trust /proc as a backstop.
            last_liveness = Instant::now();
            let gone: Vec<u32> = state
                .live
                .iter()
                .copied()
                .filter(|t| !sys::thread_alive(*t))
                .collect();
            if gone.len() == state.live.len() && reaped_at.is_none() {
                reaped_at = Some(Instant::now());
            }
        }
        if state.live.is_empty() && (!launch || child_status.is_some()) {
            end_reason = "the target exited".to_string();
            break;
        }
        // The command is reaped and no thread of the tree is left in /proc:
        // every event it made is in the rings (a thread's records are
        // committed before its /proc entry goes), so the final drain can
        // release them without waiting out the orderer's hold.
        if launch && child_status.is_some() && state.live.iter().all(|t| !sys::process_exists(*t)) {
            end_reason = "the target exited".to_string();
            break;
        }
        if reaped_at.is_some_and(|t| t.elapsed() > EXIT_GRACE) {
            end_reason = if state.live.iter().any(|t| sys::thread_alive(*t)) {
                "the command exited; stopped waiting for its remaining descendants".to_string()
            } else {
                "the target exited".to_string()
            };
            break;
        }
        if interrupted_at.is_some_and(|t| t.elapsed() > EXIT_GRACE) {
            end_reason = "stopped by SIGINT".to_string();
            break;
        }
    }

    // Nothing new enters the rings, then detach, then take what is there.
    // In that order: detaching interrupts threads blocked in syscalls (the
    // kernel restarts them), which the log must not show as a last event
    // that replay would take for a signal's doing.
    probe.clear_targets();
    if let Some(sup) = supervisor {
        for r in sup.stop() {
            if let Some(s) = state.report(r) {
                child_status.get_or_insert(s);
            }
        }
    }
    drain(&mut rings, &mut state, &mut writer, u64::MAX)?;
    state.drop_old_epochs(&mut writer, opts.checkpoints.as_ref())?;
    if launch && child_status.is_none() {
        child_status = sys::try_wait(root).ok().flatten();
    }
    status.clear();
    let outcome = finalise(writer, meta, state, &probe, child_status, end_reason);
    probe.detach_in_background();
    outcome
}

fn io_err(what: &'static str, e: nix::Error) -> RecordError {
    RecordError::Io {
        what,
        source: e.into(),
    }
}

fn initial_meta(target: &Target, root: u32) -> Meta {
    let (mode, command, env, cwd) = match target {
        Target::Launch { argv, .. } => (
            "launch",
            argv.clone(),
            std::env::vars().map(|(k, v)| format!("{k}={v}")).collect(),
            std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        Target::Attach { pid } => (
            "attach",
            sys::cmdline(*pid),
            sys::environ(*pid),
            sys::cwd(*pid),
        ),
    };
    Meta {
        uniplay_version: env!("CARGO_PKG_VERSION").to_string(),
        host: sys::host(),
        mode: mode.to_string(),
        command,
        env,
        cwd,
        root_pid: root,
        start_unix_ns: sys::realtime_ns(),
        start_mono_ns: sys::monotonic_ns(),
        ..Meta::default()
    }
}

/// Bookkeeping over released events.
struct State {
    assembler: Assembler,
    orderer: Orderer,
    batch: Vec<Event>,
    root: u32,
    /// Launch mode: events of the root before its exec are the launcher's.
    root_started: bool,
    live: HashSet<u32>,
    tids: BTreeSet<u32>,
    pids: BTreeSet<u32>,
    exit_code: HashMap<u32, i32>,
    fatal_signal: HashMap<u32, u32>,
    root_exit: Option<(i32, u32)>,
    /// Epoch cuts reported by the supervisor, not yet in the stream.
    cuts: VecDeque<(u32, u64)>,
    epoch: u32,
    /// Events written since the last cut (for `--epoch-events`).
    since_cut: u64,
    /// Checkpoints stored, by epoch.
    checkpoints: Vec<tracelog::CheckpointInfo>,
    checkpoint_requested: bool,
    dropped_before: u32,
    warnings: Vec<String>,
    /// Open files by (pid, fd), from recorded opens: what an mmap maps.
    fd_paths: HashMap<(u32, u64), String>,
    /// Working directories by pid, followed through fork, chdir and fchdir
    /// (a short-lived process's /proc entry is gone by the time its opens
    /// are drained).
    cwds: HashMap<u32, String>,
    /// Copies files the target maps into the trace, off the drain loop.
    copier: Option<FileCopier>,
    /// Threads held at a shared file mapping whose file is now copied, for
    /// the supervisor to release.
    mapped_shared: Vec<u32>,
}

impl State {
    fn new(root: u32, launch: bool) -> State {
        State {
            assembler: Assembler::new(),
            orderer: Orderer::default(),
            batch: Vec::new(),
            root,
            root_started: !launch,
            live: HashSet::new(),
            tids: BTreeSet::new(),
            pids: BTreeSet::from([root]),
            exit_code: HashMap::new(),
            fatal_signal: HashMap::new(),
            root_exit: None,
            cuts: VecDeque::new(),
            epoch: 0,
            since_cut: 0,
            checkpoints: Vec::new(),
            checkpoint_requested: false,
            dropped_before: 0,
            warnings: Vec::new(),
            fd_paths: HashMap::new(),
            cwds: launch
                .then(|| std::env::current_dir().ok())
                .flatten()
                .map(|d| (root, d.display().to_string()))
                .into_iter()
                .collect(),
            copier: None,
            mapped_shared: Vec::new(),
        }
    }

    /// Notes opened files, and has every file the target maps copied into
    /// the trace (replay maps the copy).
    fn track_files(&mut self, pid: u32, s: &tracelog::Syscall) {
        const MAP_ANONYMOUS: u64 = 0x20;
        let a = s.args.as_slice();
        match s.nr {
            2 | 257 | 437 if s.ret >= 0 => {
                let Some(o) = s
                    .outputs
                    .iter()
                    .find(|o| o.arg >= recorder_common::SLOT_INPUT)
                else {
                    return;
                };
                let raw = o.data.strip_suffix(&[0]).unwrap_or(&o.data);
                let path = String::from_utf8_lossy(raw).into_owned();
                // Relative to the descriptor openat names, or to the
                // working directory (read now: a chdir since is rare).
                const AT_FDCWD: i32 = -100;
                let dir = match (s.nr, a.first().map(|&d| d as i32)) {
                    (257 | 437, Some(d)) if d != AT_FDCWD => {
                        self.fd_paths.get(&(pid, d as u64)).cloned()
                    }
                    _ => None,
                };
                let dir = dir.unwrap_or_else(|| self.cwd_of(pid));
                self.fd_paths
                    .insert((pid, s.ret as u64), tracelog::resolve_path(&dir, &path));
            }
            80 if s.ret == 0 => {
                if let Some(o) = s
                    .outputs
                    .iter()
                    .find(|o| o.arg >= recorder_common::SLOT_INPUT)
                {
                    let raw = o.data.strip_suffix(&[0]).unwrap_or(&o.data);
                    let cwd =
                        tracelog::resolve_path(&self.cwd_of(pid), &String::from_utf8_lossy(raw));
                    self.cwds.insert(pid, cwd);
                }
            }
            81 if s.ret == 0 && !a.is_empty() => {
                if let Some(d) = self.fd_paths.get(&(pid, a[0])).cloned() {
                    self.cwds.insert(pid, d);
                }
            }
            3 if !a.is_empty() => {
                self.fd_paths.remove(&(pid, a[0]));
            }
            9 if s.ret >= 0 && a.len() >= 5 && a[3] & MAP_ANONYMOUS == 0 && (a[4] as i64) >= 0 => {
                if let (Some(path), Some(c)) = (self.fd_paths.get(&(pid, a[4])), &mut self.copier) {
                    c.copy_once(path);
                }
            }
            _ => {}
        }
    }

    /// A file mapping, as soon as its event leaves the ring (before the
    /// orderer's hold, so possibly before the open that named its file):
    /// while the mapping exists, /proc/PID/map_files names its file and
    /// reads it even if it was unlinked since (a POSIX semaphore in
    /// /dev/shm), which the in-order copy by path (`track_files`) cannot.
    fn copy_mapped_early(&mut self, e: &Event) {
        const MAP_ANONYMOUS: u64 = 0x20;
        let EventKind::Syscall(s) = &e.kind else {
            return;
        };
        let a = s.args.as_slice();
        if s.nr != 9 || s.ret < 0 || a.len() < 5 || a[3] & MAP_ANONYMOUS != 0 {
            return;
        }
        // The thread is held at the mmap until this drain is over (see the
        // eBPF side's `held_mapping`): copy the file before then, while it
        // still holds what was mapped, and let it go.
        let held = recorder_common::holds_at_mmap(a[3]);
        if held {
            self.mapped_shared.push(e.tid);
        }
        let Some(c) = &mut self.copier else {
            return;
        };
        let start = s.ret as u64;
        let end = start + a[1].div_ceil(4096) * 4096;
        // Opened now, and named by what was opened: by the time the copier
        // reads it, the process may have unmapped it and mapped another
        // file at the same address (git reads loose objects so, one after
        // another), which the map_files name would then read.
        let Ok(file) = std::fs::File::open(sys::map_file(e.pid, start, end)) else {
            return;
        };
        if let Ok(target) = std::fs::read_link(fd_path(&file)) {
            let target = target.display().to_string();
            let path = target.strip_suffix(" (deleted)").unwrap_or(&target);
            c.copy(path, Some(file), held, e.time_ns);
        }
    }

    /// Where process `pid` works: as followed, else read from /proc now.
    fn cwd_of(&mut self, pid: u32) -> String {
        self.cwds
            .entry(pid)
            .or_insert_with(|| {
                Some(sys::cwd(pid))
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "/".into())
            })
            .clone()
    }

    /// Takes a supervisor report; returns the launched command's status
    /// when that is what it says.
    fn report(&mut self, r: Report) -> Option<ExitStatus> {
        match r {
            Report::Cut { epoch, time_ns } => self.cuts.push_back((epoch, time_ns)),
            Report::Checkpoint(info) => self.checkpoints.push(info),
            Report::RootExited(s) => return Some(s),
            Report::Warning(w) => {
                eprintln!("\r\x1b[Kuniplay: warning: {w}");
                self.warnings.push(w);
            }
            // Logged as pseudo-syscalls, in time order with the rest.
            Report::Rdtsc {
                pid,
                tid,
                time_ns,
                value,
                aux,
            } => {
                let e = pseudo_event(
                    pid,
                    tid,
                    time_ns,
                    recorder_common::PSEUDO_RDTSC,
                    aux,
                    value as i64,
                    Vec::new(),
                );
                self.orderer.push(SUPERVISOR_SOURCE, e);
            }
            Report::Siginfo {
                pid,
                tid,
                time_ns,
                sig,
                info,
                regs,
            } => {
                let mut outputs = vec![tracelog::Output {
                    arg: 0,
                    addr: 0,
                    data: info.into(),
                    complete: true,
                }];
                // Where it was delivered (slot 1): replay delivers a signal
                // that interrupted user code at that very state.
                if !regs.is_empty() {
                    let bytes: Vec<u8> = regs.iter().flat_map(|w| w.to_le_bytes()).collect();
                    outputs.push(tracelog::Output {
                        arg: 1,
                        addr: 0,
                        data: bytes.into(),
                        complete: true,
                    });
                }
                let e = pseudo_event(
                    pid,
                    tid,
                    time_ns,
                    recorder_common::PSEUDO_SIGINFO,
                    sig as u64,
                    0,
                    outputs,
                );
                self.orderer.push(SUPERVISOR_SOURCE, e);
            }
        }
        None
    }

    fn want_checkpoint(&mut self, opts: Option<&CheckpointOptions>) -> bool {
        let due = opts
            .and_then(|o| o.epoch_events)
            .is_some_and(|n| self.since_cut >= n);
        if due && !self.checkpoint_requested {
            self.checkpoint_requested = true;
            return true;
        }
        false
    }

    /// Flight recorder: once an epoch's mark is written and its checkpoint
    /// stored, epochs older than the newest K go.
    fn drop_old_epochs(
        &mut self,
        writer: &mut TraceWriter,
        opts: Option<&CheckpointOptions>,
    ) -> Result<(), RecordError> {
        let Some(k) = opts.and_then(|o| o.keep_epochs) else {
            return Ok(());
        };
        let stored = self.checkpoints.iter().map(|c| c.epoch).max();
        let Some(newest) = stored.map(|s| s.min(self.epoch)) else {
            return Ok(());
        };
        let keep_from = (newest + 1).saturating_sub(k);
        if keep_from > self.dropped_before {
            writer.drop_epochs_before(keep_from)?;
            self.checkpoints.retain(|c| c.epoch >= keep_from);
            self.dropped_before = keep_from;
        }
        Ok(())
    }

    /// Puts the epoch marks due before `time_ns` into the stream.
    fn marks_before(&mut self, time_ns: u64, out: &mut Vec<Event>) {
        while let Some(&(epoch, t)) = self.cuts.front() {
            if t > time_ns {
                break;
            }
            self.cuts.pop_front();
            self.epoch = epoch;
            self.since_cut = 0;
            self.checkpoint_requested = false;
            out.push(Event {
                seq: 0,
                epoch,
                time_ns: t,
                cpu: 0,
                pid: self.root,
                tid: self.root,
                kind: EventKind::EpochMark { epoch },
            });
        }
    }

    /// Book-keeps one event in time order; false if it is to be dropped.
    fn admit(&mut self, e: &mut Event) -> bool {
        if !self.root_started && e.pid == self.root {
            if matches!(e.kind, EventKind::Exec { .. }) {
                self.root_started = true;
            } else {
                return false;
            }
        }
        match &mut e.kind {
            EventKind::Fork {
                child_pid,
                child_tid,
                ..
            } => {
                self.live.insert(*child_tid);
                self.tids.insert(*child_tid);
                self.pids.insert(*child_pid);
                if *child_pid != e.pid {
                    let cwd = self.cwd_of(e.pid);
                    self.cwds.insert(*child_pid, cwd);
                }
            }
            EventKind::Syscall(s)
                if self.copier.is_some() && matches!(s.nr, 2 | 3 | 9 | 80 | 81 | 257 | 437) =>
            {
                let s = s.clone();
                self.track_files(e.pid, &s);
            }
            EventKind::Syscall(s)
                if s.nr == nr::EXIT_GROUP || (s.nr == nr::EXIT && e.pid == e.tid) =>
            {
                let code = s.args.as_slice().first().copied().unwrap_or(0) as i32;
                self.exit_code.insert(e.pid, code & 0xff);
            }
            EventKind::Signal {
                sig,
                phase: SignalPhase::Delivered,
                result: 0,
                ..
            } if is_fatal_by_default(*sig) => {
                // Only the default action kills (result 1: a handler ran).
                self.fatal_signal.insert(e.pid, *sig);
            }
            EventKind::Exit {
                code,
                signal,
                group_dead,
            } => {
                self.live.remove(&e.tid);
                self.tids.insert(e.tid);
                if let Some(sig) = self.fatal_signal.get(&e.pid) {
                    *signal = *sig;
                } else {
                    *code = self.exit_code.get(&e.pid).copied().unwrap_or(0);
                }
                if *group_dead && e.pid == self.root {
                    self.root_exit = Some((*code, *signal));
                }
            }
            _ => {}
        }
        if !self.tids.contains(&e.tid) {
            self.tids.insert(e.tid);
        }
        true
    }
}

/// An event the supervisor made (see `recorder_common::PSEUDO_*`).
fn pseudo_event(
    pid: u32,
    tid: u32,
    time_ns: u64,
    nr: u32,
    arg: u64,
    ret: i64,
    outputs: Vec<tracelog::Output>,
) -> Event {
    Event {
        seq: 0,
        epoch: 0,
        time_ns,
        cpu: 0,
        pid,
        tid,
        kind: EventKind::Syscall(tracelog::Syscall {
            nr,
            args: tracelog::Args::new(&[arg]),
            ret,
            enter_ns: time_ns,
            flags: 0,
            outputs,
        }),
    }
}

fn is_fatal_by_default(sig: u32) -> bool {
    // Signals whose default action terminates (or dumps core).
    matches!(sig, 1..=15 | 24..=27 | 29..=31) && sig != 17
}

/// Drains every ring (lifecycle first), orders, and writes what is ready.
fn drain(
    rings: &mut [RingBuf<MapData>],
    st: &mut State,
    writer: &mut TraceWriter,
    now: u64,
) -> Result<(), RecordError> {
    // rings[0] is the lifecycle ring (`Probe::take_rings`).
    let Some((life, data)) = rings.split_first_mut() else {
        return Ok(());
    };
    drain_ring(life, 0, st);
    for (j, ring) in data.iter_mut().enumerate() {
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(rec) => {
                    if matches!(&rec, Record::Syscall(s)
                        if (s.nr == nr::EXECVE || s.nr == nr::EXECVEAT) && s.ret == 0)
                    {
                        // The exec's path went to the lifecycle ring before
                        // this record was written (same thread, earlier
                        // tracepoint): take it first, or the exec would be
                        // named by its argv[0].
                        let batch = std::mem::take(&mut st.batch);
                        drain_ring(life, 0, st);
                        st.batch = batch;
                    }
                    st.assembler.feed(rec, &mut st.batch)
                }
                Err(_) => st.assembler.malformed += 1,
            }
        }
        for e in std::mem::take(&mut st.batch) {
            st.copy_mapped_early(&e);
            st.orderer.push(j + 1, e);
        }
    }
    let mut orderer = std::mem::take(&mut st.orderer);
    let mut result = Ok(());
    let mut marks = Vec::new();
    orderer.release(now, |mut e| {
        st.marks_before(e.time_ns, &mut marks);
        for m in marks.drain(..) {
            if result.is_ok() {
                result = writer.push(m);
            }
        }
        if st.admit(&mut e) {
            e.epoch = st.epoch;
            st.since_cut += 1;
            if result.is_ok() {
                result = writer.push(e);
            }
        }
    });
    st.orderer = orderer;
    if now == u64::MAX {
        st.marks_before(u64::MAX, &mut marks);
        for m in marks.drain(..) {
            if result.is_ok() {
                result = writer.push(m);
            }
        }
    }
    result.map_err(RecordError::from)
}

/// Feeds what `ring` holds to the assembler, then its events to the
/// orderer as `source`.
fn drain_ring(ring: &mut RingBuf<MapData>, source: usize, st: &mut State) {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(rec) => st.assembler.feed(rec, &mut st.batch),
            Err(_) => st.assembler.malformed += 1,
        }
    }
    for e in std::mem::take(&mut st.batch) {
        st.copy_mapped_early(&e);
        st.orderer.push(source, e);
    }
}

fn finalise(
    writer: TraceWriter,
    mut meta: Meta,
    st: State,
    probe: &Probe,
    child: Option<ExitStatus>,
    end_reason: String,
) -> Result<Outcome, RecordError> {
    let per_cpu: Vec<tracelog::CpuLoss> = probe
        .losses()
        .into_iter()
        .map(|l| tracelog::CpuLoss {
            cpu: l.cpu,
            ring_full: l.ring_full,
            incomplete_copies: l.incomplete_copies,
        })
        .collect();
    meta.losses = tracelog::Losses {
        ring_full: per_cpu.iter().map(|l| l.ring_full).sum::<u64>() + st.assembler.malformed,
        incomplete_copies: per_cpu.iter().map(|l| l.incomplete_copies).sum(),
        per_cpu,
    };
    if let Some(c) = st.copier {
        (meta.files, meta.file_versions) = c.finish();
    }
    meta.pids = st.pids.into_iter().collect();
    meta.tids = st.tids.into_iter().collect();
    meta.end_unix_ns = sys::realtime_ns();
    meta.end_mono_ns = sys::monotonic_ns();
    meta.exit = match child {
        Some(ExitStatus::Code(code)) => Some(tracelog::ExitInfo { code, signal: 0 }),
        Some(ExitStatus::Signal(sig)) => Some(tracelog::ExitInfo {
            code: 0,
            signal: sig as u32,
        }),
        None => st
            .root_exit
            .map(|(code, signal)| tracelog::ExitInfo { code, signal }),
    };
    let died = match (&child, st.root_exit) {
        (Some(ExitStatus::Signal(sig)), _) => Some(*sig as u32),
        (None, Some((_, sig))) if sig != 0 => Some(sig),
        _ => None,
    };
    meta.end_reason = match died {
        Some(sig) => format!("the target died of {}", sys::signal_name(sig)),
        None => end_reason,
    };
    let lost = meta.losses.ring_full + meta.losses.incomplete_copies;
    meta.state = if lost == 0 {
        TraceState::Complete
    } else {
        TraceState::Incomplete {
            reason: format!(
                "{} events lost to full ring buffers, {} outputs not copied in full",
                meta.losses.ring_full, meta.losses.incomplete_copies
            ),
        }
    };
    if st.orderer.late > 0 {
        meta.end_reason.push_str(&format!(
            "; {} events were written slightly out of time order",
            st.orderer.late
        ));
    }
    let meta = writer.finish(meta)?;
    Ok(Outcome { meta, child, lost })
}

/// A name of an open file that reaches that very file (its inode), not
/// whatever its path names now.
fn fd_path(file: &std::fs::File) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", file.as_raw_fd())
}

/// A file for `FileCopier` to copy.
struct CopyRequest {
    path: String,
    /// The mapped file itself, opened through /proc/PID/map_files while
    /// the mapping existed, read first: `path` may name another file by
    /// then (one renamed over it, as git rewrites its config).
    mapping: Option<std::fs::File>,
    /// Monotonic time of the mapping it is for.
    time_ns: u64,
    /// Told when the copy is made (or failed), if someone waits for it.
    done: Option<std::sync::mpsc::Sender<()>>,
}

/// Which file a path named when it was copied: a mapping of the same path
/// that finds another one (rewritten, or replaced by a rename) gets a copy
/// of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(path: &str) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

type Copies = (
    std::collections::BTreeMap<String, String>,
    Vec<tracelog::FileVersion>,
);

/// Copies the files the target maps into the trace's `files/`, on its own
/// thread so a large library never holds up the drain loop.
struct FileCopier {
    paths: std::sync::mpsc::Sender<CopyRequest>,
    thread: std::thread::JoinHandle<Vec<tracelog::FileVersion>>,
    /// Path → the file last copied for it (`None`: could not tell).
    seen: HashMap<String, Option<FileId>>,
}

impl FileCopier {
    fn start(dir: &std::path::Path) -> Option<FileCopier> {
        let writer = tracelog::CheckpointWriter::new(dir).ok()?;
        let (paths, rx) = std::sync::mpsc::channel::<CopyRequest>();
        let thread = std::thread::Builder::new()
            .name("uniplay-files".into())
            .spawn(move || {
                let mut copies = Vec::new();
                for CopyRequest {
                    path,
                    mapping,
                    time_ns,
                    done,
                } in rx
                {
                    let hash = mapping
                        .as_ref()
                        .map(fd_path)
                        .iter()
                        .chain(std::iter::once(&path))
                        .find_map(|p| writer.add_file(std::path::Path::new(p)).ok());
                    if let Some(hash) = hash {
                        copies.push(tracelog::FileVersion {
                            path,
                            time_ns,
                            hash,
                        });
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                copies
            })
            .ok()?;
        Some(FileCopier {
            paths,
            thread,
            seen: HashMap::new(),
        })
    }

    /// Copies the file `path` names (read through `mapping` if given) for a
    /// mapping made at `time_ns`, unless the last copy of `path` was of
    /// the same file; with `wait`, returns only when the copy is made.
    fn copy(&mut self, path: &str, mapping: Option<std::fs::File>, wait: bool, time_ns: u64) {
        let id = FileId::of(&mapping.as_ref().map_or_else(|| path.to_string(), fd_path));
        match self.seen.get(path) {
            Some(&last) if last == id || id.is_none() => return,
            _ => {}
        }
        self.seen.insert(path.to_string(), id);
        let (tx, rx) = std::sync::mpsc::channel();
        let request = CopyRequest {
            path: path.to_string(),
            mapping,
            time_ns,
            done: wait.then_some(tx),
        };
        if self.paths.send(request).is_ok() && wait {
            let _ = rx.recv();
        }
    }

    /// Copies `path` if nothing was copied for it yet (a mapping the early
    /// copy missed).
    fn copy_once(&mut self, path: &str) {
        if !self.seen.contains_key(path) {
            self.copy(path, None, false, 0);
        }
    }

    /// The first copy of every path, and every copy of the paths copied
    /// more than once.
    fn finish(self) -> Copies {
        drop(self.paths);
        let copies = self.thread.join().unwrap_or_default();
        let mut first = std::collections::BTreeMap::new();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for c in &copies {
            first
                .entry(c.path.clone())
                .or_insert_with(|| c.hash.clone());
            *count.entry(&c.path).or_default() += 1;
        }
        let mut versions: Vec<tracelog::FileVersion> = copies
            .iter()
            .filter(|c| count[c.path.as_str()] > 1)
            .cloned()
            .collect();
        versions.sort_by_key(|v| v.time_ns);
        (first, versions)
    }
}

/// The live status line on stderr.
struct StatusLine {
    enabled: bool,
    last: Instant,
    last_events: u64,
    shown: bool,
}

impl StatusLine {
    fn new(enabled: bool) -> Self {
        StatusLine {
            enabled,
            last: Instant::now(),
            last_events: 0,
            shown: false,
        }
    }

    fn update(&mut self, writer: &TraceWriter, probe: &Probe) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(500) {
            return;
        }
        let stats = writer.stats();
        let secs = self.last.elapsed().as_secs_f64();
        let rate = (stats.events - self.last_events) as f64 / secs;
        let lost: u64 = probe
            .losses()
            .iter()
            .map(|l| l.ring_full + l.incomplete_copies)
            .sum();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K[uniplay] {} events  {:.0} events/s  {:.1} MB written  {} lost",
            stats.events,
            rate,
            stats.bytes_written as f64 / 1e6,
            lost
        );
        let _ = err.flush();
        self.shown = true;
        self.last = Instant::now();
        self.last_events = stats.events;
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
