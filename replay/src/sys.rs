//! The replayer's only way into the system: fork, ptrace, /proc and
//! affinity calls, as thin typed wrappers. The restore and compare logic
//! lives in `restore` and `compare`; nothing else in the crate makes a
//! system call of its own.

use std::{
    fs::File,
    io,
    os::unix::fs::{FileExt, OpenOptionsExt},
    time::{Duration, Instant},
};

use nix::{
    sys::{
        ptrace::{self, Options},
        signal::Signal,
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};

pub use libc::user_regs_struct as Regs;

/// `PTRACE_EVENT_STOP`: the stop of PTRACE_INTERRUPT, of a new seized
/// thread, and of a group-stop under PTRACE_SEIZE.
pub const PTRACE_EVENT_STOP: i32 = 128;

fn pid(tid: u32) -> Pid {
    Pid::from_raw(tid as i32)
}

fn io(e: nix::Error) -> io::Error {
    e.into()
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Forks a stub child that asks to be killed when the forking thread dies,
/// closes every descriptor, and then waits in `pause()` forever (the
/// caller knows the prologue is done when it finds the child in pause). The child
/// runs only async-signal-safe code (raw syscalls), so the parent may be
/// multi-threaded.
pub fn fork_stub() -> io::Result<u32> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only makes raw syscalls (async-signal-safe) and
    // never returns into Rust code: it ends in `_exit` or is killed.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        // SAFETY: raw syscalls with integer arguments; `_exit` never returns.
        unsafe {
            libc::syscall(
                libc::SYS_prctl,
                libc::PR_SET_PDEATHSIG as libc::c_long,
                libc::SIGKILL as libc::c_long,
            );
            if libc::syscall(libc::SYS_getppid) != parent as libc::c_long {
                libc::_exit(1);
            }
            libc::syscall(
                libc::SYS_close_range,
                0 as libc::c_long,
                libc::c_uint::MAX as libc::c_long,
                0 as libc::c_long,
            );
            loop {
                libc::syscall(libc::SYS_pause);
            }
        }
    }
    Ok(child as u32)
}

/// Attaches to `tid` with PTRACE_SEIZE: new threads are followed, syscall
/// stops are told apart, and the tracee dies if the tracer does.
pub fn seize(tid: u32) -> io::Result<()> {
    let opts =
        Options::PTRACE_O_TRACECLONE | Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_EXITKILL;
    ptrace::seize(pid(tid), opts).map_err(io)
}

pub fn interrupt(tid: u32) -> io::Result<()> {
    ptrace::interrupt(pid(tid)).map_err(io)
}

pub fn cont(tid: u32) -> io::Result<()> {
    ptrace::cont(pid(tid), None::<Signal>).map_err(io)
}

/// Resumes to the next syscall entry or exit stop.
pub fn to_syscall(tid: u32) -> io::Result<()> {
    ptrace::syscall(pid(tid), None::<Signal>).map_err(io)
}

pub fn getregs(tid: u32) -> io::Result<Regs> {
    ptrace::getregs(pid(tid)).map_err(io)
}

pub fn setregs(tid: u32, regs: Regs) -> io::Result<()> {
    ptrace::setregs(pid(tid), regs).map_err(io)
}

pub fn event_msg(tid: u32) -> io::Result<u64> {
    ptrace::getevent(pid(tid)).map(|v| v as u64).map_err(io)
}

const NT_X86_XSTATE: usize = 0x202;

/// The thread's XSAVE area (NT_X86_XSTATE).
pub fn xstate(tid: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 16384];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: iov points at `buf`, which outlives the call; the kernel
    // writes at most iov_len bytes and updates iov_len.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid as libc::pid_t,
            NT_X86_XSTATE,
            &mut iov as *mut libc::iovec,
        )
    };
    check(r)?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Sets the thread's FPU state: an XSAVE area (NT_X86_XSTATE), or a bare
/// 512-byte FXSAVE area (PTRACE_SETFPREGS).
pub fn set_fpu(tid: u32, area: &[u8]) -> io::Result<()> {
    let mut copy = area.to_vec();
    let r = if copy.len() == 512 {
        // SAFETY: PTRACE_SETFPREGS reads a 512-byte user_fpregs_struct
        // from `copy`, which is exactly that long and outlives the call.
        unsafe {
            libc::ptrace(
                libc::PTRACE_SETFPREGS,
                tid as libc::pid_t,
                0usize,
                copy.as_mut_ptr(),
            )
        }
    } else {
        let mut iov = libc::iovec {
            iov_base: copy.as_mut_ptr().cast(),
            iov_len: copy.len(),
        };
        // SAFETY: iov describes `copy`, which outlives the call; the
        // kernel only reads iov_len bytes from it.
        unsafe {
            libc::ptrace(
                libc::PTRACE_SETREGSET,
                tid as libc::pid_t,
                NT_X86_XSTATE,
                &mut iov as *mut libc::iovec,
            )
        }
    };
    check(r).map(|_| ())
}

/// The thread's blocked-signal mask (PTRACE_GETSIGMASK).
pub fn sigmask(tid: u32) -> io::Result<u64> {
    const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
    let mut mask = 0u64;
    // SAFETY: the kernel writes 8 bytes (the size passed) to `mask`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            tid as libc::pid_t,
            8usize,
            &mut mask as *mut u64,
        )
    };
    check(r).map(|_| mask)
}

/// Sets the thread's blocked-signal mask (PTRACE_SETSIGMASK).
pub fn set_sigmask(tid: u32, mask: u64) -> io::Result<()> {
    const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
    // SAFETY: the kernel reads 8 bytes (the size passed) from `mask`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SETSIGMASK,
            tid as libc::pid_t,
            8usize,
            &mask as *const u64,
        )
    };
    check(r).map(|_| ())
}

/// The thread's rseq registration: (area, length, signature), if any.
pub fn rseq_config(tid: u32) -> io::Result<Option<(u64, u32, u32)>> {
    const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
    #[repr(C)]
    #[derive(Default)]
    struct Conf {
        pointer: u64,
        size: u32,
        signature: u32,
        flags: u32,
        pad: u32,
    }
    let mut conf = Conf::default();
    // SAFETY: the kernel writes at most the size passed into `conf`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid as libc::pid_t,
            std::mem::size_of::<Conf>(),
            &mut conf as *mut Conf,
        )
    };
    check(r)?;
    Ok((conf.pointer != 0).then_some((conf.pointer, conf.size, conf.signature)))
}

/// Resumes until the next syscall entry, where the syscall is skipped
/// (PTRACE_SYSEMU) unless the replayer runs it after all.
pub fn sysemu(tid: u32) -> io::Result<()> {
    ptrace::sysemu(pid(tid), None).map_err(io)
}

/// Sets the siginfo of the signal a thread in a signal-delivery-stop is
/// about to receive, from its raw bytes (short input is zero-padded).
pub fn set_siginfo(tid: u32, raw: &[u8]) -> io::Result<()> {
    let mut bytes = [0u8; std::mem::size_of::<libc::siginfo_t>()];
    let n = raw.len().min(bytes.len());
    bytes[..n].copy_from_slice(&raw[..n]);
    // SAFETY: siginfo_t is plain data of exactly this size; any bytes are a
    // valid value for the kernel to check.
    let info: libc::siginfo_t = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    ptrace::setsiginfo(pid(tid), &info).map_err(io)
}

/// `offsetof(struct user, u_debugreg)` on x86-64 (`sys/user.h`).
const DEBUGREG_OFFSET: usize = 848;

/// Arms (`Some(addr)`) or disarms (`None`) an execute breakpoint in debug
/// register 0 of `tid`. When it fires the thread stops with SIGTRAP before
/// running the instruction at `addr`, and the kernel sets eflags.RF so that
/// resuming runs that instruction instead of trapping again: no memory
/// patch and no single step per hit.
pub fn hw_breakpoint(tid: u32, addr: Option<u64>) -> io::Result<()> {
    let dr = |i: usize| (DEBUGREG_OFFSET + i * 8) as ptrace::AddressType;
    // DR7 first, so that DR0 never changes under an armed breakpoint.
    ptrace::write_user(pid(tid), dr(7), 0).map_err(io)?;
    if let Some(addr) = addr {
        ptrace::write_user(pid(tid), dr(0), addr as libc::c_long).map_err(io)?;
        // L0 enabled; R/W0 = 00 (execute) and LEN0 = 00, as execute needs.
        ptrace::write_user(pid(tid), dr(7), 1).map_err(io)?;
    }
    Ok(())
}

/// Arms (`Some(addr)`) or disarms (`None`) a watchpoint on writes to the
/// 4 bytes at `addr` (4-aligned) in debug register 1 of `tid`: the thread
/// stops with SIGTRAP right after the instruction that wrote there.
pub fn hw_watch(tid: u32, addr: Option<u64>) -> io::Result<()> {
    let dr = |i: usize| (DEBUGREG_OFFSET + i * 8) as ptrace::AddressType;
    ptrace::write_user(pid(tid), dr(7), 0).map_err(io)?;
    ptrace::write_user(pid(tid), dr(6), 0).map_err(io)?;
    if let Some(addr) = addr {
        ptrace::write_user(pid(tid), dr(1), addr as libc::c_long).map_err(io)?;
        // L1 enabled; R/W1 = 01 (data writes), LEN1 = 11 (4 bytes).
        const DR7_L1_WRITE_4: libc::c_long = (1 << 2) | (1 << 20) | (3 << 22);
        ptrace::write_user(pid(tid), dr(7), DR7_L1_WRITE_4).map_err(io)?;
    }
    Ok(())
}

/// Whether the last SIGTRAP of `tid` came from the watchpoint of
/// `hw_watch` (debug status register, bit B1).
pub fn hw_watch_hit(tid: u32) -> io::Result<bool> {
    let dr6 = ptrace::read_user(pid(tid), (DEBUGREG_OFFSET + 6 * 8) as ptrace::AddressType)
        .map_err(io)?;
    Ok(dr6 & 2 != 0)
}

/// Executes one instruction.
pub fn step(tid: u32) -> io::Result<()> {
    ptrace::step(pid(tid), None).map_err(io)
}

/// Resumes, delivering `sig` first (from a signal-delivery-stop).
pub fn cont_signal(tid: u32, sig: i32) -> io::Result<()> {
    let sig = nix::sys::signal::Signal::try_from(sig).map_err(io)?;
    ptrace::cont(pid(tid), Some(sig)).map_err(io)
}

/// Sends `sig` to thread `tid` of process `tgid`.
pub fn tgkill(tgid: u32, tid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid as i64, tid as i64, sig as i64) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks until `tid` changes state (any kind of stop or death).
pub fn wait(tid: u32) -> io::Result<WaitStatus> {
    loop {
        match waitpid(pid(tid), Some(WaitPidFlag::__WALL)) {
            Err(nix::Error::EINTR) => continue,
            r => return r.map_err(io),
        }
    }
}

/// Like [`wait`], but gives up after `timeout` (returning `StillAlive`).
pub fn wait_timeout(tid: u32, timeout: Duration) -> io::Result<WaitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(pid(tid), Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(nix::Error::EINTR) => {}
            r => return r.map_err(io),
        }
    }
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill takes no pointers; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Pins thread `tid` to `cpu`.
pub fn pin(tid: u32, cpu: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(io)?;
    nix::sched::sched_setaffinity(pid(tid), &set).map_err(io)
}

/// The address of the first `syscall` instruction (0f 05) in this
/// process's own vDSO (shared by a child forked from it).
pub fn own_vdso_syscall() -> Option<u64> {
    let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").ok()?);
    let v = maps.iter().find(|m| m.path == "[vdso]")?;
    let mem = Mem::open_self().ok()?;
    let mut image = vec![0u8; (v.end - v.start) as usize];
    let n = mem.read(v.start, &mut image).ok()?;
    image[..n]
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|p| v.start + p as u64)
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub path: String,
}

pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(_inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(a, 16),
            u64::from_str_radix(b, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        out.push(MapEntry {
            start,
            end,
            perms: perms.to_string(),
            offset,
            path: f.next().unwrap_or("").trim_start().to_string(),
        });
    }
    out
}

pub fn maps(pid: u32) -> io::Result<Vec<MapEntry>> {
    Ok(parse_maps(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

/// The threads of `pid` (/proc/PID/task), leader first; empty if gone.
/// Whether thread `tid` of `pid` is dead and not reaped.
pub fn is_zombie(pid: u32, tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with(['Z', 'X']))
        })
        .unwrap_or(false)
}

/// Reaps the dead threads of `pid` other than `except` (any thread of this
/// process may reap a tracee of another).
pub fn reap_threads(pid: u32, except: u32) {
    for t in task_tids(pid).into_iter().filter(|&t| t != except) {
        let _ = waitpid(
            self::pid(t),
            Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG),
        );
    }
}

pub fn task_tids(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_by_key(|&t| (t != pid, t));
    tids
}

/// Caught and ignored signal sets of `pid` (SigCgt, SigIgn).
pub fn signal_sets(pid: u32) -> io::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    Ok((field("SigCgt:"), field("SigIgn:")))
}

/// Reads a whole file (a mapped file's copy in the trace) at `offset`.
pub fn read_file_at(path: &std::path::Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let f = File::open(path)?;
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A process's memory through /proc/PID/mem, which reads and writes every
/// mapping, read-only and PROT_NONE ones included.
#[derive(Debug)]
pub struct Mem(File);

impl Mem {
    pub fn open(pid: u32) -> io::Result<Mem> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/proc/{pid}/mem"))
            .map(Mem)
    }

    fn open_self() -> io::Result<Mem> {
        File::open("/proc/self/mem").map(Mem)
    }

    /// Reads as much of `buf` as is readable from `addr` on; returns the
    /// bytes read (short at the first unreadable page).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], addr + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(done)
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_parse_maps() {
        let m = parse_maps(
            "55d0-55e0 r-xp 00001000 08:01 123    /usr/bin/x y\n\
             7ffd-7ffe rw-p 00000000 00:00 0                          [stack]\n\
             1000-2000 rw-p 00000000 00:00 0 \n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0].start, m[0].end, m[0].offset),
            (0x55d0, 0x55e0, 0x1000)
        );
        assert_eq!(m[0].path, "/usr/bin/x y");
        assert_eq!(m[1].path, "[stack]");
        assert_eq!(m[2].path, "");
    }

    #[test]
    fn sys_own_vdso_has_syscall() {
        assert!(own_vdso_syscall().is_some());
    }
}
