//! Records written by the eBPF programs into the ring buffers.
//!
//! Every record starts with a [`RecHeader`]; its `kind` says which struct
//! follows. Records of one program run go to one ring in order, so a
//! syscall's [`ChunkRec`]s always precede its [`SyscallRec`] in that ring.

/// A syscall's exit (or, for `exit`/`exit_group`, its entry).
pub const REC_SYSCALL: u32 = 1;
/// A piece of the bytes a syscall wrote into user memory.
pub const REC_CHUNK: u32 = 2;
/// A context switch involving a target thread.
pub const REC_SWITCH: u32 = 3;
/// A fork/clone by a target thread.
pub const REC_FORK: u32 = 4;
/// A successful exec by a target thread.
pub const REC_EXEC: u32 = 5;
/// A target thread exited.
pub const REC_EXIT: u32 = 6;
/// A signal generated for, or delivered to, a target thread.
pub const REC_SIGNAL: u32 = 7;
/// A [`ChunkHdr`] with no data: the slot's bytes `offset..total`, at
/// `addr`, were too many for the ring's free space and are left in the
/// thread's memory, which the daemon reads while the thread is held
/// (`TID_HELD_FOR_COPY`). Only with a supervisor (`Config::throttle_signal`).
pub const REC_FETCH: u32 = 8;
/// A target thread entered a probed synchronisation function (a uprobe on
/// libc's `pthread_mutex_lock` and kin): the order of these is the order
/// of critical sections replay enforces.
pub const REC_SYNC: u32 = 9;

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RecHeader {
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    /// Thread group id of the thread the record is about.
    pub pid: u32,
    pub tid: u32,
}

/// `SyscallRec::flags`: some output bytes could not be copied.
pub const SC_INCOMPLETE_COPY: u32 = 1;
/// `SyscallRec::flags`: the syscall does not return (exit, exit_group).
pub const SC_NO_RETURN: u32 = 2;
/// `SyscallRec::flags`: the entry was not seen (the thread joined the target
/// while inside the syscall), so `enter_ns` and `args` are read at exit.
pub const SC_ENTER_UNSEEN: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallRec {
    pub hdr: RecHeader,
    pub nr: u32,
    pub flags: u32,
    pub enter_ns: u64,
    pub ret: i64,
    pub args: [u64; 6],
}

/// Bytes per chunk. Invariant: a power of two (the eBPF side masks lengths
/// with `CHUNK_MAX - 1`-style arithmetic) and small enough that a
/// [`ChunkRec`] fits a per-CPU scratch map value.
pub const CHUNK_MAX: usize = 16384;

/// Chunks copied per syscall before the copy is marked incomplete.
/// Invariant: at most `bpf_loop`'s limit (1 << 23 iterations); `CHUNK_MAX *
/// MAX_CHUNKS` (256 MiB) bounds one syscall's output, so in practice the
/// data ring's free space does (`--ring-size`: `sort` reads a whole file
/// in one `read`).
pub const MAX_CHUNKS: u32 = 16384;
const _: () = assert!(MAX_CHUNKS <= 1 << 23);

/// `ChunkRec::slot` of the argv block copied at a successful execve's exit.
pub const SLOT_EXEC_ARGV: u32 = 15;

/// At most this many bytes of an exec's argv block are copied (the
/// strings, NUL-terminated, from argv[0] on): a longer one is cut there,
/// its last string short.
pub const EXEC_ARGV_MAX: u64 = (1 << 20) - 1;

/// Header of a chunk; `len` data bytes follow it in the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ChunkHdr {
    pub hdr: RecHeader,
    /// The syscall argument index the bytes belong to (or a `SLOT_*`).
    pub slot: u32,
    pub len: u32,
    /// User address of the first byte of this chunk.
    pub addr: u64,
    /// Offset of this chunk within the slot's whole buffer.
    pub offset: u64,
    /// Length the whole buffer should have (so a missing chunk is visible).
    pub total: u64,
}

/// A chunk as assembled in per-CPU scratch memory before it is output.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ChunkRec {
    pub head: ChunkHdr,
    pub data: [u8; CHUNK_MAX],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SwitchRec {
    pub hdr: RecHeader,
    pub prev_tid: u32,
    pub next_tid: u32,
    /// Kernel `TASK_*` state bits of the previous task; 0 means preempted.
    pub prev_state: u64,
    /// User-mode instruction and stack pointer of the previous task when it
    /// was preempted and is a target thread; 0 otherwise.
    pub ip: u64,
    pub sp: u64,
    /// 1 if the previous task is the target thread, 0 if the next one is
    /// (the daemon may not have seen either yet: a launched command before
    /// its exec).
    pub prev_is_target: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkRec {
    pub hdr: RecHeader,
    pub child_pid: u32,
    pub child_tid: u32,
    pub flags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncRec {
    pub hdr: RecHeader,
    /// Which function: an index into `sync::SYNC_FUNCTIONS` (the probe's
    /// attach cookie).
    pub op: u32,
    pub _pad: u32,
    /// The user instruction pointer the probe saw: the function's entry
    /// (the kernel reports a uprobe's own address, not the one after its
    /// breakpoint), where replay puts its breakpoint.
    pub ip: u64,
    /// The function's first argument: the mutex, condition variable,
    /// lock or semaphore.
    pub object: u64,
}

/// Longest exec path recorded; longer ones are cut and flagged.
pub const EXEC_PATH_MAX: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRec {
    pub hdr: RecHeader,
    pub old_tid: u32,
    pub path_len: u32,
    pub path: [u8; EXEC_PATH_MAX],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitRec {
    pub hdr: RecHeader,
    /// 1 when this thread was the last of its process.
    pub group_dead: u32,
    pub _pad: u32,
}

/// `SignalRec::phase`.
pub const SIG_GENERATED: u32 = 0;
pub const SIG_DELIVERED: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SignalRec {
    pub hdr: RecHeader,
    pub sig: u32,
    pub phase: u32,
    pub code: i32,
    pub errno: i32,
    pub result: i32,
    pub target_tid: u32,
    /// The handler at delivery (0 = SIG_DFL, 1 = SIG_IGN).
    pub sa_handler: u64,
}

/// Indexes into the per-CPU loss counter array.
pub const LOSS_RING_FULL: u32 = 0;
pub const LOSS_INCOMPLETE_COPY: u32 = 1;
pub const LOSS_LIFECYCLE_FULL: u32 = 2;
pub const LOSS_COUNTERS: u32 = 4;

/// Set in a `TIDS` value while the supervisor makes the thread run a syscall
/// of its own (a checkpoint's fork): the thread's events are not recorded,
/// and threads it creates do not join the target.
pub const TID_PAUSED: u32 = 0x8000_0000;

/// Set in a `TIDS` value by the thread's own program when it sent itself
/// `Config::throttle_signal`: that signal is the recorder's, not the
/// program's (not recorded, never delivered). Cleared by the supervisor.
pub const TID_THROTTLED: u32 = 0x2000_0000;

/// Set with `TID_THROTTLED` when the thread stopped itself for something
/// the daemon must copy while it is stopped (an output left in its memory,
/// `REC_FETCH`; the file of a shared mapping it just made): the supervisor
/// holds it until the daemon says that copy is made, not merely until the
/// rings are drained. Cleared by the supervisor.
pub const TID_HELD_FOR_COPY: u32 = 0x1000_0000;

/// The tgid in a `TIDS` value.
pub const TID_TGID_MASK: u32 = !(TID_PAUSED | TID_THROTTLED | TID_HELD_FOR_COPY);

/// A target thread's `TIDS` entry: its tgid and `TID_*` flags, and what its
/// sys_enter saw, for its sys_exit. One map, so each program looks the
/// thread up once (a hash lookup is a good part of a program's cost).
/// Invariant: the syscall fields are written only by the thread's own
/// programs; the daemon writes whole entries only for threads it holds
/// stopped, or new ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidState {
    /// tgid | `TID_*` flags.
    pub value: u32,
    pub _pad: u32,
    /// Entry time of the syscall under way (0: none, or consumed).
    pub enter_ns: u64,
    pub nr: u64,
    pub args: [u64; 6],
    /// The syscall a later `restart_syscall` resumes (the last one that
    /// returned -ERESTART_RESTARTBLOCK), whose outputs it writes; 0: none.
    pub restart_nr: u64,
}

impl TidState {
    /// A thread not in a syscall.
    pub const fn new(value: u32) -> TidState {
        TidState {
            value,
            _pad: 0,
            enter_ns: 0,
            nr: 0,
            args: [0; 6],
            restart_nr: 0,
        }
    }
}

/// Index 0 of the `THROTTLE` array: set by a program when a data ring is
/// more than a quarter full, cleared by the daemon once it has drained it.
pub const THROTTLE_REQUESTED: u32 = 1;

/// Number of data rings. Invariant: a power of two; CPU `c` writes to ring
/// `c & (DATA_RINGS - 1)`, so up to this many CPUs never share a ring.
pub const DATA_RINGS: u32 = 8;

/// Tracepoint field offsets and settings, read from tracefs by the daemon
/// at load time and handed to the programs (aya has no CO-RE for Rust eBPF).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    pub switch_prev_pid: u32,
    pub switch_prev_state: u32,
    pub switch_next_pid: u32,
    pub fork_parent_pid: u32,
    pub fork_child_pid: u32,
    pub exec_filename: u32,
    pub exec_pid: u32,
    pub exec_old_pid: u32,
    pub exit_group_dead: u32,
    pub sig_sig: u32,
    pub sig_errno: u32,
    pub sig_code: u32,
    pub sig_gen_pid: u32,
    pub sig_gen_result: u32,
    pub sig_del_sa_handler: u32,
    /// The daemon's own tgid: never recorded, whatever the filter says.
    pub self_tgid: u32,
    /// A thread whose output filled its data ring past a quarter sends
    /// itself this signal (0: never), marked `TID_THROTTLED`: it stops at
    /// once, on its way back to user mode, and the supervisor holds it a
    /// moment while the daemon drains, then resumes it without the signal.
    pub throttle_signal: u32,
    pub _pad: u32,
}

// Layout checks: both sides must agree byte for byte.
const _: () = assert!(core::mem::size_of::<RecHeader>() == 24);
const _: () = assert!(core::mem::size_of::<SyscallRec>() == 24 + 24 + 48);
const _: () = assert!(core::mem::size_of::<ChunkHdr>() == 24 + 32);
const _: () = assert!(core::mem::size_of::<ChunkRec>() == 56 + CHUNK_MAX);
const _: () = assert!(core::mem::size_of::<SwitchRec>() == 24 + 40);
const _: () = assert!(core::mem::size_of::<ForkRec>() == 24 + 16);
const _: () = assert!(core::mem::size_of::<SyncRec>() == 24 + 24);
const _: () = assert!(core::mem::size_of::<ExecRec>() == 24 + 8 + EXEC_PATH_MAX);
const _: () = assert!(core::mem::size_of::<ExitRec>() == 24 + 8);
const _: () = assert!(core::mem::size_of::<SignalRec>() == 24 + 32);
const _: () = assert!(core::mem::size_of::<Config>() == 72);
const _: () = assert!(core::mem::size_of::<TidState>() == 8 + 8 * 9);
const _: () = assert!(CHUNK_MAX.is_power_of_two() && DATA_RINGS.is_power_of_two());

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these are repr(C), Copy, made only of integers and arrays of
    // integers, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::syscalls::SyscallSpec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TidState {}
}
