//! `replay` rebuilds recorded processes and checks them against the trace.
//!
//! Role in uniplay: the recorder leaves checkpoints (registers, memory map,
//! memory pages, signal handlers of every process, taken at a consistent
//! cut); replay restores checkpoint k into a fresh process under ptrace,
//! runs the epoch, and compares the result with checkpoint k+1. This crate
//! provides the two ends of that loop:
//!
//! - [`restore`] turns one recorded process of a checkpoint into a live,
//!   stopped process: same mappings at the same addresses with the same
//!   protections and contents (the vDSO included, placed where it was),
//!   same threads with the same registers, FPU state and signal masks, same
//!   signal handlers. The returned [`Restored`] owns it: the calling thread
//!   is its tracer, [`Restored::inject`] runs single syscalls in it, and
//!   dropping it kills it.
//! - [`compare`] lists every [`Difference`] between a live restored process
//!   and a checkpoint: registers, FPU state, memory map and memory.
//!
//! Every system call the replayer itself makes goes through `sys`.
//! Dependencies: `tracelog` (the trace reader) only.
//!
//! What a restored process does not get back (see [`restore`]): its file
//! descriptors (it has none: replay emulates I/O from the log), the
//! kernel's brk pointer (the heap is recreated as plain anonymous memory;
//! moving brk needs CAP_SYS_RESOURCE), rseq registrations, alternate
//! signal stacks, interval timers, pending signals, credentials, cwd and
//! the restart block of a syscall interrupted with -ERESTART_RESTARTBLOCK;
//! shared mappings become shared anonymous memory private to the restored
//! process.

mod compare;
mod drive;
mod engine;
mod epoch;
mod error;
mod regs;
mod restore;
mod sys;

pub use compare::{compare, Difference, IGNORED_REGISTERS, MAX_PAGE_DIFFERENCES};
pub use engine::{error_chain, replay, EpochReport, ReplayOptions, Report, Status};
pub use epoch::{Divergence, Knowledge, ProcessOutcome};
pub use error::ReplayError;
pub use regs::REG_NAMES;
pub use restore::{restore, Restored};
