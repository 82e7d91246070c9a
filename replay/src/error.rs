//! The replay crate's error type.

use std::io;

/// Everything `restore`, `inject` and `compare` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace could not be read.
    #[error("reading checkpoint {epoch} of the trace: {source}")]
    Trace {
        epoch: u32,
        #[source]
        source: tracelog::Error,
    },
    /// The checkpoint has no process `pid`.
    #[error("checkpoint {epoch} has no process {pid}")]
    NoProcess { epoch: u32, pid: u32 },
    /// The checkpoint holds something restore cannot rebuild.
    #[error("checkpoint {epoch}, process {pid}: {reason}")]
    Unsupported {
        epoch: u32,
        pid: u32,
        reason: String,
    },
    /// A system call the replayer made itself (ptrace, /proc, fork) failed.
    #[error("{op} (pid/tid {pid}): {source}")]
    Sys {
        op: &'static str,
        pid: u32,
        #[source]
        source: io::Error,
    },
    /// Reading or writing the restored process's memory failed.
    #[error("{op} {len} bytes at {addr:#x} of process {pid}: {source}")]
    Memory {
        op: &'static str,
        pid: u32,
        addr: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    /// A syscall injected into the restored process failed.
    #[error("injected {what} in thread {tid} failed")]
    Injected {
        what: String,
        tid: u32,
        #[source]
        errno: io::Error,
    },
    /// A traced thread stopped (or ended) in a way the replayer did not expect.
    #[error("thread {tid} {status} while {during}")]
    UnexpectedStop {
        tid: u32,
        status: String,
        during: &'static str,
    },
    /// The trace could not be opened.
    #[error("cannot open the trace")]
    Open {
        #[source]
        source: tracelog::Error,
    },
    /// Replay needs checkpoints and the trace has none.
    #[error("{} has no checkpoints: record without --no-checkpoints to replay it", dir.display())]
    NoCheckpoints { dir: std::path::PathBuf },
    /// `--epoch N` names an epoch without a checkpoint.
    #[error("no checkpoint for epoch {epoch}; epochs with checkpoints: {available:?}")]
    NoSuchEpoch { epoch: u32, available: Vec<u32> },
    /// `inject` or `compare` was given a thread the restored process does not have.
    #[error("no live thread {tid} in the restored process")]
    NoThread { tid: u32 },
}

impl ReplayError {
    pub(crate) fn sys(op: &'static str, pid: u32) -> impl FnOnce(io::Error) -> ReplayError {
        move |source| ReplayError::Sys { op, pid, source }
    }
}
