//! ptrace and /proc/PID/mem: the supervisor's only way into the target.
//! Thin, typed wrappers; the logic that uses them lives in `supervisor`.

use std::{fs::File, io, os::unix::fs::FileExt};

use nix::{
    sys::{
        ptrace::{self, Options},
        signal::Signal,
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};

pub use libc::user_regs_struct as Regs;

fn pid(tid: u32) -> Pid {
    Pid::from_raw(tid as i32)
}

fn io(e: nix::Error) -> io::Error {
    e.into()
}

/// Options every tracee gets: follow every new thread and process, report
/// execs, and tell syscall stops apart from signal stops.
pub fn options() -> Options {
    Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACESYSGOOD
}

pub fn seize(tid: u32) -> io::Result<()> {
    ptrace::seize(pid(tid), options()).map_err(io)
}

pub fn interrupt(tid: u32) -> io::Result<()> {
    ptrace::interrupt(pid(tid)).map_err(io)
}

pub fn cont(tid: u32, sig: Option<i32>) -> io::Result<()> {
    let sig = sig.and_then(|s| Signal::try_from(s).ok());
    ptrace::cont(pid(tid), sig).map_err(io)
}

/// Resumes (delivering `sig`) to the next syscall entry or exit stop.
pub fn to_syscall(tid: u32, sig: Option<i32>) -> io::Result<()> {
    let sig = sig.and_then(|s| Signal::try_from(s).ok());
    ptrace::syscall(pid(tid), sig).map_err(io)
}

/// Keeps a group-stopped tracee stopped but lets it report further events.
pub fn listen(tid: u32) -> io::Result<()> {
    const PTRACE_LISTEN: libc::c_uint = 0x4208;
    // SAFETY: PTRACE_LISTEN takes no pointers.
    let r = unsafe { libc::ptrace(PTRACE_LISTEN, tid as libc::pid_t, 0usize, 0usize) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn detach(tid: u32, sig: Option<i32>) -> io::Result<()> {
    let sig = sig.and_then(|s| Signal::try_from(s).ok());
    ptrace::detach(pid(tid), sig).map_err(io)
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

/// The thread's extended FPU state (XSAVE area, NT_X86_XSTATE).
pub fn xstate(tid: u32) -> io::Result<Vec<u8>> {
    const NT_X86_XSTATE: usize = 0x202;
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
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// The siginfo of the signal a thread in a signal-delivery-stop is about
/// to receive, as its 128 raw bytes.
pub fn siginfo(tid: u32) -> io::Result<Vec<u8>> {
    let info = ptrace::getsiginfo(pid(tid)).map_err(io)?;
    // SAFETY: siginfo_t is 128 bytes of plain data; we copy them out.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&info as *const libc::siginfo_t).cast::<u8>(),
            std::mem::size_of::<libc::siginfo_t>(),
        )
    };
    Ok(bytes.to_vec())
}

/// The thread's blocked-signal mask.
pub fn sigmask(tid: u32) -> io::Result<u64> {
    const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
    let mut mask = 0u64;
    // SAFETY: the kernel writes 8 bytes (the size passed) into `mask`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            tid as libc::pid_t,
            8usize,
            &mut mask as *mut u64,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mask)
}

/// One wait result for any tracee, without blocking.
pub fn wait_any() -> io::Result<Option<WaitStatus>> {
    match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => Ok(None),
        Ok(s) => Ok(Some(s)),
        Err(nix::Error::ECHILD) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The thread's rseq area (address, length), if it registered one.
pub fn rseq_area(tid: u32) -> Option<(u64, u32)> {
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
    (r >= 0 && conf.pointer != 0).then_some((conf.pointer, conf.size))
}

/// Blocks until some tracee or child of this process has an event for
/// `wait_any`, without consuming it. Fails with ECHILD when there is none
/// to wait for.
pub fn wait_pending() -> io::Result<()> {
    // SAFETY: waitid writes only the siginfo_t we pass; WNOWAIT leaves the
    // event for the supervisor's waitpid.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT | libc::__WALL,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A tracee's memory, read and written through /proc/PID/mem (which also
/// reaches read-only and PROT_NONE pages).
#[derive(Debug)]
pub struct Mem(File);

impl Mem {
    pub fn open(pid: u32) -> io::Result<Mem> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map(Mem)
    }

    /// Reads as much of `buf` as is mapped; returns the bytes read.
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

/// Copies `buf.len()` bytes at `start` of process `pid` into `buf` with
/// process_vm_readv (a direct copy, several times faster than
/// /proc/PID/mem's page-sized bounce buffer). Returns how many bytes from
/// `start` on were readable.
pub fn copy_into(pid: u32, start: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let remote = [nix::sys::uio::RemoteIoVec {
            base: (start + done as u64) as usize,
            len: buf.len() - done,
        }];
        let mut local = [io::IoSliceMut::new(&mut buf[done..])];
        match nix::sys::uio::process_vm_readv(
            nix::unistd::Pid::from_raw(pid as i32),
            &mut local,
            &remote,
        ) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done
}
