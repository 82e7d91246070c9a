//! The eBPF half of the recorder: programs on the syscall, scheduler and
//! signal tracepoints that record what target threads do into ring buffers.
//!
//! Every program first checks the thread against `TIDS` (the in-kernel target
//! filter, grown at fork and shrunk at exit without the daemon's help), so
//! the rest of the system pays one hash lookup per event and nothing more.
//! A target thread's entry also carries what its sys_enter saw for its
//! sys_exit, so a syscall costs one lookup per program too.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_get_attach_cookie, bpf_get_current_task_btf, bpf_loop,
            bpf_probe_read_user as probe_read_user_raw, bpf_probe_read_user_str,
            bpf_send_signal_thread, bpf_task_pt_regs,
        },
    },
    macros::{map, raw_tracepoint, tracepoint, uprobe},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, TracePointContext},
};
use recorder_common::*;

/// Target threads: tid → tgid and flags, and the syscall under way
/// (`TidState`).
#[map]
static TIDS: HashMap<u32, TidState> = HashMap::with_max_entries(65536, 0);

/// -ERESTART_RESTARTBLOCK: the kernel resumes the call as restart_syscall.
const ERESTART_RESTARTBLOCK: i64 = -516;
const NR_RESTART_SYSCALL: u32 = 219;

/// The syscall table (recorder-common), loaded by the daemon, indexed by nr.
#[map]
static SPECS: Array<SyscallSpec> = Array::with_max_entries(TABLE_SIZE, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
static LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_COUNTERS, 0);

#[map]
static SCRATCH: PerCpuArray<ChunkRec> = PerCpuArray::with_max_entries(1, 0);

/// `THROTTLE_REQUESTED` when a data ring filled past a quarter: the daemon then
/// has the supervisor hold the target while it drains, instead of losing
/// what does not fit.
#[map]
static THROTTLE: Array<u32> = Array::with_max_entries(1, 0);

/// Output segments of the syscall being recorded on this CPU. A syscall
/// whose outputs need more is marked incomplete, never silently cut.
const MAX_SEGS: usize = 24;
#[repr(C)]
#[derive(Clone, Copy)]
struct Seg {
    slot: u64,
    addr: u64,
    len: u64,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct Segs {
    n: u64,
    /// Set when a segment did not fit: the copy is incomplete.
    dropped: u64,
    /// Set when a segment was left in memory for the daemon (`REC_FETCH`).
    fetch: u64,
    segs: [Seg; MAX_SEGS],
    /// An iovec array still to walk (`walk_iov`), planned by `plan_iov`.
    iov: IovWalk,
    // Inputs of plan_outputs.
    spec: SyscallSpec,
    args: [u64; 6],
    ret: i64,
    // Loop state of copy_segments.
    hdr: RecHeader,
    seg: u64,
    off: u64,
    incomplete: u64,
}
/// A pending walk over an iovec array: its outputs become segments in a
/// `bpf_loop` of their own, since unrolling the walk inside the plan made
/// the verifier take most of the recorder's start-up (70 ms of 8 passes'
/// states; 15 ms without).
#[repr(C)]
#[derive(Clone, Copy)]
struct IovWalk {
    slot: u64,
    addr: u64,
    count: u64,
    remaining: u64,
    /// Iovecs walked so far.
    done: u64,
}
#[map]
static SEGS: PerCpuArray<Segs> = PerCpuArray::with_max_entries(1, 0);

// Data rings, one per CPU (modulo DATA_RINGS); sizes are set by the daemon.
#[map]
static DATA0: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static DATA1: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static DATA2: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static DATA3: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static DATA4: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static DATA5: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static DATA6: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static DATA7: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Lifecycle ring: forks, execs, exits, signals. Small and separate so they
/// are never lost behind bulk data.
#[map]
static LIFE: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

#[inline(always)]
fn count_loss(which: u32) {
    if let Some(p) = LOSS.get_ptr_mut(which) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *p += 1 };
    }
}

/// Data records do not wake the daemon (BPF_RB_NO_WAKEUP): a wakeup costs
/// the target more than the record itself, and the daemon drains the data
/// rings on a short timer anyway. Lifecycle records do wake it.
const DATA_FLAGS: u64 = 1;
/// BPF_RB_FORCE_WAKEUP.
const WAKE_FLAGS: u64 = 2;
/// bpf_ringbuf_query: BPF_RB_AVAIL_DATA and BPF_RB_RING_SIZE.
const RB_AVAIL_DATA: u64 = 0;
const RB_RING_SIZE: u64 = 1;

/// Writes `len` bytes at `ptr` into this CPU's data ring.
#[inline(always)]
fn data_out(cpu: u32, ptr: *const u8, len: usize) -> bool {
    data_out_flags(cpu, ptr, len, DATA_FLAGS)
}

/// This CPU's data ring.
#[inline(always)]
fn data_ring(cpu: u32) -> &'static RingBuf {
    match cpu & (DATA_RINGS - 1) {
        0 => &DATA0,
        1 => &DATA1,
        2 => &DATA2,
        3 => &DATA3,
        4 => &DATA4,
        5 => &DATA5,
        6 => &DATA6,
        _ => &DATA7,
    }
}

/// After a syscall's output was copied: returns the flags that wake the
/// daemon at once when this CPU's ring is more than an eighth full; past a
/// quarter, also stops the thread (see `Config::throttle_signal`) and asks
/// the daemon to hold the target while it drains.
#[inline(always)]
fn throttle_flags(cpu: u32, tid: u32) -> u64 {
    let (avail, size) = ring_fill(cpu);
    // An eighth: wake the daemon so that it drains while the thread runs on,
    // which is all it takes unless the thread outpaces the daemon.
    if avail * 8 < size {
        return DATA_FLAGS;
    }
    // A quarter: stop the thread; the rest absorbs the outputs of syscalls
    // already under way on other CPUs.
    if avail * 4 < size {
        return WAKE_FLAGS;
    }
    hold_for_daemon(tid);
    WAKE_FLAGS
}

/// Stops the thread on its way back to user code (see
/// `Config::throttle_signal`) and asks the daemon to hold the target until
/// it has drained the rings and handled what they hold.
#[inline(always)]
fn hold_for_daemon(tid: u32) {
    if let Some(p) = THROTTLE.get_ptr_mut(0) {
        // SAFETY: a plain store into the map value; racing CPUs store the
        // same value.
        unsafe { *p = THROTTLE_REQUESTED };
    }
    stop_self(tid, 0);
}

/// Stops the thread on its way back to user code, marked `TID_THROTTLED`
/// and `extra` (see `Config::throttle_signal`).
#[inline(always)]
fn stop_self(tid: u32, extra: u32) {
    let sig = config().map_or(0, |c| c.throttle_signal);
    if sig != 0 {
        if let Some(v) = TIDS.get_ptr_mut(&tid) {
            // SAFETY: this thread's own value; only its programs and the
            // supervisor (while the thread is stopped) change its flags.
            unsafe {
                if (*v).value & TID_THROTTLED == 0 {
                    (*v).value |= TID_THROTTLED | extra;
                    bpf_send_signal_thread(sig);
                }
            }
        }
    }
}

/// Whether a segment of `len` bytes is left in memory for the daemon
/// (`REC_FETCH`) rather than copied: when it would take more than half of
/// the ring's free space (a single read of tens of MiB would not fit at
/// all), and there is a supervisor to hold the thread meanwhile.
#[inline(always)]
fn leave_in_memory(cpu: u32, len: u64) -> bool {
    if config().map_or(0, |c| c.throttle_signal) == 0 {
        return false;
    }
    let (avail, size) = ring_fill(cpu);
    len > size.saturating_sub(avail) / 2
}

/// Bytes waiting in this CPU's data ring, and its size.
#[inline(always)]
fn ring_fill(cpu: u32) -> (u64, u64) {
    let ring = data_ring(cpu);
    (ring.query(RB_AVAIL_DATA), ring.query(RB_RING_SIZE))
}

/// A file mapped shared: the daemon copies the file when it reads this
/// event, but the program may write through the mapping at once, and a
/// copy taken after that would start replay from the wrong contents
/// (SQLite's WAL index). So the thread waits, stopped, until the daemon
/// has made the copy.
#[inline(always)]
fn held_mapping(nr: u32, args: &[u64; 6], ret: i64) -> bool {
    nr == nr::MMAP && ret >= 0 && holds_at_mmap(args[3])
}

#[inline(always)]
fn data_out_flags(cpu: u32, ptr: *const u8, len: usize, flags: u64) -> bool {
    // SAFETY: callers pass a pointer to `len` readable bytes.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    let r = data_ring(cpu).output::<[u8]>(bytes, flags);
    if r.is_err() {
        count_loss(LOSS_RING_FULL);
        return false;
    }
    true
}

#[inline(always)]
fn life_out<T>(rec: &T) {
    if LIFE.output::<T>(rec, 0).is_err() {
        count_loss(LOSS_LIFECYCLE_FULL);
    }
}

#[inline(always)]
fn header(kind: u32, pid_tgid: u64) -> RecHeader {
    RecHeader {
        kind,
        // SAFETY: plain helper call.
        cpu: unsafe { bpf_get_smp_processor_id() },
        // SAFETY: plain helper call.
        time_ns: unsafe { bpf_ktime_get_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    }
}

#[inline(always)]
fn is_target(tid: u32) -> bool {
    target(tid).is_some()
}

/// The thread's `TIDS` value, if it is a target thread not paused.
#[inline(always)]
fn target(tid: u32) -> Option<u32> {
    // SAFETY: the value is copied out at once.
    unsafe { TIDS.get(&tid).map(|s| s.value) }.filter(|v| v & TID_PAUSED == 0)
}

/// The thread's `TIDS` entry, if it is a target thread not paused.
#[inline(always)]
fn target_state(tid: u32) -> Option<*mut TidState> {
    let p = TIDS.get_ptr_mut(&tid)?;
    // SAFETY: a map value, read at once.
    (unsafe { (*p).value } & TID_PAUSED == 0).then_some(p)
}

#[inline(always)]
fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// x86-64 `struct pt_regs`, as saved at kernel entry.
#[repr(C)]
#[derive(Clone, Copy)]
struct PtRegs {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    bp: u64,
    bx: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    ax: u64,
    cx: u64,
    dx: u64,
    si: u64,
    di: u64,
    orig_ax: u64,
    ip: u64,
    cs: u64,
    flags: u64,
    sp: u64,
    ss: u64,
}

#[inline(always)]
fn read_regs(ptr: *const PtRegs) -> Option<PtRegs> {
    // SAFETY: `ptr` comes from the tracepoint's arguments or bpf_task_pt_regs;
    // the helper checks the read.
    unsafe { bpf_probe_read_kernel(ptr).ok() }
}

#[inline(always)]
fn syscall_args(r: &PtRegs) -> [u64; 6] {
    [r.di, r.si, r.dx, r.r10, r.r8, r.r9]
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(slot) = target_state(tid) else {
        return 0;
    };
    let Some(regs) = read_regs(ctx.arg::<*const PtRegs>(0)) else {
        return 0;
    };
    let nr: u64 = ctx.arg(1);
    let args = syscall_args(&regs);
    if nr == nr::EXIT as u64 || nr == nr::EXIT_GROUP as u64 {
        // These never reach sys_exit: record them whole here.
        let hdr = header(REC_SYSCALL, pid_tgid);
        let rec = SyscallRec {
            hdr,
            nr: nr as u32,
            flags: SC_NO_RETURN,
            enter_ns: hdr.time_ns,
            ret: 0,
            args,
        };
        data_out(
            hdr.cpu,
            &rec as *const SyscallRec as *const u8,
            core::mem::size_of::<SyscallRec>(),
        );
        return 0;
    }
    // SAFETY: plain helper call.
    let time_ns = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the thread's own entry; only its programs write these fields.
    unsafe {
        (*slot).enter_ns = time_ns;
        (*slot).nr = nr;
        (*slot).args = args;
    }
    0
}

/// Computes where a syscall's output buffers are and queues them as
/// segments. Runs under `bpf_loop` with its inputs in the per-CPU `SEGS`
/// value, for the same reason as `copy_segments`.
#[inline(always)]
fn plan_outputs(spec: &SyscallSpec, args: &[u64; 6], ret: i64, segs: &mut Segs) {
    reset_segs(segs);
    segs.spec = *spec;
    segs.args = *args;
    segs.ret = ret;
    // SAFETY: plan_step is a static BPF subprogram with the callback ABI.
    unsafe {
        bpf_loop(
            MAX_OUTS as u32,
            plan_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: a read of this CPU's map value, which the callback wrote.
    if unsafe { after_loop(&segs.iov.count) } != 0 {
        walk_iov(segs);
    }
}

/// No segments planned yet.
#[inline(always)]
fn reset_segs(segs: &mut Segs) {
    segs.n = 0;
    segs.dropped = 0;
    segs.fetch = 0;
    segs.iov.count = 0;
}

/// Plans output `index` of the syscall in `SEGS`. Returns 1 to stop.
#[inline(never)]
extern "C" fn plan_step(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(segs) = SEGS.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's map value, used only by this program run.
    let segs = unsafe { &mut *segs };
    if index >= segs.spec.nouts as u64 || index >= MAX_OUTS as u64 {
        return 1;
    }
    let o = segs.spec.outs[index as usize];
    let args = segs.args;
    plan_one(&o, &args, segs.ret, segs);
    0
}

#[inline(always)]
fn arg(args: &[u64; 6], i: u8) -> u64 {
    // A match, not an index: the verifier rejects variable-offset stack reads.
    match i {
        0 => args[0],
        1 => args[1],
        2 => args[2],
        3 => args[3],
        4 => args[4],
        _ => args[5],
    }
}

/// `Seg::slot` flag: a NUL-terminated string, copied up to its end.
const SEG_CSTR: u64 = 0x100;
/// Longest string copied (the kernel's PATH_MAX).
const PATH_MAX: u64 = 4096;

#[inline(always)]
fn push_seg(segs: &mut Segs, slot: u64, addr: u64, len: u64) {
    if addr == 0 || len == 0 {
        return;
    }
    let n = segs.n as usize;
    if n < MAX_SEGS {
        segs.segs[n] = Seg { slot, addr, len };
        segs.n += 1;
    } else {
        segs.dropped = 1;
    }
}

#[inline(always)]
fn read_u32(addr: u64) -> Option<u32> {
    // SAFETY: the helper checks the user read.
    unsafe { bpf_probe_read_user(addr as *const u32).ok() }
}

#[inline(always)]
fn plan_one(o: &OutSpec, args: &[u64; 6], ret: i64, segs: &mut Segs) {
    if o.when & WHEN_ALWAYS == 0 && ret < 0 {
        return;
    }
    let addr = arg(args, o.arg);
    let slot = if o.when & WHEN_INPUT != 0 {
        (o.arg | SLOT_INPUT) as u64
    } else {
        o.arg as u64
    };
    let len = match o.rule {
        LEN_CSTR => {
            push_seg(segs, slot | SEG_CSTR, addr, PATH_MAX);
            0
        }
        LEN_RET if o.size != 0 => {
            let cap = arg(args, o.param);
            if (ret as u64) < cap {
                ret as u64
            } else {
                cap
            }
        }
        LEN_RET => ret as u64,
        LEN_FIXED => o.size as u64,
        LEN_ARG => arg(args, o.param).wrapping_mul(o.size as u64),
        LEN_RET_TIMES => (ret as u64).wrapping_mul(o.size as u64),
        LEN_LENPTR => match read_u32(arg(args, o.param)) {
            Some(n) if (n as u64) < o.size as u64 => n as u64,
            Some(_) => o.size as u64,
            None => 0,
        },
        LEN_FDSET => arg(args, o.param).wrapping_add(63) / 64 * 8,
        LEN_IOCTL => ioctl_len(args[1]),
        LEN_CMD => cmd_out_len(o.size, arg(args, o.param)),
        LEN_IOV => {
            plan_iov(slot, addr, arg(args, o.param), ret as u64, segs);
            0
        }
        LEN_MSGHDR => {
            plan_msghdr(slot, addr, ret as u64, segs);
            0
        }
        _ => 0,
    };
    push_seg(segs, slot, addr, len);
}

/// Bytes an ioctl wrote into `args[2]`, from its request number.
#[inline(always)]
fn ioctl_len(req: u64) -> u64 {
    const IOC_READ: u64 = 2;
    match req {
        0x5401 => 36, // TCGETS: struct termios
        0x5413 => 8,  // TIOCGWINSZ
        0x541B => 4,  // FIONREAD
        0x540F => 4,  // TIOCGPGRP
        _ if (req >> 30) & IOC_READ != 0 => (req >> 16) & 0x3fff,
        _ => 0,
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// Iovecs of one array recorded; past them, the copy is marked incomplete.
const MAX_IOV: u32 = 16;

/// Queues the walk of an iovec array (at most one per syscall: readv,
/// preadv, recvmsg...) for `walk_iov`.
#[inline(always)]
fn plan_iov(slot: u64, iov: u64, count: u64, remaining: u64, segs: &mut Segs) {
    if segs.iov.count != 0 {
        segs.dropped = 1;
        return;
    }
    segs.iov = IovWalk {
        slot,
        addr: iov,
        count,
        remaining,
        done: 0,
    };
}

/// Turns the queued iovec array into segments, `remaining` bytes in all.
#[inline(always)]
fn walk_iov(segs: &mut Segs) {
    // SAFETY: iov_step is a static BPF subprogram with the callback ABI;
    // it ignores its context pointer.
    unsafe {
        bpf_loop(
            MAX_IOV,
            iov_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as in plan_outputs.
    let w = unsafe { after_loop(&segs.iov) };
    if w.remaining != 0 && w.done < w.count {
        // More iovecs than recorded: make the loss visible. (With every
        // iovec taken, what remains is a datagram's length beyond them,
        // returned with MSG_TRUNC: the kernel wrote no more.)
        push_seg(segs, w.slot, u64::MAX, w.remaining);
    }
}

/// Iovec `index` of `walk_iov`. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn iov_step(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(segs) = SEGS.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's map value, used only by this program run.
    let segs = unsafe { &mut *segs };
    let w = segs.iov;
    if index >= w.count || w.remaining == 0 {
        return 1;
    }
    // SAFETY: the helper checks the user read.
    let Ok(v) = (unsafe { bpf_probe_read_user((w.addr + index * 16) as *const Iovec) }) else {
        return 1;
    };
    let take = if v.len < w.remaining {
        v.len
    } else {
        w.remaining
    };
    push_seg(segs, w.slot, v.base, take);
    segs.iov.remaining = w.remaining - take;
    segs.iov.done = index + 1;
    0
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MsgHdr {
    name: u64,
    namelen: u32,
    _pad: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
    flags: u32,
    _pad2: u32,
}

#[inline(always)]
fn plan_msghdr(slot: u64, addr: u64, ret: u64, segs: &mut Segs) {
    // SAFETY: the helper checks the user read.
    let Ok(m) = (unsafe { bpf_probe_read_user(addr as *const MsgHdr) }) else {
        return;
    };
    push_seg(segs, slot, addr, core::mem::size_of::<MsgHdr>() as u64);
    push_seg(segs, slot, m.name, (m.namelen as u64) & 0xff);
    push_seg(segs, slot, m.control, m.controllen & 0xffff);
    plan_iov(slot, m.iov, m.iovlen, ret, segs);
}

/// Copies the queued segments into the data ring in chunks. Returns false if
/// any byte could not be copied.
///
/// The loop runs under `bpf_loop`, so the verifier checks one chunk's worth
/// of code instead of unrolling `MAX_CHUNKS` iterations; its state lives in
/// the per-CPU `SEGS` value, which the verifier does not track, so callback
/// states converge at once.
#[inline(always)]
fn copy_segments(hdr: &RecHeader, segs: &mut Segs) -> bool {
    segs.hdr = *hdr;
    segs.seg = 0;
    segs.off = 0;
    segs.incomplete = segs.dropped;
    // SAFETY: copy_step is a static BPF subprogram with the callback ABI;
    // it ignores its context pointer.
    unsafe {
        bpf_loop(
            MAX_CHUNKS,
            copy_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as in plan_outputs.
    if unsafe { after_loop(&segs.seg) < segs.n } {
        segs.incomplete = 1;
    }
    // SAFETY: as above.
    unsafe { after_loop(&segs.incomplete) == 0 }
}

/// Reads a field of `SEGS` that a `bpf_loop` callback may have written:
/// the callback reaches the value through the map, not through the caller's
/// reference, so the compiler would otherwise reuse what it knew before
/// the loop.
///
/// # Safety
/// `field` must be valid for reads.
#[inline(always)]
unsafe fn after_loop<T: Copy>(field: &T) -> T {
    // SAFETY: the caller's reference is valid; volatile only forces the load.
    unsafe { core::ptr::read_volatile(field) }
}

/// One chunk of `copy_segments`. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn copy_step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let (Some(segs), Some(scratch)) = (SEGS.get_ptr_mut(0), SCRATCH.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: both are this CPU's map values, used only by this program run.
    let (segs, scratch) = unsafe { (&mut *segs, &mut *scratch) };
    let seg = segs.seg as usize;
    if seg >= segs.n as usize || seg >= MAX_SEGS {
        return 1;
    }
    let s = segs.segs[seg];
    if s.addr == u64::MAX {
        segs.incomplete = 1;
        segs.seg += 1;
        return 0;
    }
    if s.slot & SEG_CSTR != 0 {
        copy_cstr(segs, scratch, &s);
        segs.seg += 1;
        segs.off = 0;
        return 0;
    }
    let off = segs.off;
    if off == 0 && leave_in_memory(segs.hdr.cpu, s.len) {
        scratch.head = ChunkHdr {
            hdr: RecHeader {
                kind: REC_FETCH,
                ..segs.hdr
            },
            slot: s.slot as u32,
            len: 0,
            addr: s.addr,
            offset: 0,
            total: s.len,
        };
        let head = core::mem::size_of::<ChunkHdr>();
        if !data_out(segs.hdr.cpu, scratch as *const ChunkRec as *const u8, head) {
            segs.incomplete = 1;
        }
        segs.fetch = 1;
        segs.seg += 1;
        return 0;
    }
    let left = s.len.wrapping_sub(off);
    let n = if left > CHUNK_MAX as u64 {
        CHUNK_MAX as u64
    } else {
        left
    };
    let size = (n as u32) & (CHUNK_MAX as u32 * 2 - 1);
    scratch.head = ChunkHdr {
        hdr: RecHeader {
            kind: REC_CHUNK,
            ..segs.hdr
        },
        slot: s.slot as u32,
        len: size,
        addr: s.addr.wrapping_add(off),
        offset: off,
        total: s.len,
    };
    // SAFETY: the destination is CHUNK_MAX bytes and size <= CHUNK_MAX; the
    // helper checks the user read.
    let ok = size <= CHUNK_MAX as u32
        && unsafe {
            probe_read_user_raw(
                scratch.data.as_mut_ptr().cast(),
                size,
                s.addr.wrapping_add(off) as *const _,
            )
        } == 0;
    if !ok {
        // Sent empty so the daemon sees exactly which bytes are missing.
        scratch.head.len = 0;
        segs.incomplete = 1;
    }
    let len = scratch.head.len as usize;
    if len <= CHUNK_MAX {
        let total = core::mem::size_of::<ChunkHdr>() + len;
        if !data_out(segs.hdr.cpu, scratch as *const ChunkRec as *const u8, total) {
            segs.incomplete = 1;
        }
    }
    segs.off = off.wrapping_add(n);
    if segs.off >= s.len || n == 0 {
        segs.seg += 1;
        segs.off = 0;
    }
    0
}

/// Copies one string segment as a single chunk, as long as the string.
#[inline(always)]
fn copy_cstr(segs: &mut Segs, scratch: &mut ChunkRec, s: &Seg) {
    // SAFETY: the destination holds CHUNK_MAX >= PATH_MAX bytes; the helper
    // checks the user read and stops at the NUL.
    let n = unsafe {
        bpf_probe_read_user_str(
            scratch.data.as_mut_ptr().cast(),
            PATH_MAX as u32,
            s.addr as *const _,
        )
    };
    let len = if n > 0 && n <= PATH_MAX as i64 {
        n as u32
    } else {
        0
    };
    scratch.head = ChunkHdr {
        hdr: RecHeader {
            kind: REC_CHUNK,
            ..segs.hdr
        },
        slot: (s.slot & 0xff) as u32,
        len,
        addr: s.addr,
        offset: 0,
        total: len as u64,
    };
    if len == 0 {
        segs.incomplete = 1;
        return;
    }
    let total = core::mem::size_of::<ChunkHdr>() + (len as usize & (PATH_MAX as usize * 2 - 1));
    if total <= core::mem::size_of::<ChunkHdr>() + PATH_MAX as usize
        && !data_out(segs.hdr.cpu, scratch as *const ChunkRec as *const u8, total)
    {
        segs.incomplete = 1;
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(p) = target_state(tid) else {
        return 0;
    };
    let slot = Some(p);
    let ret: i64 = ctx.arg(1);
    let mut hdr = header(REC_SYSCALL, pid_tgid);
    let mut flags = 0u32;
    let mut out_flags = DATA_FLAGS;
    // SAFETY: the thread's own entry, copied out at once.
    let entered = Some(unsafe { *p }).filter(|e| e.enter_ns != 0);
    // Consumed: a later exit without an entry must not reuse it.
    // SAFETY: as above.
    unsafe { (*p).enter_ns = 0 };
    let nr_hint = entered.map(|e| e.nr as u32).unwrap_or(u32::MAX);
    // The saved registers are only needed when the entry was not seen, or
    // for the new stack after an exec.
    let regs = if entered.is_none() || nr_hint == nr::EXECVE || nr_hint == nr::EXECVEAT {
        read_regs(ctx.arg::<*const PtRegs>(0))
    } else {
        None
    };
    let (nr, enter_ns, args) = match (entered, regs) {
        (Some(e), _) => (e.nr as u32, e.enter_ns, e.args),
        (_, Some(r)) => {
            let nr = r.orig_ax as u32;
            // A new thread or process starts life returning 0 from the
            // clone its parent entered: nothing of it was missed.
            let child_return = ret == 0
                && (nr == nr::CLONE || nr == nr::CLONE3 || nr == nr::FORK || nr == nr::VFORK);
            if !child_return {
                flags |= SC_ENTER_UNSEEN;
            }
            (nr, hdr.time_ns, syscall_args(&r))
        }
        _ => return 0,
    };
    // restart_syscall resumes an interrupted call with its registers and
    // writes that call's outputs: plan them by its row.
    let mut spec_nr = nr;
    if let Some(p) = slot {
        // SAFETY: the slot is this thread's own.
        unsafe {
            let restarted = (*p).restart_nr;
            if nr == NR_RESTART_SYSCALL && restarted != 0 {
                spec_nr = restarted as u32;
            }
            if ret == ERESTART_RESTARTBLOCK && nr != NR_RESTART_SYSCALL {
                (*p).restart_nr = nr as u64;
            }
        }
    }
    let spec = SPECS.get(spec_nr % TABLE_SIZE).copied().unwrap_or_default();
    if let Some(segs) = SEGS.get_ptr_mut(0) {
        // SAFETY: this CPU's scratch, used only while this program runs.
        let segs = unsafe { &mut *segs };
        if (nr == nr::EXECVE || nr == nr::EXECVEAT) && ret == 0 {
            // The old image's memory is gone: the path comes from the exec
            // tracepoint, and argv from the new stack.
            reset_segs(segs);
            if let Some(r) = regs {
                plan_exec_argv(r.sp, segs);
            }
        } else if spec.nouts != 0 {
            plan_outputs(&spec, &args, ret, segs);
        } else {
            reset_segs(segs);
        }
        if segs.n != 0 || segs.dropped != 0 {
            if !copy_segments(&hdr, segs) {
                flags |= SC_INCOMPLETE_COPY;
                count_loss(LOSS_INCOMPLETE_COPY);
            }
            // SAFETY: as in plan_outputs.
            if unsafe { after_loop(&segs.fetch) } != 0 {
                stop_self(tid, TID_HELD_FOR_COPY);
            }
            // The record follows its chunks in time. Only read the clock
            // again when there were chunks: a clock read is a fair share
            // of this program's cost.
            // SAFETY: plain helper call.
            hdr.time_ns = unsafe { bpf_ktime_get_ns() };
            out_flags = throttle_flags(hdr.cpu, tid);
        }
    }
    if held_mapping(nr, &args, ret) {
        stop_self(tid, TID_HELD_FOR_COPY);
        out_flags = WAKE_FLAGS;
    }
    let rec = SyscallRec {
        hdr,
        nr,
        flags,
        enter_ns,
        ret,
        args,
    };
    data_out_flags(
        hdr.cpu,
        &rec as *const SyscallRec as *const u8,
        core::mem::size_of::<SyscallRec>(),
        out_flags,
    );
    0
}

/// After a successful execve the new stack holds argc, argv[], NULL, envp[]:
/// the argv strings are contiguous from argv[0] up to envp[0].
#[inline(always)]
fn plan_exec_argv(sp: u64, segs: &mut Segs) {
    // SAFETY: the helper checks each user read.
    unsafe {
        let Ok(argc) = bpf_probe_read_user(sp as *const u64) else {
            return;
        };
        let argc = argc & 0xffff;
        let Ok(first) = bpf_probe_read_user((sp + 8) as *const u64) else {
            return;
        };
        let Ok(env0) = bpf_probe_read_user((sp + 16 + argc * 8) as *const u64) else {
            return;
        };
        let end = if env0 > first { env0 } else { first + 4096 };
        // Capped, not masked: a megabyte of arguments wrapped to a few
        // bytes.
        let len = end - first;
        let len = if len > EXEC_ARGV_MAX {
            EXEC_ARGV_MAX
        } else {
            len
        };
        push_seg(segs, SLOT_EXEC_ARGV as u64, first, len);
    }
}

#[inline(always)]
fn read_field<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
    // SAFETY: the offset comes from the tracepoint's format file; the helper
    // checks the read.
    unsafe { ctx.read_at::<T>(off as usize).ok() }
}

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch(ctx: TracePointContext) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let prev: u32 = read_field::<i32>(&ctx, cfg.switch_prev_pid).unwrap_or(0) as u32;
    let next: u32 = read_field::<i32>(&ctx, cfg.switch_next_pid).unwrap_or(0) as u32;
    let prev_in = is_target(prev);
    if !prev_in && !is_target(next) {
        return 0;
    }
    let prev_state: u64 = read_field::<i64>(&ctx, cfg.switch_prev_state).unwrap_or(0) as u64;
    let pid_tgid = bpf_get_current_pid_tgid();
    let hdr = header(REC_SWITCH, pid_tgid);
    let mut rec = SwitchRec {
        hdr,
        prev_tid: prev,
        next_tid: next,
        prev_state,
        ip: 0,
        sp: 0,
        prev_is_target: prev_in as u32,
        _pad: 0,
    };
    if prev_in && prev_state == 0 {
        // Preempted: where in user space? (current is prev here.)
        // SAFETY: helper calls on the current task; reads are checked.
        unsafe {
            let task = bpf_get_current_task_btf();
            let regs = bpf_task_pt_regs(task) as *const PtRegs;
            if let Some(r) = read_regs(regs) {
                if r.cs & 3 == 3 {
                    rec.ip = r.ip;
                    rec.sp = r.sp;
                }
            }
        }
    }
    data_out(
        hdr.cpu,
        &rec as *const SwitchRec as *const u8,
        core::mem::size_of::<SwitchRec>(),
    );
    0
}

/// A target thread entered a probed synchronisation function (attached by
/// the daemon, per multithreaded process, at libc's pthread mutex,
/// condition-variable, rwlock, spinlock, barrier and semaphore entries).
#[uprobe]
pub fn sync_op(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target(pid_tgid as u32) {
        return 0;
    }
    // SAFETY: the context is the trapped thread's user registers.
    let (ip, object) = unsafe { ((*ctx.regs).rip, (*ctx.regs).rdi) };
    // SAFETY: plain helper call on this program's context.
    let op = unsafe { bpf_get_attach_cookie(ctx.regs.cast()) } as u32;
    let hdr = header(REC_SYNC, pid_tgid);
    let rec = SyncRec {
        hdr,
        op,
        _pad: 0,
        ip,
        object,
    };
    data_out(
        hdr.cpu,
        &rec as *const SyncRec as *const u8,
        core::mem::size_of::<SyncRec>(),
    );
    0
}

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if !is_target(tid) {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    let child: u32 = read_field::<i32>(&ctx, cfg.fork_child_pid).unwrap_or(0) as u32;
    // The clone flags, from the syscall this thread is in.
    // SAFETY: copied out at once.
    let flags = match unsafe { TIDS.get(&tid).copied() } {
        Some(e) if e.nr == nr::CLONE as u64 => e.args[0],
        Some(e) if e.nr == nr::CLONE3 as u64 => {
            // SAFETY: the helper checks the user read (clone_args.flags).
            unsafe { bpf_probe_read_user(e.args[0] as *const u64).unwrap_or(0) }
        }
        Some(e) if e.nr == nr::VFORK as u64 => 0x4100, // CLONE_VM | CLONE_VFORK
        _ => 0,
    };
    const CLONE_THREAD: u64 = 0x10000;
    let child_pid = if flags & CLONE_THREAD != 0 {
        (pid_tgid >> 32) as u32
    } else {
        child
    };
    let _ = TIDS.insert(&child, &TidState::new(child_pid), 0);
    let rec = ForkRec {
        hdr: header(REC_FORK, pid_tgid),
        child_pid,
        child_tid: child,
        flags,
    };
    life_out(&rec);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let pid: u32 = read_field::<i32>(&ctx, cfg.exec_pid).unwrap_or(0) as u32;
    let old: u32 = read_field::<i32>(&ctx, cfg.exec_old_pid).unwrap_or(0) as u32;
    if !is_target(pid) && !is_target(old) {
        return 0;
    }
    if old != pid {
        // A non-leader thread exec'd and took over the leader's tid.
        // Its execve is still under way: keep its entry's syscall state.
        // SAFETY: copied out at once.
        let mut st = unsafe { TIDS.get(&old).copied() }.unwrap_or(TidState::new(pid));
        st.value = pid;
        let _ = TIDS.remove(&old);
        let _ = TIDS.insert(&pid, &st, 0);
    }
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let rec = rec as *mut ExecRec;
    let loc: u32 = read_field::<u32>(&ctx, cfg.exec_filename).unwrap_or(0);
    // SAFETY: SCRATCH's value is larger than an ExecRec; only this program
    // uses it on this CPU now.
    unsafe {
        (*rec).hdr = header(REC_EXEC, bpf_get_current_pid_tgid());
        (*rec).old_tid = old;
        let src = (ctx.as_ptr_u8()).add((loc & 0xffff) as usize);
        let n = aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(src, &mut (*rec).path)
            .map(|s| s.len())
            .unwrap_or(0);
        (*rec).path_len = n as u32;
        life_out(&*rec);
    }
    0
}

trait CtxPtr {
    fn as_ptr_u8(&self) -> *const u8;
}
impl CtxPtr for TracePointContext {
    fn as_ptr_u8(&self) -> *const u8 {
        use aya_ebpf::EbpfContext;
        self.as_ptr() as *const u8
    }
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if !is_target(tid) {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    let group_dead = read_field::<u8>(&ctx, cfg.exit_group_dead).unwrap_or(0) as u32;
    let _ = TIDS.remove(&tid);
    life_out(&ExitRec {
        hdr: header(REC_EXIT, pid_tgid),
        group_dead,
        _pad: 0,
    });
    0
}

#[tracepoint(category = "signal", name = "signal_generate")]
pub fn signal_generate(ctx: TracePointContext) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let target: u32 = read_field::<i32>(&ctx, cfg.sig_gen_pid).unwrap_or(0) as u32;
    // SAFETY: copied out at once.
    let Some(value) = crate::target(target) else {
        return 0;
    };
    let tgid = value & TID_TGID_MASK;
    let sig = read_field::<i32>(&ctx, cfg.sig_sig).unwrap_or(0) as u32;
    if value & TID_THROTTLED != 0 && sig == cfg.throttle_signal {
        // The recorder's own (see Config::throttle_signal).
        return 0;
    }
    let mut hdr = header(REC_SIGNAL, bpf_get_current_pid_tgid());
    // The record is about the target, whoever sent it.
    hdr.pid = tgid;
    hdr.tid = target;
    let rec = SignalRec {
        hdr,
        sig,
        phase: SIG_GENERATED,
        code: read_field::<i32>(&ctx, cfg.sig_code).unwrap_or(0),
        errno: read_field::<i32>(&ctx, cfg.sig_errno).unwrap_or(0),
        result: read_field::<i32>(&ctx, cfg.sig_gen_result).unwrap_or(0),
        target_tid: target,
        sa_handler: 0,
    };
    life_out(&rec);
    0
}

#[tracepoint(category = "signal", name = "signal_deliver")]
pub fn signal_deliver(ctx: TracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if !is_target(tid) {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    let rec = SignalRec {
        hdr: header(REC_SIGNAL, pid_tgid),
        sig: read_field::<i32>(&ctx, cfg.sig_sig).unwrap_or(0) as u32,
        phase: SIG_DELIVERED,
        code: read_field::<i32>(&ctx, cfg.sig_code).unwrap_or(0),
        errno: read_field::<i32>(&ctx, cfg.sig_errno).unwrap_or(0),
        result: 0,
        target_tid: tid,
        sa_handler: read_field::<u64>(&ctx, cfg.sig_del_sa_handler).unwrap_or(0),
    };
    life_out(&rec);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
