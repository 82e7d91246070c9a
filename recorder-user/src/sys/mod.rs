//! Every call the daemon makes into the operating system outside aya, in one
//! place: capabilities, tracefs, /proc, launching the target, clocks.

use std::{
    collections::{BTreeSet, HashMap},
    ffi::CString,
    fs, io,
    os::fd::{AsRawFd, OwnedFd},
};

use crate::RecordError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Parses the `CapEff:` line of /proc/self/status.
pub fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Checks the capabilities recording needs: CAP_BPF and CAP_PERFMON (or
/// CAP_SYS_ADMIN, which implies both on older kernels).
pub fn check_capabilities() -> Result<(), RecordError> {
    let status = fs::read_to_string("/proc/self/status").map_err(|source| RecordError::Io {
        what: "reading /proc/self/status",
        source,
    })?;
    let caps = effective_caps(&status).unwrap_or(0);
    missing_capability(caps).map_or(Ok(()), |cap| Err(RecordError::MissingCapability { cap }))
}

/// The first capability recording needs that `caps` lacks.
pub fn missing_capability(caps: u64) -> Option<&'static str> {
    let has = |c: u32| caps & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return None;
    }
    if !has(CAP_BPF) {
        return Some("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        return Some("CAP_PERFMON");
    }
    None
}

/// Checks the kernel exposes BTF, which the programs' task helpers need.
pub fn check_btf() -> Result<(), RecordError> {
    const PATH: &str = "/sys/kernel/btf/vmlinux";
    if std::path::Path::new(PATH).exists() {
        Ok(())
    } else {
        Err(RecordError::NoBtf { path: PATH })
    }
}

pub fn mount_tracefs(at: &str) -> io::Result<()> {
    nix::mount::mount(
        Some("nodev"),
        at,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// `RLIMIT_MEMLOCK` only matters on kernels that charge BPF maps to it; where
/// it cannot be raised (no CAP_SYS_RESOURCE) maps are charged to the memory
/// cgroup instead, so failure is harmless.
pub fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// Raises the calling thread's scheduling priority (nice -10; threads it
/// creates later inherit it). Best effort.
pub fn raise_priority() {
    // SAFETY: plain syscall; `who` 0 is the calling thread.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
}

/// Blocks (`true`) or unblocks SIGINT and SIGTERM for the calling thread
/// (and threads it creates later). `record` blocks them first thing and
/// unblocks them once its handlers are in: one sent while it starts waits
/// for them instead of killing it half-started.
pub fn block_stop_signals(block: bool) {
    // SAFETY: sigemptyset/sigaddset fill a local set; pthread_sigmask only
    // reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The thread exists and has not exited (a zombie waiting for its parent's
/// wait has).
pub fn thread_alive(tid: u32) -> bool {
    task_state(tid).is_some_and(|s| !s.starts_with(['Z', 'X']))
}

/// Parent pid from the text of /proc/PID/stat (the comm field may hold spaces
/// and parentheses, so parse from the last ')').
pub fn stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every thread of `root` and of all its descendants, as `tid → tgid`.
pub fn process_tree(root: u32) -> HashMap<u32, u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = fs::read_to_string(entry.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(stat_ppid)
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut tids = HashMap::new();
    let mut todo = vec![root];
    let mut seen = BTreeSet::new();
    while let Some(pid) = todo.pop() {
        if !seen.insert(pid) {
            continue;
        }
        for tid in threads_of(pid) {
            tids.insert(tid, pid);
        }
        todo.extend(children.get(&pid).into_iter().flatten());
    }
    tids
}

pub fn threads_of(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Command line of a process, from /proc/PID/cmdline.
pub fn cmdline(pid: u32) -> Vec<String> {
    nul_separated(&format!("/proc/{pid}/cmdline"))
}

/// Environment of a process ("K=V"), from /proc/PID/environ.
pub fn environ(pid: u32) -> Vec<String> {
    nul_separated(&format!("/proc/{pid}/environ"))
}

/// The non-empty NUL-separated strings of a file (empty if unreadable).
fn nul_separated(path: &str) -> Vec<String> {
    fs::read(path)
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn exe(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A field of /proc/PID/status, e.g. `Tgid`.
fn status_field(pid: u32, name: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_value(&text, name).map(str::to_string)
}

fn status_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The `State:` line of a thread, e.g. `S (sleeping)`.
pub fn task_state(tid: u32) -> Option<String> {
    status_field(tid, "State")
}

/// The thread's seccomp mode (0: none, 1: strict, 2: filter).
pub fn seccomp_mode(tid: u32) -> Option<u32> {
    status_field(tid, "Seccomp")?.parse().ok()
}

pub fn tgid_of(tid: u32) -> Option<u32> {
    status_field(tid, "Tgid")?.parse().ok()
}

pub fn ppid_of(pid: u32) -> Option<u32> {
    status_field(pid, "PPid")?.parse().ok()
}

/// The PID tracing `tid`, if any.
pub fn tracer_of(tid: u32) -> Option<u32> {
    status_field(tid, "TracerPid")?
        .parse()
        .ok()
        .filter(|&p| p != 0)
}

/// Caught and ignored signal sets (bit N-1 for signal N).
pub fn signal_sets(pid: u32) -> (u64, u64) {
    let get = |n| {
        status_field(pid, n)
            .and_then(|v| u64::from_str_radix(&v, 16).ok())
            .unwrap_or(0)
    };
    (get("SigCgt"), get("SigIgn"))
}

/// Resident memory of a process, bytes (/proc/PID/statm, 4 KiB pages).
/// The CPU `tid` last ran on (/proc/TID/stat, field 39).
pub fn last_cpu(tid: u32) -> Option<usize> {
    let stat = fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: field 3 is the
    // first of them.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(39 - 3)?.parse().ok()
}

/// The CPUs `tid` may run on.
pub fn affinity(tid: u32) -> Option<nix::sched::CpuSet> {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(tid as i32)).ok()
}

/// Sets the CPUs `tid` may run on. Best effort (the thread may be gone).
pub fn set_affinity(tid: u32, set: &nix::sched::CpuSet) {
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid as i32), set);
}

/// Restricts `tid` to `cpu`. Best effort.
pub fn pin(tid: u32, cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        set_affinity(tid, &set);
    }
}

pub fn resident_bytes(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub dev: String,
    pub inode: u64,
    pub path: String,
}

pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(6, ' ');
            let (range, perms, offset, dev, inode) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let path = f.next().unwrap_or("").trim_start().to_string();
            let (a, b) = range.split_once('-')?;
            Some(MapEntry {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                perms: perms.to_string(),
                offset: u64::from_str_radix(offset, 16).ok()?,
                dev: dev.to_string(),
                inode: inode.parse().ok()?,
                path,
            })
        })
        .collect()
}

pub fn maps(pid: u32) -> io::Result<Vec<MapEntry>> {
    Ok(parse_maps(&fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

pub fn vdso_range(pid: u32) -> Option<(u64, u64)> {
    maps(pid)
        .ok()?
        .into_iter()
        .find(|m| m.path == "[vdso]")
        .map(|m| (m.start, m.end))
}

/// An open file descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdEntry {
    pub fd: i32,
    pub path: String,
    pub pos: u64,
    pub flags: u32,
}

/// Parses /proc/PID/fdinfo/FD: (pos, flags).
pub fn parse_fdinfo(text: &str) -> (u64, u32) {
    let pos = status_value(text, "pos")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let flags = status_value(text, "flags")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0);
    (pos, flags)
}

pub fn fds(pid: u32) -> Vec<FdEntry> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<FdEntry> = dir
        .flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let path = fs::read_link(e.path()).ok()?.display().to_string();
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            let (pos, flags) = parse_fdinfo(&info);
            Some(FdEntry {
                fd,
                path,
                pos,
                flags,
            })
        })
        .collect();
    out.sort_by_key(|f| f.fd);
    out
}

/// The file a mapping of `pid` at `[start, end)` maps, as the mapping sees
/// it (the same inode even after a rename over its path or an unlink).
pub fn map_file(pid: u32, start: u64, end: u64) -> String {
    format!("/proc/{pid}/map_files/{start:x}-{end:x}")
}

pub fn cwd(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/cwd"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_MONOTONIC)
}

pub fn realtime_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_REALTIME)
}

fn clock_ns(id: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(id)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

pub fn host() -> tracelog::Host {
    let u = nix::sys::utsname::uname().ok();
    tracelog::Host {
        kernel: u
            .as_ref()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        hostname: u
            .as_ref()
            .map(|u| u.nodename().to_string_lossy().into_owned())
            .unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        cpus: nr_cpus() as u32,
    }
}

pub fn nr_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or(1)
}

pub fn stderr_is_tty() -> bool {
    nix::unistd::isatty(std::io::stderr().as_raw_fd()).unwrap_or(false)
}

/// Where `execvp` would find `cmd`, or why it would not.
fn find_command(cmd: &str) -> io::Result<std::path::PathBuf> {
    use std::path::{Path, PathBuf};
    let runnable = |p: &Path| -> io::Result<()> {
        nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).map_err(io::Error::from)?;
        if p.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        Ok(())
    };
    if cmd.contains('/') {
        runnable(Path::new(cmd))?;
        return Ok(PathBuf::from(cmd));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = None;
    for dir in std::env::split_paths(&path).filter(|d| !cmd.is_empty() && !d.as_os_str().is_empty())
    {
        let p = dir.join(cmd);
        match runnable(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = Some(e),
            Err(_) => {}
        }
    }
    Err(denied
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "command not found in PATH")))
}

/// A command forked and held just before its exec, so the recorder can put
/// it in the filter first and record it from its very first instruction.
#[derive(Debug)]
pub struct HeldChild {
    pub pid: u32,
    gate: Option<OwnedFd>,
}

impl HeldChild {
    /// Forks; the child waits on a pipe, then execs `argv` (searching PATH).
    /// Must be called while the process has one thread (before the tokio
    /// runtime starts): the child only makes async-signal-safe calls.
    pub fn spawn(argv: &[String]) -> Result<HeldChild, RecordError> {
        let launch_err = |source| RecordError::Launch {
            command: argv.join(" "),
            source,
        };
        // Said here, in one line, rather than by the child after the
        // recorder has started.
        find_command(argv.first().map_or("", String::as_str)).map_err(launch_err)?;
        let cargs: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|e| launch_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let (rd, wr) = nix::unistd::pipe().map_err(|e| launch_err(e.into()))?;
        // SAFETY: the process is single-threaded here (documented contract),
        // and the child only makes async-signal-safe calls (read, signal,
        // sigaltstack, sigprocmask, execvp, write, _exit).
        match unsafe { nix::unistd::fork() }.map_err(|e| launch_err(e.into()))? {
            nix::unistd::ForkResult::Child => {
                drop(wr);
                let mut b = [0u8; 1];
                // SAFETY: raw async-signal-safe calls on valid buffers.
                unsafe {
                    if libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) != 1 {
                        libc::_exit(127);
                    }
                    // What the command must not inherit from us (both survive
                    // exec): Rust's ignored SIGPIPE and its alternate signal
                    // stack, as a shell would start it.
                    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                    let off = libc::stack_t {
                        ss_sp: std::ptr::null_mut(),
                        ss_flags: libc::SS_DISABLE,
                        ss_size: 0,
                    };
                    libc::sigaltstack(&off, std::ptr::null_mut());
                    let mut none: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut none);
                    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                    libc::execvp(ptrs[0], ptrs.as_ptr());
                    let msg = b"uniplay: cannot execute the command\n";
                    libc::write(2, msg.as_ptr().cast(), msg.len());
                    libc::_exit(127);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(rd);
                Ok(HeldChild {
                    pid: child.as_raw() as u32,
                    gate: Some(wr),
                })
            }
        }
    }

    /// Lets the child exec.
    pub fn release(&mut self) -> io::Result<()> {
        if let Some(gate) = self.gate.take() {
            nix::unistd::write(&gate, b"x").map_err(io::Error::from)?;
        }
        Ok(())
    }
}

/// How a waited-for process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// Waits for `pid` (a child of ours) without blocking; `None` while it runs.
pub fn try_wait(pid: u32) -> io::Result<Option<ExitStatus>> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    match waitpid(
        nix::unistd::Pid::from_raw(pid as i32),
        Some(WaitPidFlag::WNOHANG),
    ) {
        Ok(WaitStatus::Exited(_, code)) => Ok(Some(ExitStatus::Code(code))),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Some(ExitStatus::Signal(sig as i32))),
        Ok(_) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `SIGSEGV` for 11, `signal 40` for what has no name.
pub fn signal_name(sig: u32) -> String {
    recorder_common::signal_name(sig).map_or_else(|| format!("signal {sig}"), str::to_string)
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    let _ = unsafe { libc::kill(pid as i32, sig) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_caps_parse() {
        let s = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(s), Some(0x1ffffffffff));
        assert_eq!(missing_capability(0x1ffffffffff), None);
        assert_eq!(missing_capability(0), Some("CAP_BPF"));
        assert_eq!(missing_capability(1 << CAP_BPF), Some("CAP_PERFMON"));
        assert_eq!(missing_capability(1 << CAP_SYS_ADMIN), None);
    }

    #[test]
    fn sys_parse_maps_and_fdinfo() {
        let m = parse_maps(
            "55d0-55d1 r--p 00000000 fe:01 1234                       /usr/bin/cat\n7ffd-7ffe rw-p 00000000 00:00 0                          [stack]\n7f00-7f01 rw-p 00000000 00:00 0 \n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].start, m[0].end, m[0].inode), (0x55d0, 0x55d1, 1234));
        assert_eq!(m[0].path, "/usr/bin/cat");
        assert_eq!(m[1].path, "[stack]");
        assert_eq!(m[2].path, "");
        assert_eq!(
            parse_fdinfo("pos:\t42\nflags:\t0100002\nmnt_id:\t1\n"),
            (42, 0o100002)
        );
    }

    #[test]
    fn sys_stat_ppid() {
        assert_eq!(stat_ppid("123 (a b) c) S 45 1 1"), Some(45));
        assert_eq!(stat_ppid("garbage"), None);
    }
}

pub mod bpf;
pub mod ptrace;
pub mod uffd;
