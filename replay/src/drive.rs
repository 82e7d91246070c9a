//! Driving a replayed thread with ptrace: run to its next syscall (which is
//! then skipped unless the replay chooses to execute it), emulate or execute
//! that syscall, run to a recorded state. Every kernel call goes through
//! `sys`.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nix::sys::{signal::Signal, wait::WaitStatus};

use crate::{sys, ReplayError};

pub use crate::sys::Regs;

/// Writes bytes into the replayed process.
pub type Poke<'a> = dyn Fn(u64, &[u8]) -> Result<(), ReplayError> + 'a;
/// Reads a byte of the replayed process.
pub type Peek<'a> = dyn Fn(u64) -> Result<u8, ReplayError> + 'a;

/// Where a resumed thread stopped.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// At the entry of a syscall, which will not run unless executed.
    SyscallEntry(Regs),
    /// The process exited (code, signal).
    Exited((i32, u32)),
    /// A signal arrived that the log did not announce.
    Signal(i32),
    /// Reached the requested state.
    Reached,
    /// At a sync breakpoint (`rip` put back on it): the thread is about to
    /// enter a recorded synchronisation function. Made from a SIGTRAP stop
    /// by the epoch's run, which knows its breakpoints.
    Breakpoint(Regs),
    /// The time slice ran out.
    Timeout,
    /// Anything else, described.
    Other(&'static str),
}

fn err(op: &'static str, tid: u32) -> impl Fn(std::io::Error) -> ReplayError {
    move |source| ReplayError::Sys {
        op,
        pid: tid,
        source,
    }
}

fn stop_err(tid: u32, status: WaitStatus, during: &'static str) -> ReplayError {
    ReplayError::UnexpectedStop {
        tid,
        status: format!("{status:?}"),
        during,
    }
}

/// How long after its SIGSTOP a waited-for thread may stay a zombie before
/// the watchdog reaps its dead siblings for it.
const DEAD_GRACE_MS: u64 = 500;

/// Sends SIGSTOP to a thread that overstays its time slice, so a blocking
/// wait returns; if the thread turns out dead (a zombie leader whose
/// siblings are not reaped, which no wait on it would ever report), reaps
/// the siblings so that the wait returns. One per worker thread.
#[derive(Debug, Clone)]
pub struct Watchdog {
    inner: Arc<WatchInner>,
}

#[derive(Debug, Default)]
struct WatchInner {
    pid: AtomicU32,
    tid: AtomicU32,
    deadline_ms: AtomicU64,
    fired: AtomicBool,
    quit: AtomicBool,
}

fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl Watchdog {
    pub fn start() -> Watchdog {
        let inner = Arc::new(WatchInner::default());
        let w = inner.clone();
        std::thread::spawn(move || {
            while !w.quit.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                let d = w.deadline_ms.load(Ordering::Acquire);
                let (p, t) = (w.pid.load(Ordering::Acquire), w.tid.load(Ordering::Acquire));
                if d != 0 && now_ms() > d && !w.fired.swap(true, Ordering::AcqRel) {
                    let _ = sys::tgkill(p, t, libc::SIGSTOP);
                } else if d != 0 && now_ms() > d + DEAD_GRACE_MS && sys::is_zombie(p, t) {
                    // The process died while its leader was waited for: the
                    // leader reports only once its other threads are reaped.
                    sys::reap_threads(p, t);
                }
            }
        });
        Watchdog { inner }
    }

    fn arm(&self, pid: u32, tid: u32, slice: Duration) {
        self.inner.pid.store(pid, Ordering::Release);
        self.inner.tid.store(tid, Ordering::Release);
        self.inner.fired.store(false, Ordering::Release);
        self.inner
            .deadline_ms
            .store(now_ms() + slice.as_millis() as u64, Ordering::Release);
    }

    /// Disarms; true if it fired.
    fn disarm(&self) -> bool {
        self.inner.deadline_ms.store(0, Ordering::Release);
        self.inner.fired.load(Ordering::Acquire)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) == 2 {
            self.inner.quit.store(true, Ordering::Relaxed);
        }
    }
}

/// A driver for the threads of one replayed process.
#[derive(Debug, Clone)]
pub struct Driver {
    pub pid: u32,
    watchdog: Watchdog,
}

impl Driver {
    pub fn new(pid: u32, watchdog: Watchdog) -> Driver {
        Driver { pid, watchdog }
    }

    /// Waits for `tid`'s next stop, with the time slice.
    fn wait(&self, tid: u32, slice: Duration) -> Result<WaitStatus, ReplayError> {
        self.watchdog.arm(self.pid, tid, slice);
        let st = sys::wait(tid);
        let fired = self.watchdog.disarm();
        let st = st.map_err(err("waiting for a replayed thread", tid))?;
        if fired {
            if let WaitStatus::Stopped(_, Signal::SIGSTOP) = st {
                return Ok(WaitStatus::StillAlive); // means: timed out
            }
        }
        Ok(st)
    }

    /// Resumes `tid` until its next syscall entry (PTRACE_SYSEMU: that
    /// syscall will be skipped unless `execute` is called).
    pub fn run_to_syscall(&self, tid: u32, slice: Duration) -> Result<Stop, ReplayError> {
        let mut st;
        let mut spurious = 0;
        loop {
            sys::sysemu(tid).map_err(err("PTRACE_SYSEMU", tid))?;
            st = self.wait(tid, slice)?;
            // An interrupt-stop nobody asked for here: the kernel notifies
            // the tracer of a SIGCONT to a seized tracee with one (replay
            // delivers the SIGCONTs the recording saw). Go on.
            let notify = matches!(
                st,
                WaitStatus::PtraceEvent(_, Signal::SIGTRAP, libc::PTRACE_EVENT_STOP)
            );
            if !notify || spurious == 4 {
                break;
            }
            spurious += 1;
        }
        self.stop_of(tid, st)
    }

    /// Runs `tid` until it writes the 4 bytes at `addr` (then
    /// `Stop::Reached`, right after the writing instruction) or stops
    /// otherwise, at a syscall entry say (which it does not make).
    pub fn run_until_write(
        &self,
        tid: u32,
        addr: u64,
        slice: Duration,
    ) -> Result<Stop, ReplayError> {
        sys::hw_watch(tid, Some(addr)).map_err(err("setting a debug register", tid))?;
        let stop = match self.run_to_syscall(tid, slice)? {
            Stop::Signal(libc::SIGTRAP)
                if sys::hw_watch_hit(tid).map_err(err("reading DR6", tid))? =>
            {
                Stop::Reached
            }
            other => other,
        };
        sys::hw_watch(tid, None).map_err(err("clearing a debug register", tid))?;
        Ok(stop)
    }

    /// Executes one instruction of `tid` (stopped where it can run on):
    /// `Stop::Reached` after it.
    pub fn step(&self, tid: u32) -> Result<Stop, ReplayError> {
        sys::step(tid).map_err(err("PTRACE_SINGLESTEP", tid))?;
        match self.wait(tid, Duration::from_secs(1))? {
            WaitStatus::Stopped(_, Signal::SIGTRAP) => Ok(Stop::Reached),
            other => self.stop_of(tid, other),
        }
    }

    /// What a wait status (from `wait`, so StillAlive is a timeout) means.
    fn stop_of(&self, tid: u32, st: WaitStatus) -> Result<Stop, ReplayError> {
        Ok(match st {
            WaitStatus::StillAlive => {
                self.interrupt_and_settle(tid);
                Stop::Timeout
            }
            WaitStatus::PtraceSyscall(_) => {
                Stop::SyscallEntry(sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?)
            }
            WaitStatus::Exited(_, code) => Stop::Exited((code, 0)),
            WaitStatus::Signaled(_, sig, _) => Stop::Exited((0, sig as u32)),
            WaitStatus::Stopped(_, sig) => Stop::Signal(sig as i32),
            WaitStatus::PtraceEvent(_, sig, event) => Stop::Other(match event {
                libc::PTRACE_EVENT_STOP if sig == Signal::SIGTRAP => "an unexpected interrupt-stop",
                libc::PTRACE_EVENT_STOP => "a group-stop (a stop signal took effect)",
                libc::PTRACE_EVENT_EXIT => "the thread exiting",
                libc::PTRACE_EVENT_EXEC => "an exec",
                libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                    "a clone, fork or vfork event"
                }
                _ => "an unexpected ptrace event",
            }),
            _ => Stop::Other("an unexpected stop"),
        })
    }

    /// After a timeout the thread sits in a SIGSTOP signal-delivery-stop,
    /// which is where we leave it (stopped, signal suppressed).
    fn interrupt_and_settle(&self, _tid: u32) {}

    /// At a SYSEMU entry stop: skip the syscall, return `ret`.
    pub fn emulate(&self, tid: u32, ret: i64) -> Result<i64, ReplayError> {
        self.set_return(tid, ret)?;
        Ok(ret)
    }

    /// At a signal-delivery-stop: the siginfo the signal will carry.
    pub fn set_siginfo(&self, tid: u32, info: &[u8]) -> Result<(), ReplayError> {
        sys::set_siginfo(tid, info).map_err(err("PTRACE_SETSIGINFO", tid))
    }

    pub fn sigmask(&self, tid: u32) -> Result<u64, ReplayError> {
        sys::sigmask(tid).map_err(err("PTRACE_GETSIGMASK", tid))
    }

    pub fn set_sigmask(&self, tid: u32, mask: u64) -> Result<(), ReplayError> {
        sys::set_sigmask(tid, mask).map_err(err("PTRACE_SETSIGMASK", tid))
    }

    pub fn regs(&self, tid: u32) -> Result<Regs, ReplayError> {
        sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))
    }

    pub fn set_regs(&self, tid: u32, r: Regs) -> Result<(), ReplayError> {
        sys::setregs(tid, r).map_err(err("PTRACE_SETREGS", tid))
    }

    pub fn set_return(&self, tid: u32, ret: i64) -> Result<(), ReplayError> {
        let mut r = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        r.rax = ret as u64;
        sys::setregs(tid, r).map_err(err("PTRACE_SETREGS", tid))
    }

    /// At a SYSEMU entry stop: run the syscall for real after all (with
    /// the thread's registers as they are); returns its result.
    pub fn execute(&self, tid: u32) -> Result<i64, ReplayError> {
        let r = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        self.execute_with(tid, r)
    }

    /// Runs the syscall for real and leaves the registers as the kernel
    /// left them (rt_sigreturn).
    pub fn execute_raw(&self, tid: u32) -> Result<(), ReplayError> {
        let mut r = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        r.rip -= 2;
        r.rax = r.orig_rax;
        sys::setregs(tid, r).map_err(err("PTRACE_SETREGS", tid))?;
        self.syscall_round_trip(tid).map(|_| ())
    }

    /// Like `execute`, with changed arguments (`regs` as read at the stop).
    pub fn execute_with(&self, tid: u32, mut regs: Regs) -> Result<i64, ReplayError> {
        // The program's own argument registers, not the changed ones.
        let saved_args = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        regs.rip -= 2;
        regs.rax = regs.orig_rax;
        sys::setregs(tid, regs).map_err(err("PTRACE_SETREGS", tid))?;
        let (ret, _) = self.syscall_round_trip(tid)?;
        // The program sees its own argument registers back, as after a real
        // syscall (only rax, rcx and r11 change).
        let mut after = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        after.rdi = saved_args.rdi;
        after.rsi = saved_args.rsi;
        after.rdx = saved_args.rdx;
        after.r10 = saved_args.r10;
        after.r8 = saved_args.r8;
        after.r9 = saved_args.r9;
        sys::setregs(tid, after).map_err(err("PTRACE_SETREGS", tid))?;
        Ok(ret)
    }

    /// Re-enters the `syscall` instruction with PTRACE_SYSCALL: entry stop,
    /// then exit stop. Returns the result and a new thread, if one was born.
    fn syscall_round_trip(&self, tid: u32) -> Result<(i64, Option<u32>), ReplayError> {
        const ENOSYS: u64 = -38i64 as u64;
        let insn = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?.rip;
        sys::to_syscall(tid).map_err(err("PTRACE_SYSCALL", tid))?;
        let mut child = None;
        let mut entered = false;
        loop {
            match self.wait(tid, Duration::from_secs(10))? {
                // Resumed from a SYSEMU stop, the skipped syscall first
                // reports its exit (rip still at the instruction): go on.
                WaitStatus::PtraceSyscall(_) if !entered => {
                    let r = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
                    entered = r.rip == insn + 2 && r.rax == ENOSYS;
                    sys::to_syscall(tid).map_err(err("PTRACE_SYSCALL", tid))?;
                }
                WaitStatus::PtraceSyscall(_) => {
                    let r = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
                    return Ok((r.rax as i64, child));
                }
                WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_CLONE => {
                    child = sys::event_msg(tid).ok().map(|c| c as u32);
                    sys::to_syscall(tid).map_err(err("PTRACE_SYSCALL", tid))?;
                }
                WaitStatus::PtraceEvent(..) => {
                    sys::to_syscall(tid).map_err(err("PTRACE_SYSCALL", tid))?;
                }
                other => return Err(stop_err(tid, other, "running a syscall for real")),
            }
        }
    }

    /// Runs syscall `nr` of our own in `tid` (stopped at a syscall entry)
    /// from the `syscall` instruction at `insn`, then puts its registers
    /// back. Returns the result.
    pub fn inject(&self, tid: u32, insn: u64, nr: u64, args: [u64; 6]) -> Result<i64, ReplayError> {
        let saved = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        let mut r = saved;
        r.rip = insn;
        r.rax = nr;
        r.orig_rax = nr;
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) =
            (args[0], args[1], args[2], args[3], args[4], args[5]);
        sys::setregs(tid, r).map_err(err("PTRACE_SETREGS", tid))?;
        let (ret, _) = self.syscall_round_trip(tid)?;
        sys::setregs(tid, saved).map_err(err("PTRACE_SETREGS", tid))?;
        Ok(ret)
    }

    /// At a SYSEMU stop on clone(CLONE_THREAD...): run it; returns the new
    /// live thread (stopped at its first stop).
    pub fn execute_clone(&self, tid: u32) -> Result<u32, ReplayError> {
        let mut r = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        r.rip -= 2;
        r.rax = r.orig_rax;
        sys::setregs(tid, r).map_err(err("PTRACE_SETREGS", tid))?;
        let (ret, child) = self.syscall_round_trip(tid)?;
        let Some(child) = child else {
            return Err(ReplayError::UnexpectedStop {
                tid,
                status: format!("clone returned {ret} without a clone event"),
                during: "creating a thread",
            });
        };
        // The new thread's first stop.
        match self.wait(child, Duration::from_secs(5))? {
            WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..) => Ok(child),
            other => Err(stop_err(child, other, "starting a new thread")),
        }
    }

    /// At a SYSEMU stop on a call that creates a process (fork, vfork, a
    /// clone without CLONE_THREAD): runs `call` (a clone(2) call's
    /// registers) instead, puts the program's argument registers back in
    /// both processes, and returns the result and the new process (its only
    /// thread stopped at its first stop).
    pub fn execute_fork(&self, tid: u32, call: Regs) -> Result<(i64, u32), ReplayError> {
        let orig = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        let mut r = call;
        r.rip = orig.rip - 2;
        r.rax = call.orig_rax;
        sys::setregs(tid, r).map_err(err("PTRACE_SETREGS", tid))?;
        let (ret, child) = self.syscall_round_trip(tid)?;
        let put_back = |t: u32, rax: u64| -> Result<(), ReplayError> {
            let mut a = sys::getregs(t).map_err(err("PTRACE_GETREGS", t))?;
            (a.rdi, a.rsi, a.rdx, a.r10, a.r8, a.r9) =
                (orig.rdi, orig.rsi, orig.rdx, orig.r10, orig.r8, orig.r9);
            a.orig_rax = orig.orig_rax;
            a.rax = rax;
            sys::setregs(t, a).map_err(err("PTRACE_SETREGS", t))
        };
        put_back(tid, ret as u64)?;
        let Some(child) = child else {
            return Ok((ret, 0));
        };
        match self.wait(child, Duration::from_secs(5))? {
            WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..) => {}
            other => return Err(stop_err(child, other, "starting a new process")),
        }
        put_back(child, 0)?;
        Ok((ret, child))
    }

    /// Delivers `sig` (with `info`, the recorded siginfo) to a stopped
    /// thread and stops it as the handler starts, before it runs any of it
    /// (where the recorder stops a thread it caught taking a signal).
    pub fn deliver_and_stop(
        &self,
        tid: u32,
        sig: i32,
        info: Option<&[u8]>,
    ) -> Result<Stop, ReplayError> {
        self.tgkill(tid, sig)?;
        // SYSEMU, not CONT: should the signal be blocked after all, the
        // thread stops at its next syscall instead of making it for real.
        sys::sysemu(tid).map_err(err("PTRACE_SYSEMU", tid))?;
        match self.wait(tid, Duration::from_secs(5))? {
            WaitStatus::Stopped(_, s) if s as i32 == sig => {}
            WaitStatus::PtraceSyscall(_) => {
                return Ok(Stop::Other("a syscall: the signal was blocked"))
            }
            WaitStatus::StillAlive => return Ok(Stop::Timeout),
            WaitStatus::Stopped(_, s) => return Ok(Stop::Signal(s as i32)),
            WaitStatus::Exited(_, code) => return Ok(Stop::Exited((code, 0))),
            WaitStatus::Signaled(_, s, _) => return Ok(Stop::Exited((0, s as u32))),
            _ => return Ok(Stop::Other("an unexpected stop")),
        }
        if let Some(info) = info {
            self.set_siginfo(tid, info)?;
        }
        self.enter_handler(tid, sig)
    }

    /// From a signal-delivery-stop: delivers `sig` and stops the thread as
    /// its handler starts (or, for a signal without one, where it goes on).
    pub fn enter_handler(&self, tid: u32, sig: i32) -> Result<Stop, ReplayError> {
        sys::interrupt(tid).map_err(err("PTRACE_INTERRUPT", tid))?;
        sys::cont_signal(tid, sig).map_err(err("PTRACE_CONT", tid))?;
        match self.wait(tid, Duration::from_secs(5))? {
            WaitStatus::PtraceEvent(..) => Ok(Stop::Reached),
            WaitStatus::Exited(_, code) => Ok(Stop::Exited((code, 0))),
            WaitStatus::Signaled(_, s, _) => Ok(Stop::Exited((0, s as u32))),
            WaitStatus::StillAlive => Ok(Stop::Timeout),
            _ => Ok(Stop::Other("an unexpected stop")),
        }
    }

    /// A driver for another process (a child the replay created), sharing
    /// this one's watchdog.
    pub fn for_process(&self, pid: u32) -> Driver {
        Driver::new(pid, self.watchdog.clone())
    }

    /// At a SYSEMU stop on exit/exit_group: let it run. Returns the
    /// process's status when the whole process ended.
    pub fn execute_exit(&self, tid: u32, group: bool) -> Result<Option<(i32, u32)>, ReplayError> {
        let mut r = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        r.rip -= 2;
        r.rax = r.orig_rax;
        sys::setregs(tid, r).map_err(err("PTRACE_SETREGS", tid))?;
        sys::cont(tid).map_err(err("PTRACE_CONT", tid))?;
        let target = if group { self.pid } else { tid };
        loop {
            let status = if group {
                // The leader reports only once its other threads, dying
                // too, are reaped: a blocking wait on it would never end.
                sys::reap_threads(self.pid, self.pid);
                match sys::wait_timeout(target, Duration::from_millis(1)) {
                    Ok(WaitStatus::StillAlive) => continue,
                    other => other,
                }
            } else {
                sys::wait(target)
            };
            match status.map_err(err("waiting for an exit", target))? {
                WaitStatus::Exited(p, code) if p.as_raw() as u32 == self.pid => {
                    return Ok(Some((code, 0)))
                }
                WaitStatus::Signaled(p, sig, _) if p.as_raw() as u32 == self.pid => {
                    return Ok(Some((0, sig as u32)))
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => return Ok(None),
                WaitStatus::PtraceEvent(p, _, _) | WaitStatus::Stopped(p, _) => {
                    let _ = sys::cont(p.as_raw() as u32);
                }
                _ => {}
            }
        }
    }

    pub fn tgkill(&self, tid: u32, sig: i32) -> Result<(), ReplayError> {
        sys::tgkill(self.pid, tid, sig).map_err(err("tgkill", tid))
    }

    /// Runs `tid` until it is at `rip` with the general registers of
    /// `target` (27 words): a breakpoint at `rip`, re-armed until the
    /// registers match. Syscalls on the way stop it (and are skipped).
    pub fn run_to_state(
        &self,
        tid: u32,
        target: &[u64],
        fpregs: &[u8],
        slice: Duration,
        mem: &Poke<'_>,
        peek: &Peek<'_>,
    ) -> Result<Stop, ReplayError> {
        let rip = target[16];
        // Same general registers in another iteration of a loop can still
        // differ in the FPU/SSE ones: both must match.
        let reached = |r: &Regs| -> Result<bool, ReplayError> {
            if !matches_state(r, target) {
                return Ok(false);
            }
            if fpregs.is_empty() {
                return Ok(true);
            }
            let fx = sys::xstate(tid).map_err(err("PTRACE_GETREGSET", tid))?;
            Ok(crate::compare::fx_equal(fpregs, &fx))
        };
        let cur = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
        if reached(&cur)? {
            return Ok(Stop::Reached);
        }
        let deadline = Instant::now() + slice;
        if sys::hw_breakpoint(tid, Some(rip)).is_ok() {
            let stop = self.run_to_hw_breakpoint(tid, rip, deadline, &reached);
            sys::hw_breakpoint(tid, None).map_err(err("clearing a debug register", tid))?;
            return stop;
        }
        let orig = peek(rip)?;
        loop {
            mem(rip, &[0xcc])?;
            sys::sysemu(tid).map_err(err("PTRACE_SYSEMU", tid))?;
            let st = self.wait(
                tid,
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
            mem(rip, &[orig])?;
            match st? {
                WaitStatus::Stopped(_, Signal::SIGTRAP) => {
                    let mut r = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
                    if r.rip != rip + 1 {
                        return Ok(Stop::Signal(libc::SIGTRAP));
                    }
                    r.rip = rip;
                    sys::setregs(tid, r).map_err(err("PTRACE_SETREGS", tid))?;
                    if reached(&r)? {
                        return Ok(Stop::Reached);
                    }
                    // Step over the original instruction, then re-arm.
                    sys::step(tid).map_err(err("PTRACE_SINGLESTEP", tid))?;
                    match self.wait(tid, Duration::from_secs(1))? {
                        WaitStatus::Stopped(_, Signal::SIGTRAP) => {}
                        WaitStatus::PtraceSyscall(_) => {
                            return Ok(Stop::SyscallEntry(
                                sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?,
                            ))
                        }
                        _ => return Ok(Stop::Other("lost the thread while stepping")),
                    }
                    if Instant::now() > deadline {
                        return Ok(Stop::Timeout);
                    }
                }
                other => return self.stop_of(tid, other),
            }
        }
    }
}

impl Driver {
    /// The loop of `run_to_state` with an armed hardware breakpoint at
    /// `rip`: one stop per hit (the int3 way takes two and two pokes).
    fn run_to_hw_breakpoint(
        &self,
        tid: u32,
        rip: u64,
        deadline: Instant,
        reached: &dyn Fn(&Regs) -> Result<bool, ReplayError>,
    ) -> Result<Stop, ReplayError> {
        loop {
            sys::sysemu(tid).map_err(err("PTRACE_SYSEMU", tid))?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait(tid, left.max(Duration::from_millis(1)))? {
                WaitStatus::Stopped(_, Signal::SIGTRAP) => {
                    let r = sys::getregs(tid).map_err(err("PTRACE_GETREGS", tid))?;
                    if r.rip != rip {
                        return Ok(Stop::Signal(libc::SIGTRAP));
                    }
                    if reached(&r)? {
                        return Ok(Stop::Reached);
                    }
                    if Instant::now() > deadline {
                        return Ok(Stop::Timeout);
                    }
                }
                other => return self.stop_of(tid, other),
            }
        }
    }
}

/// The general-purpose registers that identify a point in a computation.
fn matches_state(r: &Regs, t: &[u64]) -> bool {
    let live = [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi,
    ];
    // Flags too (a loop's iterations can differ only there), but for the
    // resume and trap flags, which our stepping changes.
    const RF_TF: u64 = 0x1_0100;
    live[..] == t[..15]
        && r.rip == t[16]
        && r.rsp == t[19]
        && r.fs_base == t[21]
        && (r.eflags ^ t[18]) & !RF_TF == 0
}
