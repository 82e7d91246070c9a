//! `tracelog` is uniplay's trace format: the on-disk layout of a *trace
//! directory*, a [`TraceWriter`] that the recorder feeds events into, and a
//! [`Trace`] reader that replay and inspection tools iterate.
//!
//! It knows nothing about how events are recorded (eBPF) or replayed; it only
//! stores them compactly, durably and verifiably. The byte layout is specified
//! in `docs/FORMAT.md` at the workspace root and versioned by
//! [`FORMAT_VERSION`].
//!
//! Design points:
//! - Events are batched into self-delimiting, checksummed, zstd-compressed
//!   frames in `events.tlf`, so a torn tail (killed recorder, full disk) loses
//!   at most the unflushed frames and everything before stays readable.
//! - Inside a frame, events are stored column-wise (tags, times, ids, syscall
//!   numbers, ...) as varints and deltas, which is what makes syscall-heavy
//!   traces cost a few bytes per event after compression.
//! - Compression and disk writes happen on a background thread, so
//!   [`TraceWriter::push`] is a `Vec::push` in the common case.
//! - The reader never trusts a length it has not checked and never panics on
//!   damaged input: it yields every intact event and then one error naming the
//!   file, byte offset and reason.
//! - Checkpoints (process tree state + changed memory pages, one directory
//!   per epoch) are written by a separate [`CheckpointWriter`]; with
//!   [`WriterOptions::segment_epochs`] events are stored one file per epoch
//!   so [`TraceWriter::drop_epochs_before`] can keep only the last epochs
//!   (flight recorder), rebasing the oldest kept checkpoint first.

mod blob;
mod checkpoint;
mod codec;
mod error;
mod meta;
mod reader;
mod writer;

pub use checkpoint::{
    Checkpoint, CheckpointInfo, CheckpointWriter, FdState, Mapping, PageSink, ProcessState,
    SigAction, ThreadState, PAGE_SIZE,
};
pub use error::Error;
pub use meta::{CpuLoss, EpochInfo, ExitInfo, FileVersion, Host, Losses, Meta, TraceState};
pub use reader::{Events, FrameInfo, Trace};
pub use writer::{StatsHandle, TraceWriter, WriterOptions, WriterStats};

/// Version of the trace directory format as a whole (meta.json, events.tlf,
/// index.tlf, blobs.tlf, events/, checkpoints/, files/). Bumped on any change an older reader would misread;
/// readers refuse other versions with [`Error::Version`].
pub const FORMAT_VERSION: u32 = 2;

/// The recorder could not copy all bytes of at least one output.
pub const SYSCALL_INCOMPLETE_COPY: u32 = 1;
/// The syscall does not return (exit, exit_group); `ret` is meaningless.
pub const SYSCALL_NO_RETURN: u32 = 2;
/// Only the exit of the syscall was seen (recording started mid-syscall), so
/// `enter_ns` and `args` may be unknown.
pub const SYSCALL_ENTER_UNSEEN: u32 = 4;

/// Maximum number of syscall arguments (the Linux syscall ABI has six).
pub const MAX_ARGS: usize = 6;

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the trace, assigned by the writer (0, 1, 2, ... in push
    /// order); the value given to [`TraceWriter::push`] is ignored.
    pub seq: u64,
    /// Checkpoint epoch the event belongs to, stored as pushed.
    pub epoch: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`). Nondecreasing almost
    /// always, but small backward steps (per-CPU clock skew) are allowed.
    pub time_ns: u64,
    pub cpu: u32,
    pub pid: u32,
    pub tid: u32,
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Syscall(Syscall),
    /// Context switch on `Event::cpu`. `prev_state` holds the kernel's TASK_*
    /// bits (0 = preempted while runnable); `ip`/`sp` are 0 when unknown.
    Switch {
        prev_tid: u32,
        next_tid: u32,
        prev_state: u64,
        ip: u64,
        sp: u64,
    },
    /// `Event::pid`/`tid` are the parent's.
    Fork {
        child_pid: u32,
        child_tid: u32,
        flags: u64,
    },
    Exec {
        path: String,
        argv: Vec<String>,
    },
    /// `signal` 0 means a normal exit with `code`.
    Exit {
        code: i32,
        signal: u32,
        group_dead: bool,
    },
    Signal {
        sig: u32,
        phase: SignalPhase,
        code: i32,
        errno: i32,
        result: i32,
        target_tid: u32,
    },
    /// The thread entered a synchronisation function of its C library
    /// (`pthread_mutex_lock` and kin: `op` names it, as the recorder
    /// numbers them) at `ip`, on the object (mutex, condition variable,
    /// lock, semaphore) at `object`. Recorded for processes with more than
    /// one thread; their order, merged with the syscalls', is the order in
    /// which replay runs critical sections.
    Sync {
        op: u32,
        ip: u64,
        object: u64,
    },
    /// Start of a new checkpoint epoch.
    EpochMark {
        epoch: u32,
    },
}

/// Names of the event kinds, as used for [`Meta::event_counts`], indexed by
/// the kind's wire code (see [`EventKind::name`]).
pub const KIND_NAMES: [&str; 8] = [
    "syscall", "switch", "fork", "exec", "exit", "signal", "epoch", "sync",
];

impl EventKind {
    /// Wire code of the kind (also the index into [`KIND_NAMES`]).
    pub(crate) fn code(&self) -> u8 {
        match self {
            EventKind::Syscall(_) => 0,
            EventKind::Switch { .. } => 1,
            EventKind::Fork { .. } => 2,
            EventKind::Exec { .. } => 3,
            EventKind::Exit { .. } => 4,
            EventKind::Signal { .. } => 5,
            EventKind::EpochMark { .. } => 6,
            EventKind::Sync { .. } => 7,
        }
    }

    /// Short name of the kind, as used for [`Meta::event_counts`].
    pub fn name(&self) -> &'static str {
        KIND_NAMES[self.code() as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignalPhase {
    Generated,
    Delivered,
}

/// A completed (or non-returning) syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscall {
    pub nr: u32,
    /// Only the arguments the syscall uses.
    pub args: Args,
    pub ret: i64,
    /// Entry time; the enclosing `Event::time_ns` is the exit time.
    pub enter_ns: u64,
    /// `SYSCALL_*` bits.
    pub flags: u32,
    /// Bytes the kernel wrote to user memory.
    pub outputs: Vec<Output>,
}

/// A path as the kernel resolved it from a syscall's argument: `path` if
/// absolute, else under the directory `base` (the process's working
/// directory, or the directory an `openat` descriptor names), with `.` and
/// `..` folded (symlinks are not followed: a trace names files by the paths
/// the program used).
pub fn resolve_path(base: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let start = if path.starts_with('/') { "" } else { base };
    for c in start.split('/').chain(path.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Up to [`MAX_ARGS`] syscall arguments, stored inline (no heap).
///
/// Invariant: `values[len..]` are zero, so the derived `PartialEq` compares
/// only the used arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Args {
    values: [u64; MAX_ARGS],
    len: u8,
}

impl Args {
    /// # Panics
    /// If `values` has more than [`MAX_ARGS`] elements.
    pub fn new(values: &[u64]) -> Args {
        assert!(
            values.len() <= MAX_ARGS,
            "a syscall has at most {MAX_ARGS} arguments, got {}",
            values.len()
        );
        let mut a = Args::default();
        a.values[..values.len()].copy_from_slice(values);
        a.len = values.len() as u8;
        a
    }

    pub fn as_slice(&self) -> &[u64] {
        &self.values[..self.len as usize]
    }
}

/// Bytes a syscall wrote to user memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Which syscall argument / output slot the bytes belong to.
    pub arg: u8,
    /// User address the bytes were written to.
    pub addr: u64,
    pub data: bytes::Bytes,
    /// False when the recorder could not copy all bytes.
    pub complete: bool,
}

#[cfg(test)]
mod tests {
    use super::resolve_path;

    #[test]
    fn resolve_path_joins_and_folds() {
        assert_eq!(
            resolve_path("/work/main", ".git/objects/bb/f3"),
            "/work/main/.git/objects/bb/f3"
        );
        assert_eq!(resolve_path("/a/b", "../c/./d"), "/a/c/d");
        assert_eq!(resolve_path("/a/b", "/etc/hosts"), "/etc/hosts");
        assert_eq!(resolve_path("/", "x"), "/x");
        assert_eq!(resolve_path("/a", "../../.."), "/");
    }
}
