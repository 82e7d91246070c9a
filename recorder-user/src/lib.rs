//! The recording daemon as a library: it loads the eBPF recorder, keeps the
//! in-kernel target filter, drains the ring buffers with tokio, turns raw
//! records into ordered [`tracelog`] events and hands them to the trace
//! writer.
//!
//! The pieces that need no privileges (record decoding, event assembly,
//! ordering, tracefs format parsing) are plain functions and types so they
//! can be unit-tested without root; everything that talks to the kernel goes
//! through [`sys`] and [`probe`].

pub mod assemble;
pub mod decode;
pub mod dirty;
mod error;
pub mod order;
pub mod probe;
pub mod session;
pub mod sync_hook;
pub mod sys;
pub mod tracefs;

pub use error::RecordError;
pub use session::{record, Outcome, RecordOptions, Target};
pub mod supervisor;
pub mod vdso;
