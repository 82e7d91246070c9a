//! The loaded eBPF recorder: programs attached, the syscall table and the
//! tracepoint offsets written into its maps, the target filter and the rings
//! handed to the daemon.

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint, UProbe},
    Ebpf, EbpfLoader,
};
use recorder_common::{
    spec, Config, TidState, DATA_RINGS, LOSS_INCOMPLETE_COPY, LOSS_LIFECYCLE_FULL, LOSS_RING_FULL,
    TABLE_SIZE, THROTTLE_REQUESTED, TID_HELD_FOR_COPY, TID_PAUSED, TID_THROTTLED,
};

use crate::{sync_hook::SyncHooks, sys, tracefs::TRACEPOINTS, RecordError};

const DATA_RING_NAMES: [&str; DATA_RINGS as usize] = [
    "DATA0", "DATA1", "DATA2", "DATA3", "DATA4", "DATA5", "DATA6", "DATA7",
];

/// The smallest ring the kernel accepts: one page.
pub const MIN_RING_BYTES: u32 = 4096;

/// Ring sizes. Invariant: powers of two, at least one page (the kernel's
/// rule for BPF ring buffers).
#[derive(Debug, Clone, Copy)]
pub struct RingSizes {
    /// Each per-CPU data ring (syscalls, output bytes, context switches).
    pub data: u32,
    /// The shared lifecycle ring (fork, exec, exit, signals).
    pub lifecycle: u32,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            data: 16 << 20,
            lifecycle: 1 << 20,
        }
    }
}

/// Per-CPU loss counters, as read from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuLoss {
    pub cpu: u32,
    pub ring_full: u64,
    pub incomplete_copies: u64,
}

/// What a thread that stopped itself waits for (see `Filter::take_throttled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The daemon to drain the rings.
    ForDrain,
    /// The daemon to copy what it must copy while the thread is stopped.
    ForCopy,
}

/// The in-kernel target filter (`TIDS`: tid → tgid and flags, in a
/// `TidState` whose syscall fields only the eBPF side uses), shared by the session
/// and the supervisor.
pub struct Filter {
    tids: HashMap<MapData, u32, TidState>,
    /// `THROTTLE`: a data ring filled past a quarter, not drained yet.
    throttle: Array<MapData, u32>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").finish_non_exhaustive()
    }
}

impl Filter {
    /// Puts a thread into the filter.
    pub fn add(&mut self, tid: u32, tgid: u32) -> Result<(), RecordError> {
        self.tids
            .insert(tid, TidState::new(tgid), 0)
            .map_err(map_err("TIDS"))
    }

    /// Threads currently in the filter.
    pub fn tids(&self) -> Vec<u32> {
        self.tids.keys().filter_map(Result::ok).collect()
    }

    /// Stops (or resumes) recording a thread's events while the supervisor
    /// runs a syscall of its own in it. Unknown threads are left alone.
    pub fn pause(&mut self, tid: u32, paused: bool) {
        self.set_flag(tid, TID_PAUSED, paused);
    }

    /// A data ring filled past a quarter since the last `clear_throttle`.
    pub fn throttle_requested(&self) -> bool {
        self.throttle
            .get(&0, 0)
            .is_ok_and(|v| v == THROTTLE_REQUESTED)
    }

    /// The daemon drained the rings.
    pub fn clear_throttle(&mut self) {
        let _ = self.throttle.set(0, 0, 0);
    }

    /// Whether the thread sent itself the throttle signal (see
    /// `Config::throttle_signal`), and if so whether it waits for a copy
    /// (`TID_HELD_FOR_COPY`); clears both marks. Call with the thread
    /// stopped.
    pub fn take_throttled(&mut self, tid: u32) -> Option<Held> {
        let v = self.tids.get(&tid, 0).ok()?.value;
        if v & TID_THROTTLED == 0 {
            return None;
        }
        self.set_flag(tid, TID_THROTTLED | TID_HELD_FOR_COPY, false);
        Some(if v & TID_HELD_FOR_COPY != 0 {
            Held::ForCopy
        } else {
            Held::ForDrain
        })
    }

    /// Read-modify-write of a thread's value: only its own thread's
    /// programs and the fork of a new tid write `TIDS`, and the callers
    /// hold the thread stopped or about to be.
    fn set_flag(&mut self, tid: u32, flag: u32, on: bool) {
        if let Ok(mut v) = self.tids.get(&tid, 0) {
            v.value = if on { v.value | flag } else { v.value & !flag };
            let _ = self.tids.insert(tid, v, 0);
        }
    }

    /// Empties the filter: recording stops at once for every thread.
    pub fn clear(&mut self) {
        for tid in self.tids() {
            let _ = self.tids.remove(&tid);
        }
    }
}

/// The signal a thread whose output fills its ring sends itself (see
/// `Config::throttle_signal`): ignored by default, so should the recorder
/// die before suppressing one, the program most likely ignores it too.
pub const THROTTLE_SIGNAL: i32 = libc::SIGURG;

/// The shared filter handle.
pub type SharedFilter = std::sync::Arc<std::sync::Mutex<Filter>>;

pub struct Probe {
    /// Shared with the supervisor's [`SyncHooks`], which attaches the sync
    /// probe per process.
    ebpf: std::sync::Arc<std::sync::Mutex<Ebpf>>,
    /// Why the sync probe program could not be loaded, if it could not.
    sync_unavailable: Option<String>,
    /// The sync probe program loaded for multi-uprobe links (one link per
    /// process; `Err`: why not, one perf-event uprobe per function then;
    /// see `sync_hook::load_multi`).
    sync_multi: Result<std::os::fd::OwnedFd, String>,
    filter: SharedFilter,
    loss: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> RecordError {
    move |source| RecordError::Map { map, source }
}

fn missing_map(map: &'static str) -> RecordError {
    RecordError::Map {
        map,
        source: aya::maps::MapError::InvalidName {
            name: map.to_string(),
        },
    }
}

impl Probe {
    /// Loads the programs and attaches them. Nothing is recorded until a
    /// target is added to the filter.
    pub fn load(config: Config, rings: RingSizes) -> Result<Probe, RecordError> {
        sys::raise_memlock();
        let ncpus = sys::nr_cpus();
        let mut loader = EbpfLoader::new();
        for (i, name) in DATA_RING_NAMES.iter().enumerate() {
            loader.map_max_entries(
                name,
                if i < ncpus {
                    rings.data
                } else {
                    MIN_RING_BYTES
                },
            );
        }
        loader.map_max_entries("LIFE", rings.lifecycle);
        let object: &[u8] =
            aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/recorder.bpf.o"));
        let mut ebpf = loader
            .load(object)
            .map_err(|source| RecordError::Load { source })?;

        let mut specs: Array<_, recorder_common::SyscallSpec> =
            Array::try_from(ebpf.map_mut("SPECS").ok_or_else(|| missing_map("SPECS"))?)
                .map_err(map_err("SPECS"))?;
        for nr in 0..TABLE_SIZE {
            specs.set(nr, spec(nr), 0).map_err(map_err("SPECS"))?;
        }
        let mut cfg: Array<_, Config> = Array::try_from(
            ebpf.map_mut("CONFIG")
                .ok_or_else(|| missing_map("CONFIG"))?,
        )
        .map_err(map_err("CONFIG"))?;
        cfg.set(0, config, 0).map_err(map_err("CONFIG"))?;

        for (program, tp) in [("sys_enter", "sys_enter"), ("sys_exit", "sys_exit")] {
            let err = |source| RecordError::Program { program, source };
            let p: &mut RawTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| err(aya::programs::ProgramError::UnexpectedProgramType))?
                .try_into()
                .map_err(err)?;
            p.load().map_err(err)?;
            p.attach(tp).map_err(err)?;
        }
        for (category, name) in TRACEPOINTS {
            let err = |source| RecordError::Program {
                program: name,
                source,
            };
            let p: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| err(aya::programs::ProgramError::UnexpectedProgramType))?
                .try_into()
                .map_err(err)?;
            p.load().map_err(err)?;
            p.attach(category, name).map_err(err)?;
        }
        let tids = HashMap::try_from(ebpf.take_map("TIDS").ok_or_else(|| missing_map("TIDS"))?)
            .map_err(map_err("TIDS"))?;
        let loss = PerCpuArray::try_from(ebpf.take_map("LOSS").ok_or_else(|| missing_map("LOSS"))?)
            .map_err(map_err("LOSS"))?;
        let throttle = Array::try_from(
            ebpf.take_map("THROTTLE")
                .ok_or_else(|| missing_map("THROTTLE"))?,
        )
        .map_err(map_err("THROTTLE"))?;
        // Loaded now (verified once), attached per multithreaded process.
        let sync_unavailable = ebpf
            .program_mut(crate::sync_hook::PROGRAM)
            .ok_or(aya::programs::ProgramError::UnexpectedProgramType)
            .and_then(<&mut UProbe>::try_from)
            .and_then(|p| p.load())
            .err()
            .map(|e| e.to_string());
        let sync_multi = match sync_unavailable {
            // For tests of the other way on kernels that have both.
            None if std::env::var_os("UNIPLAY_NO_MULTI_UPROBE").is_some() => {
                Err("UNIPLAY_NO_MULTI_UPROBE is set".into())
            }
            None => crate::sync_hook::load_multi(&ebpf, object),
            Some(_) => Err("the probe program did not load".into()),
        };
        let filter = std::sync::Arc::new(std::sync::Mutex::new(Filter { tids, throttle }));
        Ok(Probe {
            ebpf: std::sync::Arc::new(std::sync::Mutex::new(ebpf)),
            sync_unavailable,
            sync_multi,
            filter,
            loss,
        })
    }

    /// What attaches the sync probes to multithreaded processes, or why
    /// it cannot.
    /// How lock calls are probed, for the trace's meta (`sync_probes`).
    pub fn sync_probes(&self) -> String {
        match (&self.sync_unavailable, &self.sync_multi) {
            (Some(why), _) => format!("off (the probe program did not load: {why})"),
            (None, Ok(_)) => "multi-uprobe links".into(),
            (None, Err(why)) => format!("uprobes, one per function ({why})"),
        }
    }

    pub fn sync_hooks(&self) -> Result<SyncHooks, String> {
        match &self.sync_unavailable {
            Some(why) => Err(why.clone()),
            None => Ok(SyncHooks::new(
                self.ebpf.clone(),
                self.sync_multi
                    .as_ref()
                    .ok()
                    .and_then(|fd| fd.try_clone().ok()),
            )),
        }
    }

    /// The in-kernel target filter.
    pub fn filter(&self) -> SharedFilter {
        self.filter.clone()
    }

    /// Puts a thread into the in-kernel filter.
    pub fn add_target(&mut self, tid: u32, tgid: u32) -> Result<(), RecordError> {
        self.filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(tid, tgid)
    }

    /// Detaches the programs without making the user wait: each detach
    /// waits for RCU grace periods (tens of ms each here, about 0.3 s for
    /// all), so a child process inherits the descriptors and drops them
    /// after this process has exited; this process's own closes then only
    /// drop references. The filter is already empty: nothing more is
    /// recorded meanwhile.
    pub fn detach_in_background(self) {
        // The child waits for this process to be gone (end of file on a
        // pipe whose write end only we hold) before it closes, so that its
        // closes are the last references and do the slow part.
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), 0) } != 0 {
            drop(self);
            return;
        }
        // SAFETY: the child only makes raw syscalls (close, read,
        // close_range, _exit): no allocation, no lock, so forking a
        // multi-threaded process is fine.
        match unsafe { libc::fork() } {
            // SAFETY: as above.
            0 => unsafe {
                libc::close(fds[1]);
                // Let go of stdio now: a pipe reading uniplay's output must
                // end when uniplay does (the closes below are released
                // together, after the slow ones).
                for fd in 0..=2 {
                    if fd != fds[0] {
                        libc::close(fd);
                    }
                }
                let mut b = 0u8;
                while libc::read(fds[0], (&mut b as *mut u8).cast(), 1) < 0 {}
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                libc::_exit(0);
            },
            pid if pid > 0 => {
                // Our handles would detach one by one on drop: leak them;
                // the process exits soon and its closes are cheap. The
                // write end stays open until then.
                // SAFETY: closing our copy of the read end.
                unsafe { libc::close(fds[0]) };
                std::mem::forget(self);
            }
            _ => drop(self),
        }
    }

    /// Empties the filter: recording stops at once for every thread.
    pub fn clear_targets(&mut self) {
        self.filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear()
    }

    /// The data rings (one per CPU in use) and, first, the lifecycle ring.
    pub fn take_rings(&mut self) -> Result<Vec<RingBuf<MapData>>, RecordError> {
        let mut rings = Vec::new();
        let ncpus = sys::nr_cpus().min(DATA_RINGS as usize);
        for name in std::iter::once("LIFE").chain(DATA_RING_NAMES[..ncpus].iter().copied()) {
            let name: &'static str = name;
            let map = self
                .ebpf
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_map(name)
                .ok_or_else(|| missing_map(name))?;
            rings.push(RingBuf::try_from(map).map_err(map_err(name))?);
        }
        Ok(rings)
    }

    /// A data ring filled past a quarter since the last `clear_throttle`.
    pub fn throttle_requested(&self) -> bool {
        self.filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .throttle_requested()
    }

    pub fn clear_throttle(&mut self) {
        self.filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear_throttle();
    }

    /// Loss counters per CPU.
    pub fn losses(&self) -> Vec<CpuLoss> {
        let read = |i: u32| {
            self.loss
                .get(&i, 0)
                .map(|v| v.iter().copied().collect::<Vec<u64>>())
                .unwrap_or_default()
        };
        let full = read(LOSS_RING_FULL);
        let life = read(LOSS_LIFECYCLE_FULL);
        let copies = read(LOSS_INCOMPLETE_COPY);
        (0..full.len().max(copies.len()))
            .map(|cpu| CpuLoss {
                cpu: cpu as u32,
                ring_full: full.get(cpu).copied().unwrap_or(0)
                    + life.get(cpu).copied().unwrap_or(0),
                incomplete_copies: copies.get(cpu).copied().unwrap_or(0),
            })
            .collect()
    }
}
