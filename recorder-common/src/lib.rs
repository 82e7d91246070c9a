//! Shared between the eBPF recorder (kernel side) and its daemon (user side):
//! the `#[repr(C)]` records the eBPF programs write into ring buffers, the
//! configuration the daemon hands to them, and the syscall table as data.
//!
//! Everything here is `no_std`, fixed-width and `bool`-free so that both
//! sides agree on layout byte for byte; each record has a compile-time size
//! check.
#![no_std]

pub mod names;
pub mod record;
pub mod signals;
pub mod sync;
pub mod syscalls;

pub use record::*;
pub use signals::{signal_name, SIGNAL_NAMES};
pub use sync::{sync_name, sync_op, SYNC_FUNCTIONS};
pub use syscalls::*;
