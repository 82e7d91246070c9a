//! Rebuilding one recorded process from a checkpoint in a fresh process.
//!
//! A stub child is forked and seized; its address space is emptied down to
//! one scratch page holding `syscall; int3`, from which every further
//! syscall is injected: the vDSO is placed where the recording had it, every
//! mapping is recreated at its address, the recorded pages are written
//! through /proc/PID/mem, signal handlers are installed and the other
//! threads are cloned. Finally every thread gets its recorded registers,
//! FPU state and signal mask, and is left in an interrupt-stop.

use std::collections::{BTreeMap, HashMap};

use nix::sys::wait::WaitStatus;
use tracelog::{Mapping, ProcessState, Trace, PAGE_SIZE};

use crate::{
    regs,
    sys::{self, Mem, Regs, PTRACE_EVENT_STOP},
    ReplayError,
};

const PAGE: u64 = PAGE_SIZE as u64;
/// Where in the scratch page injected syscalls read their arguments from.
const DATA_OFFSET: u64 = 0x100;
/// `syscall; int3`.
const STUB: [u8; 3] = [0x0f, 0x05, 0xcc];

// Syscall numbers (x86-64).
const SYS_CLOSE: u64 = 3;
const SYS_MMAP: u64 = 9;
const SYS_MPROTECT: u64 = 10;
const SYS_MUNMAP: u64 = 11;
const SYS_RT_SIGACTION: u64 = 13;
const SYS_CLONE: u64 = 56;
const SYS_SIGALTSTACK: u64 = 131;
const SYS_PRCTL: u64 = 157;
const SYS_ARCH_PRCTL: u64 = 158;
const SYS_SET_TID_ADDRESS: u64 = 218;
const SYS_OPENAT: u64 = 257;
const SYS_SET_ROBUST_LIST: u64 = 273;
const SYS_RSEQ: u64 = 334;

const ARCH_MAP_VDSO_64: u64 = 0x2003;
const RSEQ_FLAG_UNREGISTER: u64 = 1;
const PR_SET_VMA: u64 = 0x53564d41;
const PR_SET_VMA_ANON_NAME: u64 = 0;
const AT_FDCWD: u64 = -100i64 as u64;
/// `sizeof(struct robust_list_head)`.
const ROBUST_LIST_HEAD_LEN: u64 = 24;
/// glibc (x86-64, 2.3x) keeps `struct pthread` at the thread pointer, with
/// the thread's tid at +0x2d0 (the clear_child_tid address) and its robust
/// list head at +0x2e0 (the set_robust_list address).
const GLIBC_TID_OFFSET: u64 = 0x2d0;
const GLIBC_ROBUST_OFFSET: u64 = 0x2e0;

const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

/// Mappings the kernel provides, never recreated by mmap. Invariant: the
/// first three are the vDSO's. `[uprobes]` is where the kernel steps
/// through probed instructions of a process the recorder probed (sync
/// probes): nothing of the program's.
pub(crate) const KERNEL_MAPPINGS: [&str; 5] = [
    "[vvar]",
    "[vvar_vclock]",
    "[vdso]",
    "[vsyscall]",
    "[uprobes]",
];

/// A recorded process rebuilt under ptrace by [`restore`]. The thread that
/// called `restore` is its tracer (ptrace is per thread: use and drop it
/// there; the process is also killed when that thread exits); dropping it
/// (or [`Restored::kill`]) kills it and reaps every thread of it.
#[derive(Debug)]
pub struct Restored {
    /// PID of the live process.
    pub pid: u32,
    /// Recorded tid → live tid.
    pub tids: BTreeMap<u32, u32>,
    /// Address of a `syscall; int3` stub in the live process (one page,
    /// rwx; bytes from [`Restored::scratch`] + 0x100 on are free for
    /// injected syscalls' arguments).
    pub scratch: u64,
    mem: Mem,
    /// Every live thread we trace (leader first).
    live: Vec<u32>,
    alive: bool,
}

/// How a mapping was recreated: what its pages hold before the recorded
/// ones are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// Zero (fresh anonymous memory): write only the stored pages.
    Zero,
    /// Something else (a file, the kernel's vDSO): compare every page.
    Other,
}

/// Process `pid` as checkpoint `epoch` holds it.
pub(crate) fn checkpoint_process(
    trace: &Trace,
    epoch: u32,
    pid: u32,
) -> Result<ProcessState, ReplayError> {
    let cp = trace
        .checkpoint(epoch)
        .map_err(|source| ReplayError::Trace { epoch, source })?;
    cp.processes
        .into_iter()
        .find(|p| p.pid == pid)
        .ok_or(ReplayError::NoProcess { epoch, pid })
}

/// Restores process `pid` of checkpoint `epoch` into a fresh process under
/// ptrace (this thread is its tracer; every thread of it is left STOPPED in
/// a ptrace-stop, with the recorded registers, ready to be resumed by the
/// caller). `cpu`: pin the restored process to this CPU.
///
/// Threads are left in an interrupt-stop (`PTRACE_EVENT_STOP`) with exactly
/// the recorded registers. A thread recorded inside an interrupted syscall
/// (`rax` = -ERESTART*) is therefore restarted by the kernel itself when it
/// is resumed (`rax = orig_rax`, `rip -= 2`; `restart_syscall` for
/// -ERESTART_RESTARTBLOCK), exactly as the recorded thread was.
pub fn restore(
    trace: &Trace,
    epoch: u32,
    pid: u32,
    cpu: Option<usize>,
) -> Result<Restored, ReplayError> {
    let proc = &checkpoint_process(trace, epoch, pid)?;
    let unsupported = |reason: String| ReplayError::Unsupported { epoch, pid, reason };
    if proc.threads.is_empty() {
        return Err(unsupported("no threads".into()));
    }
    for t in &proc.threads {
        if t.regs.len() != 27 {
            return Err(unsupported(format!(
                "thread {} has {} register words, expected 27",
                t.tid,
                t.regs.len()
            )));
        }
    }
    let image = trace
        .checkpoint_memory(epoch, pid)
        .map_err(|source| ReplayError::Trace { epoch, source })?;

    let child = sys::fork_stub().map_err(ReplayError::sys("fork", 0))?;
    let mem = match Mem::open(child) {
        Ok(m) => m,
        Err(e) => {
            sys::kill(child, libc::SIGKILL);
            let _ = sys::wait(child);
            return Err(ReplayError::sys("open /proc/PID/mem", child)(e));
        }
    };
    // From here on, dropping `r` kills and reaps the child.
    let mut r = Restored {
        pid: child,
        tids: BTreeMap::new(),
        scratch: 0,
        mem,
        live: vec![child],
        alive: true,
    };
    sys::seize(child).map_err(ReplayError::sys("PTRACE_SEIZE", child))?;
    r.stop_in_pause()?;
    if let Some(cpu) = cpu {
        sys::pin(child, cpu).map_err(ReplayError::sys("sched_setaffinity", child))?;
    }
    let mut b = Builder {
        trace,
        proc,
        image: &image,
        r: &mut r,
        insn: 0,
        parked: HashMap::new(),
        vdso_offset: None,
        reprotect: Vec::new(),
        unsupported: &unsupported,
    };
    b.bootstrap()?;
    b.place_vdso()?;
    let fresh = b.create_mappings()?;
    b.write_pages(&fresh)?;
    b.reprotect()?;
    b.signal_handlers()?;
    b.threads(cpu)?;
    Ok(r)
}

struct Builder<'a> {
    trace: &'a Trace,
    proc: &'a ProcessState,
    image: &'a BTreeMap<u64, bytes::Bytes>,
    r: &'a mut Restored,
    /// Address of the `syscall` instruction injections run from.
    insn: u64,
    /// Live tid → whether it is in an interrupt-stop (else a syscall-exit
    /// stop after an injection).
    parked: HashMap<u32, bool>,
    /// Distance from [vvar] to [vdso] in the kernel's layout.
    vdso_offset: Option<u64>,
    /// Shared mappings created writable (only private ones can be written
    /// through /proc/PID/mem regardless of protection): their real
    /// protection, set once their pages are in.
    reprotect: Vec<(u64, u64, u64)>,
    unsupported: &'a dyn Fn(String) -> ReplayError,
}

impl Builder<'_> {
    fn pid(&self) -> u32 {
        self.r.pid
    }

    /// Injects one syscall into `tid` (leaving it in the syscall-exit stop);
    /// fails on a negative result.
    fn call(&mut self, tid: u32, what: &str, nr: u64, args: [u64; 6]) -> Result<u64, ReplayError> {
        let (ret, _) = self.r.run(tid, self.insn, nr, args)?;
        self.parked.insert(tid, false);
        if ret < 0 {
            return Err(ReplayError::Injected {
                what: what.to_string(),
                tid,
                errno: std::io::Error::from_raw_os_error((-ret) as i32),
            });
        }
        Ok(ret as u64)
    }

    /// Writes `bytes` (plus a NUL) at the scratch data area; returns its address.
    fn put(&self, bytes: &[u8]) -> Result<u64, ReplayError> {
        if bytes.len() + 1 > (PAGE - DATA_OFFSET) as usize {
            return Err((self.unsupported)(format!(
                "argument of {} bytes does not fit the scratch page",
                bytes.len()
            )));
        }
        let addr = self.r.scratch + DATA_OFFSET;
        let mut buf = bytes.to_vec();
        buf.push(0);
        self.r.write_memory(addr, &buf)?;
        Ok(addr)
    }

    /// Maps the scratch page, unregisters the stub's rseq, resets its
    /// alternate signal stack and unmaps everything else it had.
    fn bootstrap(&mut self) -> Result<(), ReplayError> {
        let pid = self.pid();
        // A `syscall` to bootstrap from: the stub sits in pause(), so the
        // two bytes before its rip are one; else one in the vDSO.
        let regs = sys::getregs(pid).map_err(ReplayError::sys("PTRACE_GETREGS", pid))?;
        let mut two = [0u8; 2];
        let at_rip = self.r.mem.read(regs.rip.wrapping_sub(2), &mut two).ok() == Some(2)
            && two == [0x0f, 0x05];
        self.insn = if at_rip {
            regs.rip - 2
        } else {
            sys::own_vdso_syscall()
                .ok_or_else(|| (self.unsupported)("no syscall instruction in the vDSO".into()))?
        };
        let stub_maps = sys::maps(pid).map_err(ReplayError::sys("read maps", pid))?;
        let scratch = free_page(&stub_maps, &self.proc.maps)
            .ok_or_else(|| (self.unsupported)("no free page for the scratch stub".into()))?;
        let prot = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
        let got = self.call(
            pid,
            "mmap of the scratch page",
            SYS_MMAP,
            [scratch, PAGE, prot, flags, u64::MAX, 0],
        )?;
        if got != scratch {
            return Err((self.unsupported)(format!(
                "scratch page mapped at {got:#x}, not {scratch:#x}"
            )));
        }
        self.r.write_memory(scratch, &STUB)?;
        self.r.scratch = scratch;
        self.insn = scratch;

        // rseq points into the TLS block about to be unmapped.
        if let Some((area, len, sig)) =
            sys::rseq_config(pid).map_err(ReplayError::sys("PTRACE_GET_RSEQ_CONFIGURATION", pid))?
        {
            self.call(
                pid,
                "rseq unregister",
                SYS_RSEQ,
                [area, len as u64, RSEQ_FLAG_UNREGISTER, sig as u64, 0, 0],
            )?;
        }
        // The fork inherited our thread's alternate signal stack.
        let mut ss = [0u8; 24];
        ss[8..12].copy_from_slice(&(libc::SS_DISABLE as u32).to_le_bytes());
        let ss = self.put(&ss)?;
        self.call(pid, "sigaltstack", SYS_SIGALTSTACK, [ss, 0, 0, 0, 0, 0])?;

        for m in &stub_maps {
            if m.path == "[vsyscall]" || m.start == scratch {
                continue;
            }
            self.call(
                pid,
                &format!("munmap of the stub's {:#x}-{:#x}", m.start, m.end),
                SYS_MUNMAP,
                [m.start, m.end - m.start, 0, 0, 0, 0],
            )?;
        }
        // The kernel's layout of [vvar] .. [vdso], for a checkpoint that
        // recorded only the [vdso] line.
        self.vdso_offset = vdso_offset(&stub_maps);
        Ok(())
    }
}

impl Builder<'_> {
    /// Maps the vDSO where the recording had it (its recorded pages, which
    /// hold the recorder's patch, are written with the others).
    fn place_vdso(&mut self) -> Result<(), ReplayError> {
        let pid = self.pid();
        let find = |name: &str| self.proc.maps.iter().find(|m| m.path == name);
        let (Some(vdso), vvar) = (find("[vdso]"), find("[vvar]")) else {
            return Ok(()); // recorded without a vDSO: leave it unmapped
        };
        let base = match (vvar, self.vdso_offset) {
            (Some(v), _) => v.start,
            (None, Some(off)) => vdso.start - off,
            (None, None) => vdso.start,
        };
        self.call(
            pid,
            "arch_prctl(ARCH_MAP_VDSO_64)",
            SYS_ARCH_PRCTL,
            [ARCH_MAP_VDSO_64, base, 0, 0, 0, 0],
        )?;
        let now = sys::maps(pid).map_err(ReplayError::sys("read maps", pid))?;
        for want in self
            .proc
            .maps
            .iter()
            .filter(|m| KERNEL_MAPPINGS[..3].contains(&m.path.as_str()))
        {
            let got = now.iter().find(|m| m.path == want.path);
            if got.map(|m| (m.start, m.end)) != Some((want.start, want.end)) {
                return Err((self.unsupported)(format!(
                    "{} recorded at {:#x}-{:#x}, placed at {}",
                    want.path,
                    want.start,
                    want.end,
                    got.map_or("nowhere".into(), |m| format!("{:#x}-{:#x}", m.start, m.end))
                )));
            }
        }
        Ok(())
    }

    /// Recreates every recorded mapping but the kernel's own, at its
    /// address with its protection. Returns what each one holds now, by
    /// start address.
    fn create_mappings(&mut self) -> Result<HashMap<u64, Fresh>, ReplayError> {
        let pid = self.pid();
        let mut fresh = HashMap::new();
        let mut fds: HashMap<String, u64> = HashMap::new();
        let maps: Vec<&Mapping> = self.proc.maps.iter().collect();
        for m in maps {
            if m.start >= m.end || KERNEL_MAPPINGS.contains(&m.path.as_str()) {
                if m.path == "[vdso]" {
                    fresh.insert(m.start, Fresh::Other);
                }
                continue;
            }
            let len = m.end - m.start;
            let prot = prot_of(&m.perms);
            let shared = m.perms.ends_with('s');
            let copy = m.file.as_deref().and_then(|h| self.trace.file_path(h));
            let what = format!("mmap of {:#x}-{:#x} {}", m.start, m.end, m.path);
            if let (Some(copy), false) = (&copy, shared) {
                let hash = m.file.clone().unwrap_or_default();
                let fd = match fds.get(&hash) {
                    Some(&fd) => fd,
                    None => {
                        let path = std::fs::canonicalize(copy).unwrap_or_else(|_| copy.clone());
                        let arg = self.put(path.as_os_str().as_encoded_bytes())?;
                        let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
                        let fd = self.call(
                            pid,
                            &format!("openat of {}", path.display()),
                            SYS_OPENAT,
                            [AT_FDCWD, arg, flags, 0, 0, 0],
                        )?;
                        fds.insert(hash, fd);
                        fd
                    }
                };
                let flags = (libc::MAP_PRIVATE | libc::MAP_FIXED_NOREPLACE) as u64;
                self.call(
                    pid,
                    &what,
                    SYS_MMAP,
                    [m.start, len, prot, flags, fd, m.offset],
                )?;
                fresh.insert(m.start, Fresh::Other);
            } else {
                // Anonymous memory; shared mappings (of files too) become
                // shared anonymous memory, so nothing outside is written.
                let mut flags = libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
                flags |= if shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
                if m.path == "[stack]" {
                    flags |= libc::MAP_GROWSDOWN;
                }
                let mut initial = prot;
                if shared && prot & libc::PROT_WRITE as u64 == 0 {
                    initial |= libc::PROT_WRITE as u64;
                    self.reprotect.push((m.start, len, prot));
                }
                self.call(
                    pid,
                    &what,
                    SYS_MMAP,
                    [m.start, len, initial, flags as u64, u64::MAX, 0],
                )?;
                fresh.insert(m.start, Fresh::Zero);
                if let (Some(copy), false) = (&copy, m.stored) {
                    self.fill_from_file(m, copy)?;
                }
            }
            if let Some(name) = m
                .path
                .strip_prefix("[anon:")
                .and_then(|n| n.strip_suffix(']'))
            {
                let arg = self.put(name.as_bytes())?;
                self.call(
                    pid,
                    &format!("naming {:#x}-{:#x}", m.start, m.end),
                    SYS_PRCTL,
                    [PR_SET_VMA, PR_SET_VMA_ANON_NAME, m.start, len, arg, 0],
                )?;
            }
        }
        for (_, fd) in fds {
            self.call(pid, "close", SYS_CLOSE, [fd, 0, 0, 0, 0, 0])?;
        }
        Ok(fresh)
    }

    /// A shared file mapping whose pages are not in the checkpoint: its
    /// contents come from the file's copy.
    fn fill_from_file(&self, m: &Mapping, copy: &std::path::Path) -> Result<(), ReplayError> {
        let mut buf = vec![0u8; (m.end - m.start) as usize];
        let n = sys::read_file_at(copy, m.offset, &mut buf)
            .map_err(ReplayError::sys("read a mapped file's copy", self.pid()))?;
        let n = n.next_multiple_of(PAGE_SIZE).min(buf.len());
        self.r.write_memory(m.start, &buf[..n])
    }

    /// Writes the recorded pages of every stored mapping (absent pages are
    /// zero in the recording).
    fn write_pages(&self, fresh: &HashMap<u64, Fresh>) -> Result<(), ReplayError> {
        let zero = [0u8; PAGE_SIZE];
        for m in self
            .proc
            .maps
            .iter()
            .filter(|m| m.stored && m.start < m.end)
        {
            match fresh.get(&m.start) {
                None => continue, // not recreated ([vsyscall], ...)
                Some(Fresh::Zero) => {
                    for (&addr, page) in self.image.range(m.start..m.end) {
                        if page.iter().any(|&b| b != 0) {
                            self.r.write_memory(addr, page)?;
                        }
                    }
                }
                Some(Fresh::Other) => {
                    const CHUNK: u64 = 256 * PAGE;
                    let mut buf = vec![0u8; CHUNK as usize];
                    let mut at = m.start;
                    while at < m.end {
                        let len = (m.end - at).min(CHUNK) as usize;
                        let n = self.r.mem.read(at, &mut buf[..len]).unwrap_or(0);
                        for i in 0..len / PAGE_SIZE {
                            let addr = at + (i * PAGE_SIZE) as u64;
                            let want: &[u8] = self.image.get(&addr).map_or(&zero, |p| p);
                            let readable = (i + 1) * PAGE_SIZE <= n;
                            let have = &buf[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
                            if (readable && have == want) || (!readable && want == zero) {
                                continue;
                            }
                            self.r.write_memory(addr, want)?;
                        }
                        at += len as u64;
                    }
                }
            }
        }
        Ok(())
    }

    /// Gives shared mappings created writable their recorded protection.
    fn reprotect(&mut self) -> Result<(), ReplayError> {
        let pid = self.pid();
        for (start, len, prot) in std::mem::take(&mut self.reprotect) {
            self.call(
                pid,
                &format!("mprotect of {start:#x}"),
                SYS_MPROTECT,
                [start, len, prot, 0, 0, 0],
            )?;
        }
        Ok(())
    }

    /// Installs the recorded signal dispositions; everything else the stub
    /// inherited from us goes back to SIG_DFL.
    fn signal_handlers(&mut self) -> Result<(), ReplayError> {
        let pid = self.pid();
        let (caught, ignored) =
            sys::signal_sets(pid).map_err(ReplayError::sys("read /proc/PID/status", pid))?;
        let recorded: BTreeMap<u32, &tracelog::SigAction> =
            self.proc.sigactions.iter().map(|a| (a.sig, a)).collect();
        for sig in 1..=64u32 {
            if sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32 {
                continue;
            }
            let act = match recorded.get(&sig) {
                Some(a) => [a.handler, a.flags, a.restorer, a.mask],
                None if (caught | ignored) & (1 << (sig - 1)) != 0 => [0; 4],
                None => continue,
            };
            let bytes: Vec<u8> = act.iter().flat_map(|w| w.to_le_bytes()).collect();
            let addr = self.put(&bytes)?;
            self.call(
                pid,
                &format!("rt_sigaction({sig})"),
                SYS_RT_SIGACTION,
                [sig as u64, addr, 0, 8, 0, 0],
            )?;
        }
        Ok(())
    }

    /// glibc's clear_child_tid and robust-list addresses for a thread, when
    /// its thread block holds its recorded tid where glibc keeps it.
    fn glibc_thread(&self, tid: u32, fs_base: u64) -> Option<(u64, u64)> {
        let at = fs_base.checked_add(GLIBC_TID_OFFSET)?;
        let mut v = [0u8; 4];
        (fs_base != 0
            && self.r.mem.read(at, &mut v).ok() == Some(4)
            && u32::from_le_bytes(v) == tid)
            .then_some((at, fs_base + GLIBC_ROBUST_OFFSET))
    }

    /// Clones the other threads, then gives every thread its recorded
    /// registers, FPU state and signal mask, in an interrupt-stop.
    fn threads(&mut self, cpu: Option<usize>) -> Result<(), ReplayError> {
        let pid = self.pid();
        let leader = self
            .proc
            .threads
            .iter()
            .position(|t| t.tid == self.proc.pid)
            .unwrap_or(0);
        let mut order: Vec<usize> = (0..self.proc.threads.len()).collect();
        order.swap(0, leader);
        for (n, &i) in order.iter().enumerate() {
            let t = &self.proc.threads[i];
            let glibc = self.glibc_thread(t.tid, t.regs[21]);
            let live = if n == 0 {
                let ctid = glibc.map_or(0, |g| g.0);
                self.call(
                    pid,
                    "set_tid_address",
                    SYS_SET_TID_ADDRESS,
                    [ctid, 0, 0, 0, 0, 0],
                )?;
                self.call(
                    pid,
                    "set_robust_list",
                    SYS_SET_ROBUST_LIST,
                    [glibc.map_or(0, |g| g.1), ROBUST_LIST_HEAD_LEN, 0, 0, 0, 0],
                )?;
                pid
            } else {
                let (flags, ctid) = match glibc {
                    Some((ctid, _)) => {
                        (CLONE_THREAD_FLAGS | libc::CLONE_CHILD_CLEARTID as u64, ctid)
                    }
                    None => (CLONE_THREAD_FLAGS, 0),
                };
                let (ret, child) =
                    self.r
                        .run(pid, self.insn, SYS_CLONE, [flags, 0, 0, ctid, 0, 0])?;
                self.parked.insert(pid, false);
                let child = match child {
                    Some(c) if ret >= 0 => c,
                    _ => {
                        return Err(ReplayError::Injected {
                            what: "clone of a thread".into(),
                            tid: pid,
                            errno: std::io::Error::from_raw_os_error((-ret).max(0) as i32),
                        })
                    }
                };
                self.r.live.push(child);
                self.r.wait_event_stop(child, "waiting for a new thread")?;
                self.parked.insert(child, true);
                if let Some(cpu) = cpu {
                    sys::pin(child, cpu).map_err(ReplayError::sys("sched_setaffinity", child))?;
                }
                if let Some((_, robust)) = glibc {
                    self.call(
                        child,
                        "set_robust_list",
                        SYS_SET_ROBUST_LIST,
                        [robust, ROBUST_LIST_HEAD_LEN, 0, 0, 0, 0],
                    )?;
                }
                child
            };
            self.r.tids.insert(t.tid, live);
        }
        for t in &self.proc.threads {
            let live = self.r.tids[&t.tid];
            if !self.parked.get(&live).copied().unwrap_or(false) {
                self.r.park(live)?;
                self.parked.insert(live, true);
            }
            let regs = regs::from_words(&t.regs).expect("checked: 27 words");
            sys::setregs(live, regs).map_err(ReplayError::sys("PTRACE_SETREGS", live))?;
            if !t.fpregs.is_empty() {
                sys::set_fpu(live, &t.fpregs)
                    .map_err(ReplayError::sys("PTRACE_SETREGSET NT_X86_XSTATE", live))?;
            }
            sys::set_sigmask(live, t.sigmask)
                .map_err(ReplayError::sys("PTRACE_SETSIGMASK", live))?;
        }
        Ok(())
    }
}

impl Restored {
    /// Runs one syscall in stopped live thread `tid` from the scratch stub,
    /// restoring that thread's registers afterwards (and leaving it in an
    /// interrupt-stop again); returns the result (negative errno as i64).
    /// A thread the syscall creates is traced and killed with the process.
    pub fn inject(&mut self, tid: u32, nr: u64, args: [u64; 6]) -> Result<i64, ReplayError> {
        if !self.live.contains(&tid) {
            return Err(ReplayError::NoThread { tid });
        }
        let saved = sys::getregs(tid).map_err(ReplayError::sys("PTRACE_GETREGS", tid))?;
        let (ret, child) = self.run(tid, self.scratch, nr, args)?;
        if let Some(c) = child {
            self.live.push(c);
        }
        self.park(tid)?;
        sys::setregs(tid, saved).map_err(ReplayError::sys("PTRACE_SETREGS", tid))?;
        Ok(ret)
    }

    /// A process the restored one forked during the replay (stopped at its
    /// first stop): recorded tid `tid` is live `child`. It shares the
    /// parent's scratch page address (a copy, or the page itself).
    pub fn forked(&self, child: u32, tid: u32) -> Result<Restored, ReplayError> {
        let mem = Mem::open(child).map_err(ReplayError::sys("open /proc/PID/mem", child))?;
        Ok(Restored {
            pid: child,
            tids: BTreeMap::from([(tid, child)]),
            scratch: self.scratch,
            mem,
            live: vec![child],
            alive: true,
        })
    }

    /// Takes a thread the process created while running (already stopped
    /// in its first ptrace-stop) under management: `inject` accepts it.
    pub fn adopt_thread(&mut self, tid: u32) {
        if !self.live.contains(&tid) {
            self.live.push(tid);
        }
    }

    /// Forgets a thread that exited.
    pub fn forget_thread(&mut self, tid: u32) {
        self.live.retain(|&t| t != tid);
    }

    /// Every live thread of the restored process (its leader first).
    pub fn live_tids(&self) -> &[u32] {
        &self.live
    }

    /// Reads the live process's memory (short at an unreadable page).
    pub fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, ReplayError> {
        self.mem
            .read(addr, buf)
            .map_err(|source| ReplayError::Memory {
                op: "reading",
                pid: self.pid,
                addr,
                len: buf.len(),
                source,
            })
    }

    /// Writes the live process's memory (read-only pages included).
    pub fn write_memory(&self, addr: u64, data: &[u8]) -> Result<(), ReplayError> {
        self.mem
            .write(addr, data)
            .map_err(|source| ReplayError::Memory {
                op: "writing",
                pid: self.pid,
                addr,
                len: data.len(),
                source,
            })
    }

    /// Kills the restored process and reaps every thread of it.
    pub fn kill(mut self) {
        self.reap();
    }

    fn reap(&mut self) {
        if !std::mem::replace(&mut self.alive, false) {
            return;
        }
        // Threads the caller let the process create are traced too.
        let mut tids = self.live.clone();
        for t in sys::task_tids(self.pid) {
            if !tids.contains(&t) {
                tids.push(t);
            }
        }
        sys::kill(self.pid, libc::SIGKILL);
        // Traced threads first: the leader is reaped only after them.
        for &tid in tids.iter().rev() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match sys::wait_timeout(tid, left) {
                    Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => break,
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(_) => continue,
                }
            }
        }
    }

    /// Makes stopped thread `tid` run syscall `nr` at `insn`, up to its
    /// syscall-exit stop. Returns the result and, for a clone, the new
    /// thread (which reports its own first stop).
    pub(crate) fn run(
        &self,
        tid: u32,
        insn: u64,
        nr: u64,
        args: [u64; 6],
    ) -> Result<(i64, Option<u32>), ReplayError> {
        let mut r: Regs = sys::getregs(tid).map_err(ReplayError::sys("PTRACE_GETREGS", tid))?;
        r.rip = insn;
        r.rax = nr;
        r.orig_rax = u64::MAX;
        [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9] = args;
        sys::setregs(tid, r).map_err(ReplayError::sys("PTRACE_SETREGS", tid))?;
        sys::to_syscall(tid).map_err(ReplayError::sys("PTRACE_SYSCALL", tid))?;
        let mut entered = false;
        let mut child = None;
        loop {
            let st = sys::wait(tid).map_err(ReplayError::sys("waitpid", tid))?;
            match st {
                WaitStatus::PtraceSyscall(_) if !entered => entered = true,
                WaitStatus::PtraceSyscall(_) => {
                    let r = sys::getregs(tid).map_err(ReplayError::sys("PTRACE_GETREGS", tid))?;
                    return Ok((r.rax as i64, child));
                }
                WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_CLONE => {
                    child = Some(
                        sys::event_msg(tid).map_err(ReplayError::sys("PTRACE_GETEVENTMSG", tid))?
                            as u32,
                    );
                }
                other => {
                    return Err(ReplayError::UnexpectedStop {
                        tid,
                        status: format!("{other:?}"),
                        during: "an injected syscall",
                    })
                }
            }
            sys::to_syscall(tid).map_err(ReplayError::sys("PTRACE_SYSCALL", tid))?;
        }
    }

    /// Takes `tid` from a syscall-exit stop to an interrupt-stop: there a
    /// set `rax = -ERESTART*` restarts the syscall on resumption, as the
    /// kernel does for a signal-interrupted one.
    fn park(&self, tid: u32) -> Result<(), ReplayError> {
        sys::interrupt(tid).map_err(ReplayError::sys("PTRACE_INTERRUPT", tid))?;
        sys::cont(tid).map_err(ReplayError::sys("PTRACE_CONT", tid))?;
        self.wait_event_stop(tid, "parking a thread")
    }

    /// Stops the freshly seized stub once it has run its prologue and
    /// waits in pause().
    fn stop_in_pause(&self) -> Result<(), ReplayError> {
        let pid = self.pid;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            sys::interrupt(pid).map_err(ReplayError::sys("PTRACE_INTERRUPT", pid))?;
            self.wait_event_stop(pid, "attaching the stub")?;
            let r = sys::getregs(pid).map_err(ReplayError::sys("PTRACE_GETREGS", pid))?;
            if r.orig_rax == libc::SYS_pause as u64 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(ReplayError::UnexpectedStop {
                    tid: pid,
                    status: format!("is in syscall {} instead of pause", r.orig_rax as i64),
                    during: "starting the stub",
                });
            }
            sys::cont(pid).map_err(ReplayError::sys("PTRACE_CONT", pid))?;
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    fn wait_event_stop(&self, tid: u32, during: &'static str) -> Result<(), ReplayError> {
        match sys::wait(tid).map_err(ReplayError::sys("waitpid", tid))? {
            WaitStatus::PtraceEvent(_, _, PTRACE_EVENT_STOP) => Ok(()),
            other => Err(ReplayError::UnexpectedStop {
                tid,
                status: format!("{other:?}"),
                during,
            }),
        }
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        self.reap();
    }
}

/// `PROT_*` of a /proc/PID/maps permission string.
fn prot_of(perms: &str) -> u64 {
    let p = perms.as_bytes();
    let mut prot = 0;
    if p.first() == Some(&b'r') {
        prot |= libc::PROT_READ;
    }
    if p.get(1) == Some(&b'w') {
        prot |= libc::PROT_WRITE;
    }
    if p.get(2) == Some(&b'x') {
        prot |= libc::PROT_EXEC;
    }
    prot as u64
}

/// A page address free in both the stub's and the checkpoint's maps (the
/// lowest one from 64 KiB up).
fn free_page(stub: &[sys::MapEntry], recorded: &[Mapping]) -> Option<u64> {
    let mut used: Vec<(u64, u64)> = stub
        .iter()
        .map(|m| (m.start, m.end))
        .chain(recorded.iter().map(|m| (m.start, m.end)))
        .collect();
    used.sort_unstable();
    let mut at = 0x10000u64;
    for (s, e) in used {
        if at + PAGE <= s {
            return Some(at);
        }
        at = at.max(e);
    }
    (at + PAGE <= 0x7fff_ffff_f000).then_some(at)
}

/// Distance from [vvar] to [vdso] in `maps`.
fn vdso_offset(maps: &[sys::MapEntry]) -> Option<u64> {
    let vvar = maps.iter().find(|m| m.path == "[vvar]")?;
    let vdso = maps.iter().find(|m| m.path == "[vdso]")?;
    vdso.start.checked_sub(vvar.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: u64, end: u64) -> sys::MapEntry {
        sys::MapEntry {
            start,
            end,
            perms: "rw-p".into(),
            offset: 0,
            path: String::new(),
        }
    }

    #[test]
    fn restore_free_page_avoids_both_maps() {
        let stub = [entry(0x10000, 0x12000)];
        let rec = [Mapping {
            start: 0x12000,
            end: 0x13000,
            ..Default::default()
        }];
        assert_eq!(free_page(&stub, &rec), Some(0x13000));
        assert_eq!(free_page(&[], &[]), Some(0x10000));
    }

    #[test]
    fn restore_prot_of() {
        assert_eq!(prot_of("r-xp"), (libc::PROT_READ | libc::PROT_EXEC) as u64);
        assert_eq!(prot_of("rw-s"), (libc::PROT_READ | libc::PROT_WRITE) as u64);
        assert_eq!(prot_of("---p"), 0);
    }
}
