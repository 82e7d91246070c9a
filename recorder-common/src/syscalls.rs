//! The syscall table, as data: one row per syscall that needs more than the
//! defaults. The eBPF recorder reads it (loaded into a map by the daemon) to
//! know which user memory a syscall wrote and how long it is; replay reads it
//! to know whether to emulate a syscall from the log or execute it.
//! Nothing about a syscall is decided anywhere else.

use crate::names::{NAMES, SYSCALL_COUNT};

/// Replay: do not run it; set the logged result and write the logged bytes.
pub const ACTION_EMULATE: u8 = 0;
/// Replay: run it for real, because it shapes the replayed process itself
/// (address space, threads, signal state), and check its result.
pub const ACTION_EXECUTE: u8 = 1;

/// How the length of an output buffer is known (`OutSpec::rule`).
pub const LEN_NONE: u8 = 0;
/// `ret` bytes; with `size` 1, at most `args[param]` (a datagram received
/// with MSG_TRUNC returns its full length, more than the buffer took).
pub const LEN_RET: u8 = 1;
/// `size` bytes.
pub const LEN_FIXED: u8 = 2;
/// `args[param] * size` bytes.
pub const LEN_ARG: u8 = 3;
/// `ret * size` bytes.
pub const LEN_RET_TIMES: u8 = 4;
/// The `u32` the kernel left at user address `args[param]`, at most `size`.
pub const LEN_LENPTR: u8 = 5;
/// An iovec array at `args[arg]` with `args[param]` entries, `ret` bytes in all.
pub const LEN_IOV: u8 = 6;
/// An `fd_set` sized for `args[param]` descriptors.
pub const LEN_FDSET: u8 = 7;
/// Size and direction encoded in the ioctl request (`args[1]`), or a known
/// legacy request.
pub const LEN_IOCTL: u8 = 8;
/// A `struct msghdr` at `args[arg]`: the header, its name, control and the
/// `ret` bytes of its iovecs.
pub const LEN_MSGHDR: u8 = 9;

/// A NUL-terminated string at `args[arg]` that the kernel *read* (a path),
/// at most `CHUNK_MAX` bytes. Always used with [`WHEN_INPUT`].
pub const LEN_CSTR: u8 = 10;

/// Bytes decided by a command argument (`args[param]`), by the command
/// table `size` (`CMD_FCNTL`, `CMD_PRCTL`): see [`cmd_out_len`].
pub const LEN_CMD: u8 = 11;
/// `LEN_CMD` tables.
pub const CMD_FCNTL: u32 = 0;
pub const CMD_PRCTL: u32 = 1;

/// Bytes the kernel writes at a command's pointer argument, for the
/// commands of `fcntl` (`CMD_FCNTL`) and `prctl` (`CMD_PRCTL`) that write
/// any (a `F_GETLK` answer changes what the program does next: SQLite's
/// WAL mode asks it on every open).
pub const fn cmd_out_len(table: u32, cmd: u64) -> u64 {
    match (table, cmd) {
        // F_GETLK, F_OFD_GETLK: struct flock.
        (CMD_FCNTL, 5 | 36) => 32,
        // F_GETOWN_EX (struct f_owner_ex), F_GETOWNER_UIDS (two uid_t),
        // F_GET_RW_HINT, F_GET_FILE_RW_HINT (u64).
        (CMD_FCNTL, 16 | 17 | 1035 | 1037) => 8,
        // PR_GET_NAME: the 16-byte thread name.
        (CMD_PRCTL, 16) => 16,
        // PR_GET_TID_ADDRESS: a pointer.
        (CMD_PRCTL, 40) => 8,
        // PR_GET_PDEATHSIG, PR_GET_UNALIGN, PR_GET_FPEMU, PR_GET_FPEXC,
        // PR_GET_ENDIAN, PR_GET_TSC, PR_GET_CHILD_SUBREAPER: an int.
        (CMD_PRCTL, 2 | 5 | 9 | 11 | 19 | 25 | 37) => 4,
        _ => 0,
    }
}

/// Whether a successful `mmap(addr, len, prot, flags, fd, off)` holds its
/// thread until the recorder has copied the mapped file (see the eBPF
/// side's `held_mapping` and the session's `copy_mapped_early`): shared
/// file mappings, which the program may write through at once. (Private
/// ones are not held: every process start maps a dozen locale and cache
/// files, and holding each cost ~6 ms per `ls`; a private mapping is copied
/// when its event is drained, a few milliseconds later.)
pub const fn holds_at_mmap(flags: u64) -> bool {
    const MAP_SHARED: u64 = 0x01;
    const MAP_ANONYMOUS: u64 = 0x20;
    flags & MAP_ANONYMOUS == 0 && flags & MAP_SHARED != 0
}

/// `OutSpec::when`: only when the syscall succeeded (`ret >= 0`).
pub const WHEN_OK: u8 = 0;
/// `OutSpec::when`: whatever the result (e.g. nanosleep's remaining time is
/// written on EINTR).
pub const WHEN_ALWAYS: u8 = 1;
/// `OutSpec::when` flag: the bytes are an *input* the kernel read from user
/// memory (a path, a write buffer), recorded so traces show them and replay
/// can compare them; replay never writes them back. Recorded in slot
/// `arg | SLOT_INPUT`.
pub const WHEN_INPUT: u8 = 0x80;

/// Added to an argument index to name the slot of its input bytes.
pub const SLOT_INPUT: u8 = 0x10;

/// One output buffer of a syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutSpec {
    /// The argument holding the buffer's user address.
    pub arg: u8,
    /// One of the `LEN_*` rules.
    pub rule: u8,
    /// Rule parameter (an argument index), see the `LEN_*` docs.
    pub param: u8,
    /// `WHEN_OK` or `WHEN_ALWAYS`.
    pub when: u8,
    /// Rule parameter (a size or multiplier), see the `LEN_*` docs.
    pub size: u32,
}

/// Output buffers per syscall (select's three fd sets and its timeout). The
/// eBPF side plans them in a `bpf_loop`, one slot per pass.
pub const MAX_OUTS: usize = 4;

/// A syscall's row, in the form the eBPF side reads from its map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallSpec {
    /// Arguments the syscall takes (recorded and compared).
    pub nargs: u8,
    /// `ACTION_EMULATE` or `ACTION_EXECUTE`.
    pub action: u8,
    /// Used entries of `outs`.
    pub nouts: u8,
    pub _pad: u8,
    pub outs: [OutSpec; MAX_OUTS],
}

const _: () = assert!(core::mem::size_of::<SyscallSpec>() == 4 + 8 * MAX_OUTS);

/// The row used for a syscall the table does not list: all six registers are
/// kept, nothing is copied, and replay emulates it.
pub const DEFAULT_SPEC: SyscallSpec = SyscallSpec {
    nargs: 6,
    action: ACTION_EMULATE,
    nouts: 0,
    _pad: 0,
    outs: [NO_OUT; MAX_OUTS],
};

const NO_OUT: OutSpec = OutSpec {
    arg: 0,
    rule: LEN_NONE,
    param: 0,
    when: WHEN_OK,
    size: 0,
};

const fn out(arg: u8, rule: u8, param: u8, size: u32) -> OutSpec {
    OutSpec {
        arg,
        rule,
        param,
        when: WHEN_OK,
        size,
    }
}
const fn ret(arg: u8) -> OutSpec {
    out(arg, LEN_RET, 0, 0)
}
/// `ret` bytes at `args[arg]`, at most `args[cap]`.
const fn ret_within(arg: u8, cap: u8) -> OutSpec {
    out(arg, LEN_RET, cap, 1)
}
const fn fixed(arg: u8, size: u32) -> OutSpec {
    out(arg, LEN_FIXED, 0, size)
}
const fn always(mut o: OutSpec) -> OutSpec {
    o.when = WHEN_ALWAYS;
    o
}
/// The path the kernel read from `args[arg]` (recorded even on failure).
const fn path(arg: u8) -> OutSpec {
    OutSpec {
        arg,
        rule: LEN_CSTR,
        param: 0,
        when: WHEN_ALWAYS | WHEN_INPUT,
        size: 0,
    }
}
/// The `args[len_arg]` bytes of a struct the kernel read from `args[arg]`.
const fn input_struct(arg: u8, len_arg: u8) -> OutSpec {
    OutSpec {
        arg,
        rule: LEN_ARG,
        param: len_arg,
        when: WHEN_ALWAYS | WHEN_INPUT,
        size: 1,
    }
}
/// The `ret` bytes the kernel read from the buffer at `args[arg]` (writes).
const fn written(arg: u8) -> OutSpec {
    OutSpec {
        arg,
        rule: LEN_RET,
        param: 0,
        when: WHEN_INPUT,
        size: 0,
    }
}

const fn row(nargs: u8, action: u8, outs: &[OutSpec]) -> SyscallSpec {
    let mut spec = SyscallSpec {
        nargs,
        action,
        nouts: outs.len() as u8,
        _pad: 0,
        outs: [NO_OUT; MAX_OUTS],
    };
    let mut i = 0;
    while i < outs.len() {
        spec.outs[i] = outs[i];
        i += 1;
    }
    spec
}
const fn emu(nargs: u8, outs: &[OutSpec]) -> SyscallSpec {
    row(nargs, ACTION_EMULATE, outs)
}
const fn exe(nargs: u8) -> SyscallSpec {
    row(nargs, ACTION_EXECUTE, &[])
}

// Sizes of kernel structs on x86-64.
const STAT: u32 = 144;
const STATX: u32 = 256;
const STATFS: u32 = 120;
const TIMESPEC: u32 = 16;
const TIMEVAL: u32 = 16;
const RUSAGE: u32 = 144;
const SIGINFO: u32 = 128;
const SOCKADDR_MAX: u32 = 128;
const STACK_T: u32 = 24;
/// The kernel's `struct sigaction` on x86-64 (handler, flags, restorer, 8-byte mask).
const SIGACTION: u32 = 32;
const RLIMIT: u32 = 16;
const EPOLL_EVENT: u32 = 12;
const POLLFD: u32 = 8;
const UTSNAME: u32 = 390;
const SYSINFO: u32 = 112;
const TMS: u32 = 32;
const ITIMERVAL: u32 = 32;
const ITIMERSPEC: u32 = 32;
const SCHED_PARAM: u32 = 4;
const CAP_DATA: u32 = 24;
const TIMEX: u32 = 208;

/// The table: `(number, row)`, sorted by number. Syscalls absent from it use
/// [`DEFAULT_SPEC`].
pub static TABLE: &[(u32, SyscallSpec)] = &[
    (0, emu(3, &[ret(1)])),                                 // read
    (1, emu(3, &[written(1)])),                             // write
    (2, emu(3, &[path(0)])),                                // open
    (3, emu(1, &[])),                                       // close
    (4, emu(2, &[fixed(1, STAT), path(0)])),                // stat
    (5, emu(2, &[fixed(1, STAT)])),                         // fstat
    (6, emu(2, &[fixed(1, STAT), path(0)])),                // lstat
    (7, emu(3, &[always(out(0, LEN_ARG, 1, POLLFD))])),     // poll: revents even if cut short
    (8, emu(3, &[])),                                       // lseek
    (9, exe(6)),                                            // mmap
    (10, exe(3)),                                           // mprotect
    (11, exe(2)),                                           // munmap
    (12, exe(1)),                                           // brk
    (13, row(4, ACTION_EXECUTE, &[fixed(2, SIGACTION)])),   // rt_sigaction: oldact
    (14, row(4, ACTION_EXECUTE, &[out(2, LEN_ARG, 3, 1)])), // rt_sigprocmask: oldset
    (15, exe(0)),                                           // rt_sigreturn
    (16, emu(3, &[out(2, LEN_IOCTL, 1, 0)])),               // ioctl
    (17, emu(4, &[ret(1)])),                                // pread64
    (18, emu(4, &[written(1)])),                            // pwrite64
    (19, emu(3, &[out(1, LEN_IOV, 2, 0)])),                 // readv
    (20, emu(3, &[])),                                      // writev
    (21, emu(2, &[path(0)])),                               // access
    (22, emu(1, &[fixed(0, 8)])),                           // pipe
    (
        23,
        emu(
            5,
            &[
                out(1, LEN_FDSET, 0, 0),
                out(2, LEN_FDSET, 0, 0),
                out(3, LEN_FDSET, 0, 0),
                // The time left, written back however it returns.
                always(fixed(4, TIMEVAL)),
            ],
        ),
    ), // select
    (24, emu(0, &[])),                                      // sched_yield
    (25, exe(5)),                                           // mremap
    (26, emu(3, &[])),                                      // msync
    (27, emu(3, &[out(2, LEN_ARG, 1, 1)])),                 // mincore (approx: one byte per page)
    (28, exe(3)),                                           // madvise
    (32, emu(1, &[])),                                      // dup
    (33, emu(2, &[])),                                      // dup2
    (34, emu(0, &[])),                                      // pause
    (35, emu(2, &[always(fixed(1, TIMESPEC))])),            // nanosleep
    (36, emu(2, &[fixed(1, ITIMERVAL)])),                   // getitimer
    (37, emu(1, &[])),                                      // alarm
    (38, emu(3, &[fixed(2, ITIMERVAL)])),                   // setitimer
    (39, emu(0, &[])),                                      // getpid
    (40, emu(4, &[fixed(2, 8)])),                           // sendfile: offset
    (41, emu(3, &[])),                                      // socket
    (42, emu(3, &[])),                                      // connect
    (
        43,
        emu(3, &[out(1, LEN_LENPTR, 2, SOCKADDR_MAX), fixed(2, 4)]),
    ), // accept
    (44, emu(6, &[])),                                      // sendto
    (
        45,
        emu(
            6,
            &[
                ret_within(1, 2),
                out(4, LEN_LENPTR, 5, SOCKADDR_MAX),
                fixed(5, 4),
            ],
        ),
    ), // recvfrom
    (46, emu(3, &[])),                                      // sendmsg
    (47, emu(3, &[out(1, LEN_MSGHDR, 0, 0)])),              // recvmsg
    (48, emu(2, &[])),                                      // shutdown
    (49, emu(3, &[])),                                      // bind
    (50, emu(2, &[])),                                      // listen
    (
        51,
        emu(3, &[out(1, LEN_LENPTR, 2, SOCKADDR_MAX), fixed(2, 4)]),
    ), // getsockname
    (
        52,
        emu(3, &[out(1, LEN_LENPTR, 2, SOCKADDR_MAX), fixed(2, 4)]),
    ), // getpeername
    (53, emu(4, &[fixed(3, 8)])),                           // socketpair
    (54, emu(5, &[])),                                      // setsockopt
    (55, emu(5, &[out(3, LEN_LENPTR, 4, 256), fixed(4, 4)])), // getsockopt
    (56, exe(5)),                                           // clone
    (57, exe(0)),                                           // fork
    (58, exe(0)),                                           // vfork
    (59, row(3, ACTION_EXECUTE, &[path(0)])),               // execve
    (60, exe(1)),                                           // exit
    (61, emu(4, &[fixed(1, 4), fixed(3, RUSAGE)])),         // wait4
    (62, emu(2, &[])),                                      // kill
    (63, emu(1, &[fixed(0, UTSNAME)])),                     // uname
    (72, emu(3, &[out(2, LEN_CMD, 1, CMD_FCNTL)])),         // fcntl
    (73, emu(2, &[])),                                      // flock
    (74, emu(1, &[])),                                      // fsync
    (75, emu(1, &[])),                                      // fdatasync
    (76, emu(2, &[path(0)])),                               // truncate
    (77, emu(2, &[])),                                      // ftruncate
    (78, emu(3, &[ret(1)])),                                // getdents
    (79, emu(2, &[ret(0)])),                                // getcwd
    (80, emu(1, &[path(0)])),                               // chdir
    (81, emu(1, &[])),                                      // fchdir
    (82, emu(2, &[path(0), path(1)])),                      // rename
    (83, emu(2, &[path(0)])),                               // mkdir
    (84, emu(1, &[path(0)])),                               // rmdir
    (85, emu(2, &[path(0)])),                               // creat
    (86, emu(2, &[path(0), path(1)])),                      // link
    (87, emu(1, &[path(0)])),                               // unlink
    (88, emu(2, &[path(0), path(1)])),                      // symlink
    (89, emu(3, &[ret(1), path(0)])),                       // readlink
    (90, emu(2, &[path(0)])),                               // chmod
    (91, emu(2, &[])),                                      // fchmod
    (92, emu(3, &[path(0)])),                               // chown
    (93, emu(3, &[])),                                      // fchown
    (95, emu(1, &[])),                                      // umask
    (96, emu(2, &[fixed(0, TIMEVAL), fixed(1, 8)])),        // gettimeofday
    (97, emu(2, &[fixed(1, RLIMIT)])),                      // getrlimit
    (98, emu(2, &[fixed(1, RUSAGE)])),                      // getrusage
    (99, emu(1, &[fixed(0, SYSINFO)])),                     // sysinfo
    (100, emu(1, &[fixed(0, TMS)])),                        // times
    (101, emu(4, &[])),                                     // ptrace
    (102, emu(0, &[])),                                     // getuid
    (104, emu(0, &[])),                                     // getgid
    (107, emu(0, &[])),                                     // geteuid
    (108, emu(0, &[])),                                     // getegid
    (109, emu(2, &[])),                                     // setpgid
    (110, emu(0, &[])),                                     // getppid
    (111, emu(0, &[])),                                     // getpgrp
    (112, emu(0, &[])),                                     // setsid
    (115, emu(2, &[out(1, LEN_RET_TIMES, 0, 4)])),          // getgroups
    (118, emu(3, &[fixed(0, 4), fixed(1, 4), fixed(2, 4)])), // getresuid
    (120, emu(3, &[fixed(0, 4), fixed(1, 4), fixed(2, 4)])), // getresgid
    (121, emu(1, &[])),                                     // getpgid
    (124, emu(1, &[])),                                     // getsid
    (125, emu(2, &[fixed(1, CAP_DATA)])),                   // capget
    (127, emu(2, &[out(0, LEN_ARG, 1, 1)])),                // rt_sigpending
    (128, emu(4, &[fixed(1, SIGINFO)])),                    // rt_sigtimedwait
    (130, emu(2, &[])),                                     // rt_sigsuspend
    (131, row(2, ACTION_EXECUTE, &[fixed(1, STACK_T)])),    // sigaltstack
    (137, emu(2, &[fixed(1, STATFS), path(0)])),            // statfs
    (138, emu(2, &[fixed(1, STATFS)])),                     // fstatfs
    (140, emu(2, &[])),                                     // getpriority
    (143, emu(2, &[fixed(1, SCHED_PARAM)])),                // sched_getparam
    (145, emu(1, &[])),                                     // sched_getscheduler
    (148, emu(2, &[fixed(1, TIMESPEC)])),                   // sched_rr_get_interval
    (157, emu(5, &[out(1, LEN_CMD, 0, CMD_PRCTL)])),        // prctl
    (158, exe(2)),                                          // arch_prctl
    (159, emu(1, &[fixed(0, TIMEX)])),                      // adjtimex
    (186, emu(0, &[])),                                     // gettid
    (191, emu(4, &[out(2, LEN_ARG, 3, 1), path(0)])),       // getxattr
    (192, emu(4, &[out(2, LEN_ARG, 3, 1), path(0)])),       // lgetxattr
    (193, emu(4, &[out(2, LEN_ARG, 3, 1)])),                // fgetxattr
    (194, emu(3, &[ret(1), path(0)])),                      // listxattr
    (195, emu(3, &[ret(1), path(0)])),                      // llistxattr
    (196, emu(3, &[ret(1)])),                               // flistxattr
    (200, emu(2, &[])),                                     // tkill
    (201, emu(1, &[fixed(0, 8)])),                          // time
    (202, emu(6, &[])),                                     // futex
    (204, emu(3, &[ret(2)])),                               // sched_getaffinity
    (213, emu(1, &[])),                                     // epoll_create
    (217, emu(3, &[ret(1)])),                               // getdents64
    (218, exe(1)),                                          // set_tid_address
    (221, emu(4, &[])),                                     // fadvise64
    (222, emu(3, &[fixed(2, 4)])),                          // timer_create: timer id
    (223, emu(4, &[fixed(3, ITIMERSPEC)])),                 // timer_settime: old value
    (224, emu(2, &[fixed(1, ITIMERSPEC)])),                 // timer_gettime
    (228, emu(2, &[fixed(1, TIMESPEC)])),                   // clock_gettime
    (229, emu(2, &[fixed(1, TIMESPEC)])),                   // clock_getres
    (230, emu(4, &[always(fixed(3, TIMESPEC))])),           // clock_nanosleep
    (231, exe(1)),                                          // exit_group
    (232, emu(4, &[out(1, LEN_RET_TIMES, 0, EPOLL_EVENT)])), // epoll_wait
    (233, emu(4, &[])),                                     // epoll_ctl
    (234, emu(3, &[])),                                     // tgkill
    // get_mempolicy: the mode, and a node mask of `maxnode` bits (libnuma
    // restores the mode it read: `ps` and `top` diverged on it).
    (239, emu(5, &[fixed(0, 4), out(1, LEN_FDSET, 2, 0)])),
    (247, emu(5, &[fixed(2, SIGINFO), fixed(4, RUSAGE)])), // waitid
    (257, emu(4, &[path(1)])),                             // openat
    (258, emu(3, &[path(1)])),                             // mkdirat
    (259, emu(4, &[path(1)])),                             // mknodat
    (260, emu(5, &[path(1)])),                             // fchownat
    (262, emu(4, &[fixed(2, STAT), path(1)])),             // newfstatat
    (263, emu(3, &[path(1)])),                             // unlinkat
    (264, emu(4, &[path(1), path(3)])),                    // renameat
    (265, emu(5, &[path(1), path(3)])),                    // linkat
    (266, emu(3, &[path(0), path(2)])),                    // symlinkat
    (267, emu(4, &[ret(2), path(1)])),                     // readlinkat
    (268, emu(3, &[path(1)])),                             // fchmodat
    (269, emu(3, &[path(1)])),                             // faccessat
    (
        270,
        emu(
            6,
            &[
                out(1, LEN_FDSET, 0, 0),
                out(2, LEN_FDSET, 0, 0),
                out(3, LEN_FDSET, 0, 0),
                always(fixed(4, TIMESPEC)),
            ],
        ),
    ), // pselect6
    (
        271,
        emu(
            5,
            &[
                always(out(0, LEN_ARG, 1, POLLFD)),
                always(fixed(2, TIMESPEC)),
            ],
        ),
    ), // ppoll
    (273, exe(2)),                                         // set_robust_list
    (274, emu(3, &[fixed(1, 8), fixed(2, 8)])),            // get_robust_list
    (275, emu(6, &[fixed(1, 8), fixed(3, 8)])),            // splice: offsets
    (279, emu(6, &[out(4, LEN_ARG, 1, 4)])),               // move_pages: status
    (280, emu(4, &[path(1)])),                             // utimensat
    (281, emu(6, &[out(1, LEN_RET_TIMES, 0, EPOLL_EVENT)])), // epoll_pwait
    (284, emu(2, &[])),                                    // eventfd
    (285, emu(4, &[])),                                    // fallocate
    (286, emu(4, &[fixed(3, ITIMERSPEC)])),                // timerfd_settime: old value
    (287, emu(2, &[fixed(1, ITIMERSPEC)])),                // timerfd_gettime
    (
        288,
        emu(4, &[out(1, LEN_LENPTR, 2, SOCKADDR_MAX), fixed(2, 4)]),
    ), // accept4
    (290, emu(2, &[])),                                    // eventfd2
    (291, emu(1, &[])),                                    // epoll_create1
    (292, emu(3, &[])),                                    // dup3
    (293, emu(2, &[fixed(0, 8)])),                         // pipe2
    (295, emu(5, &[out(1, LEN_IOV, 2, 0)])),               // preadv
    (296, emu(5, &[])),                                    // pwritev
    (302, emu(4, &[fixed(3, RLIMIT)])),                    // prlimit64
    (305, emu(2, &[fixed(1, TIMEX)])),                     // clock_adjtime
    (309, emu(3, &[fixed(0, 4), fixed(1, 4)])),            // getcpu
    (310, emu(6, &[out(1, LEN_IOV, 2, 0)])),               // process_vm_readv
    (315, emu(4, &[out(1, LEN_ARG, 2, 1)])),               // sched_getattr
    (316, emu(5, &[path(1), path(3)])),                    // renameat2
    (318, emu(3, &[ret(0)])),                              // getrandom
    (319, emu(2, &[])),                                    // memfd_create
    (322, row(5, ACTION_EXECUTE, &[path(1)])),             // execveat
    (326, emu(6, &[fixed(1, 8), fixed(3, 8)])),            // copy_file_range: offsets
    (327, emu(6, &[out(1, LEN_IOV, 2, 0)])),               // preadv2
    (328, emu(6, &[])),                                    // pwritev2
    (332, emu(5, &[fixed(4, STATX), path(1)])),            // statx
    (334, exe(4)),                                         // rseq
    (435, row(2, ACTION_EXECUTE, &[input_struct(0, 1)])),  // clone3: struct clone_args
    (436, emu(3, &[])),                                    // close_range
    (437, emu(4, &[path(1)])),                             // openat2
    (439, emu(4, &[path(1)])),                             // faccessat2
    (441, emu(6, &[out(1, LEN_RET_TIMES, 0, EPOLL_EVENT)])), // epoll_pwait2
    (PSEUDO_RDTSC, emu(1, &[])),                           // rdtsc (pseudo)
    (PSEUDO_SIGINFO, emu(1, &[])),                         // siginfo (pseudo)
];

/// The row for syscall `nr`.
pub fn spec(nr: u32) -> SyscallSpec {
    match TABLE.binary_search_by_key(&nr, |&(n, _)| n) {
        Ok(i) => TABLE[i].1,
        Err(_) => DEFAULT_SPEC,
    }
}

/// Pseudo-syscall: a `rdtsc`/`rdtscp` the supervisor trapped and answered
/// (the target runs with PR_SET_TSC = PR_TSC_SIGSEGV). Logged as a syscall
/// event: `ret` is the counter value, `args[0]` is TSC_AUX for `rdtscp`
/// and `u64::MAX` for `rdtsc`. Replay answers the same instruction with it.
pub const PSEUDO_RDTSC: u32 = 1000;

/// Pseudo-syscall: the `siginfo_t` of a signal about to be delivered, as the
/// supervisor saw it (PTRACE_GETSIGINFO): `args[0]` is the signal, the 128
/// bytes are its output. Replay delivers the signal with the same siginfo.
pub const PSEUDO_SIGINFO: u32 = 1001;

/// The syscall's name, or `None` for a number this table does not name.
pub fn name(nr: u32) -> Option<&'static str> {
    if nr == PSEUDO_RDTSC {
        return Some("rdtsc");
    }
    if nr == PSEUDO_SIGINFO {
        return Some("siginfo");
    }
    NAMES.get(nr as usize).copied().filter(|n| !n.is_empty())
}

/// The number of a syscall by name.
pub fn number(name: &str) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    if name == "rdtsc" {
        return Some(PSEUDO_RDTSC);
    }
    if name == "siginfo" {
        return Some(PSEUDO_SIGINFO);
    }
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// One past the highest syscall number the recorder keeps a row for.
pub const TABLE_SIZE: u32 = 512;
const _: () = assert!(SYSCALL_COUNT as u32 <= TABLE_SIZE);

/// Whether a program that has just exec'd may still have to read `cpuid`
/// after syscall `nr`: glibc's ld.so makes `brk` first, then reads `cpuid`
/// (keeping the CPU's APIC id), querying CET with `arch_prctl`. The
/// recorder keeps a starting process on its CPU until the entry of its
/// first other call; replay runs everything before that call on the CPU
/// the recording ran it on.
pub fn before_cpuid(nr: u64) -> bool {
    nr == nr::BRK as u64 || nr == nr::ARCH_PRCTL as u64
}

/// Syscall numbers of special interest to the recorder.
pub mod nr {
    pub const MMAP: u32 = 9;
    pub const MPROTECT: u32 = 10;
    pub const MUNMAP: u32 = 11;
    pub const BRK: u32 = 12;
    pub const MREMAP: u32 = 25;
    pub const ARCH_PRCTL: u32 = 158;
    pub const CLONE: u32 = 56;
    pub const FORK: u32 = 57;
    pub const VFORK: u32 = 58;
    pub const EXECVE: u32 = 59;
    pub const EXIT: u32 = 60;
    pub const FUTEX: u32 = 202;
    pub const EXIT_GROUP: u32 = 231;
    pub const RESTART_SYSCALL: u32 = 219;
    pub const EXECVEAT: u32 = 322;
    pub const CLONE3: u32 = 435;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_sane() {
        for w in TABLE.windows(2) {
            assert!(w[0].0 < w[1].0, "table not sorted at {}", w[1].0);
        }
        for &(nr, spec) in TABLE {
            assert!(name(nr).is_some(), "syscall {nr} has no name");
            assert!(spec.nargs <= 6);
            for o in &spec.outs[..spec.nouts as usize] {
                assert!(
                    o.arg < spec.nargs,
                    "{:?}: output arg beyond nargs",
                    name(nr)
                );
                assert!(o.rule != LEN_NONE);
                assert!(
                    o.rule != LEN_CSTR || o.when & WHEN_INPUT != 0,
                    "{:?}: strings are inputs",
                    name(nr)
                );
            }
        }
    }

    #[test]
    fn command_outputs() {
        let fcntl = spec(72).outs[0];
        assert_eq!((fcntl.rule, fcntl.param), (LEN_CMD, 1));
        assert_eq!(cmd_out_len(fcntl.size, 5), 32, "F_GETLK");
        assert_eq!(
            cmd_out_len(fcntl.size, 6),
            0,
            "F_SETLK reads, writes nothing"
        );
        let prctl = spec(157).outs[0];
        assert_eq!((prctl.arg, prctl.param), (1, 0));
        assert_eq!(cmd_out_len(prctl.size, 16), 16, "PR_GET_NAME");
        assert_eq!(cmd_out_len(prctl.size, 15), 0, "PR_SET_NAME");
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(name(0), Some("read"));
        assert_eq!(number("getdents64"), Some(217));
        assert_eq!(spec(217).outs[0].rule, LEN_RET);
        assert_eq!(spec(9999), DEFAULT_SPEC);
    }
}
