//! Text rendering shared by the listings, the summary and the Perfetto
//! export: syscall, errno and signal names, strace-style strings, and the
//! one-line form of each event.

use std::borrow::Cow;
use std::fmt::Write as _;

use recorder_common::SLOT_INPUT;
use tracelog::{
    Event, EventKind, SignalPhase, Syscall, SYSCALL_ENTER_UNSEEN, SYSCALL_INCOMPLETE_COPY,
    SYSCALL_NO_RETURN,
};

/// Output buffers are shown up to this many bytes (like `strace -s 32`).
pub const STRING_LIMIT: usize = 32;

/// `read`, or `syscall_<nr>` for a number without a name.
pub fn syscall_name(nr: u32) -> Cow<'static, str> {
    match recorder_common::name(nr) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(format!("syscall_{nr}")),
    }
}

/// The errno a raw syscall return value stands for, if it is an error.
pub fn errno_of(ret: i64, flags: u32) -> Option<i64> {
    (flags & SYSCALL_NO_RETURN == 0 && (-4095..=-1).contains(&ret)).then_some(-ret)
}

/// (name, description) of the common errno values (x86-64 Linux numbering),
/// including the kernel-internal restart codes a tracer can see.
fn errno_info(errno: i64) -> Option<(&'static str, &'static str)> {
    Some(match errno {
        1 => ("EPERM", "Operation not permitted"),
        2 => ("ENOENT", "No such file or directory"),
        3 => ("ESRCH", "No such process"),
        4 => ("EINTR", "Interrupted system call"),
        5 => ("EIO", "Input/output error"),
        6 => ("ENXIO", "No such device or address"),
        7 => ("E2BIG", "Argument list too long"),
        8 => ("ENOEXEC", "Exec format error"),
        9 => ("EBADF", "Bad file descriptor"),
        10 => ("ECHILD", "No child processes"),
        11 => ("EAGAIN", "Resource temporarily unavailable"),
        12 => ("ENOMEM", "Cannot allocate memory"),
        13 => ("EACCES", "Permission denied"),
        14 => ("EFAULT", "Bad address"),
        16 => ("EBUSY", "Device or resource busy"),
        17 => ("EEXIST", "File exists"),
        18 => ("EXDEV", "Invalid cross-device link"),
        19 => ("ENODEV", "No such device"),
        20 => ("ENOTDIR", "Not a directory"),
        21 => ("EISDIR", "Is a directory"),
        22 => ("EINVAL", "Invalid argument"),
        23 => ("ENFILE", "Too many open files in system"),
        24 => ("EMFILE", "Too many open files"),
        25 => ("ENOTTY", "Inappropriate ioctl for device"),
        26 => ("ETXTBSY", "Text file busy"),
        27 => ("EFBIG", "File too large"),
        28 => ("ENOSPC", "No space left on device"),
        29 => ("ESPIPE", "Illegal seek"),
        30 => ("EROFS", "Read-only file system"),
        31 => ("EMLINK", "Too many links"),
        32 => ("EPIPE", "Broken pipe"),
        33 => ("EDOM", "Numerical argument out of domain"),
        34 => ("ERANGE", "Numerical result out of range"),
        35 => ("EDEADLK", "Resource deadlock avoided"),
        36 => ("ENAMETOOLONG", "File name too long"),
        38 => ("ENOSYS", "Function not implemented"),
        39 => ("ENOTEMPTY", "Directory not empty"),
        40 => ("ELOOP", "Too many levels of symbolic links"),
        61 => ("ENODATA", "No data available"),
        62 => ("ETIME", "Timer expired"),
        75 => ("EOVERFLOW", "Value too large for defined data type"),
        88 => ("ENOTSOCK", "Socket operation on non-socket"),
        95 => ("EOPNOTSUPP", "Operation not supported"),
        97 => ("EAFNOSUPPORT", "Address family not supported by protocol"),
        98 => ("EADDRINUSE", "Address already in use"),
        99 => ("EADDRNOTAVAIL", "Cannot assign requested address"),
        101 => ("ENETUNREACH", "Network is unreachable"),
        104 => ("ECONNRESET", "Connection reset by peer"),
        105 => ("ENOBUFS", "No buffer space available"),
        106 => ("EISCONN", "Transport endpoint is already connected"),
        107 => ("ENOTCONN", "Transport endpoint is not connected"),
        110 => ("ETIMEDOUT", "Connection timed out"),
        111 => ("ECONNREFUSED", "Connection refused"),
        113 => ("EHOSTUNREACH", "No route to host"),
        114 => ("EALREADY", "Operation already in progress"),
        115 => ("EINPROGRESS", "Operation now in progress"),
        125 => ("ECANCELED", "Operation canceled"),
        512 => ("ERESTARTSYS", "To be restarted if SA_RESTART is set"),
        513 => ("ERESTARTNOINTR", "To be restarted"),
        514 => ("ERESTARTNOHAND", "To be restarted if no handler"),
        516 => ("ERESTART_RESTARTBLOCK", "Interrupted by signal"),
        _ => return None,
    })
}

/// `ENOENT`, or `E<n>` for an errno not in the table.
pub fn errno_name(errno: i64) -> Cow<'static, str> {
    match errno_info(errno) {
        Some((name, _)) => Cow::Borrowed(name),
        None => Cow::Owned(format!("E{errno}")),
    }
}

/// `SIGSEGV`, `SIGRT_2` (for 34) or `SIG<n>`.
pub fn signal_name(sig: u32) -> Cow<'static, str> {
    match sig {
        1..=31 => Cow::Borrowed(recorder_common::SIGNAL_NAMES[sig as usize]),
        32..=64 => Cow::Owned(format!("SIGRT_{}", sig - 32)),
        _ => Cow::Owned(format!("SIG{sig}")),
    }
}

/// `si_code` as strace shows it: the generic `SI_*` names, else the number.
fn si_code(code: i32) -> Cow<'static, str> {
    Cow::Borrowed(match code {
        0 => "SI_USER",
        0x80 => "SI_KERNEL",
        -1 => "SI_QUEUE",
        -2 => "SI_TIMER",
        -3 => "SI_MESGQ",
        -4 => "SI_ASYNCIO",
        -5 => "SI_SIGIO",
        -6 => "SI_TKILL",
        _ => return Cow::Owned(code.to_string()),
    })
}

/// `bytes` as a C string literal, cut after `limit` bytes with `...` after
/// the closing quote (strace's rendering).
pub fn c_string(out: &mut String, bytes: &[u8], limit: usize) {
    out.push('"');
    let shown = &bytes[..bytes.len().min(limit)];
    for (i, &b) in shown.iter().enumerate() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x0b => out.push_str("\\v"),
            0x0c => out.push_str("\\f"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                // Short octal unless a digit follows, which would extend it.
                let next_is_digit = shown.get(i + 1).is_some_and(|n| n.is_ascii_digit());
                if next_is_digit {
                    let _ = write!(out, "\\{b:03o}");
                } else {
                    let _ = write!(out, "\\{b:o}");
                }
            }
        }
    }
    out.push('"');
    if bytes.len() > limit {
        out.push_str("...");
    }
}

/// A syscall argument: small values and small negatives in decimal,
/// everything else (pointers, flags words) in hex.
pub fn arg_value(out: &mut String, v: u64) {
    // An `int` argument arrives zero-extended, so -100 (AT_FDCWD) may read
    // 0xffffff9c.
    let signed = if v <= u64::from(u32::MAX) {
        i64::from(v as u32 as i32)
    } else {
        v as i64
    };
    if v < 0x10000 || (-4096..0).contains(&signed) {
        let _ = write!(out, "{}", if v < 0x10000 { v as i64 } else { signed });
    } else {
        let _ = write!(out, "{v:#x}");
    }
}

/// Syscalls whose successful result is an address.
fn returns_address(nr: u32) -> bool {
    matches!(
        recorder_common::name(nr),
        Some("mmap" | "mremap" | "brk" | "shmat")
    )
}

/// What follows `= `: `?`, `-1 ENOENT (No such file or directory)`, a number
/// or an address.
pub fn ret_value(out: &mut String, nr: u32, ret: i64, flags: u32) {
    if flags & SYSCALL_NO_RETURN != 0 {
        out.push('?');
    } else if let Some(errno) = errno_of(ret, flags) {
        match errno_info(errno) {
            Some((name, desc)) => {
                let _ = write!(out, "-1 {name} ({desc})");
            }
            None => {
                let _ = write!(out, "-1 E{errno}");
            }
        }
    } else if returns_address(nr) && ret > 0xffff {
        let _ = write!(out, "{ret:#x}");
    } else {
        let _ = write!(out, "{ret}");
    }
}

/// Seconds since `base`, with six decimals (may be negative: event times can
/// step back slightly between CPUs).
pub fn rel_time(out: &mut String, ns: u64, base: u64) {
    let d = i128::from(ns) - i128::from(base);
    let sign = if d < 0 { "-" } else { "" };
    let d = d.unsigned_abs();
    let _ = write!(
        out,
        "{sign}{}.{:06}",
        d / 1_000_000_000,
        d % 1_000_000_000 / 1000
    );
}

/// A duration as seconds with six decimals.
pub fn secs(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, ns % 1_000_000_000 / 1000)
}

/// Time spent in a syscall, if known.
pub fn syscall_duration(ev: &Event, sc: &Syscall) -> Option<u64> {
    (sc.flags & SYSCALL_ENTER_UNSEEN == 0).then(|| ev.time_ns.saturating_sub(sc.enter_ns))
}

/// `read(3, "GET / HTTP/1.1\r\n"..., 4096) = 16 <0.000012>`.
pub fn syscall_text(out: &mut String, ev: &Event, sc: &Syscall) {
    out.push_str(&syscall_name(sc.nr));
    out.push('(');
    let args = sc.args.as_slice();
    if args.is_empty() && sc.flags & SYSCALL_ENTER_UNSEEN != 0 {
        out.push_str("...");
    }
    for (i, &a) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // Bytes the kernel wrote there, else bytes it read from there
        // (a path is shown whole, like strace does).
        let written = sc
            .outputs
            .iter()
            .find(|o| usize::from(o.arg) == i && !o.data.is_empty());
        let read = sc
            .outputs
            .iter()
            .find(|o| usize::from(o.arg) == i + usize::from(SLOT_INPUT) && !o.data.is_empty());
        match (written, read) {
            (Some(o), _) => c_string(out, &o.data, STRING_LIMIT),
            (None, Some(o)) if o.data.last() == Some(&0) => {
                c_string(out, &o.data[..o.data.len() - 1], usize::MAX)
            }
            (None, Some(o)) => c_string(out, &o.data, STRING_LIMIT),
            (None, None) => arg_value(out, a),
        }
    }
    out.push_str(") = ");
    ret_value(out, sc.nr, sc.ret, sc.flags);
    let incomplete =
        sc.flags & SYSCALL_INCOMPLETE_COPY != 0 || sc.outputs.iter().any(|o| !o.complete);
    if incomplete {
        out.push_str(" <incomplete>");
    }
    match syscall_duration(ev, sc) {
        Some(d) if sc.flags & SYSCALL_NO_RETURN == 0 => {
            let _ = write!(out, " <{}>", secs(d));
        }
        Some(_) => {}
        None => out.push_str(" <enter unseen>"),
    }
}

/// A recorded synchronisation function's name, or its number.
pub fn sync_name(op: u32) -> Cow<'static, str> {
    match recorder_common::sync_name(op) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(format!("sync_op_{op}")),
    }
}

/// The event part of a listing line (no time, no tid).
pub fn event_text(out: &mut String, ev: &Event) {
    match &ev.kind {
        EventKind::Syscall(sc) => syscall_text(out, ev, sc),
        EventKind::Switch {
            prev_tid,
            next_tid,
            prev_state,
            ip,
            sp,
        } => {
            let _ = write!(out, "switch prev={prev_tid} next={next_tid} ");
            if *prev_state == 0 {
                out.push_str("(preempted)");
            } else {
                let _ = write!(out, "(blocked, state={prev_state:#x})");
            }
            if *ip != 0 {
                let _ = write!(out, " ip={ip:#x}");
            }
            if *sp != 0 {
                let _ = write!(out, " sp={sp:#x}");
            }
        }
        EventKind::Fork {
            child_pid,
            child_tid,
            flags,
        } => {
            let _ = write!(
                out,
                "--- fork child_pid={child_pid} child_tid={child_tid} flags={flags:#x} ---"
            );
        }
        EventKind::Exec { path, argv } => {
            out.push_str("+++ exec ");
            out.push_str(path);
            out.push_str(" [");
            for (i, a) in argv.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                c_string(out, a.as_bytes(), 256);
            }
            out.push_str("] +++");
        }
        EventKind::Exit {
            code,
            signal,
            group_dead,
        } => {
            out.push_str(if *group_dead { "+++ " } else { "+++ thread " });
            if *signal != 0 {
                let _ = write!(out, "killed by {}", signal_name(*signal));
            } else {
                let _ = write!(out, "exited with {code}");
            }
            out.push_str(" +++");
        }
        EventKind::Signal {
            sig,
            phase,
            code,
            errno,
            result,
            target_tid,
        } => {
            let _ = write!(
                out,
                "--- {} {{si_code={}, si_errno={errno}}} ",
                signal_name(*sig),
                si_code(*code)
            );
            match phase {
                SignalPhase::Generated => {
                    let _ = write!(out, "generated target={target_tid} result={result} ---");
                }
                SignalPhase::Delivered => out.push_str("delivered ---"),
            }
        }
        EventKind::EpochMark { epoch } => {
            let _ = write!(out, "=== epoch {epoch} ===");
        }
        EventKind::Sync { op, ip, object } => {
            let _ = write!(out, "~~~ {}({object:#x}) ip={ip:#x} ~~~", sync_name(*op));
        }
    }
}

/// One `--events` line: relative time, tid, event.
pub fn event_line(out: &mut String, ev: &Event, base: u64) {
    let mut t = String::new();
    rel_time(&mut t, ev.time_ns, base);
    let _ = write!(out, "{t:>10} {:>7} ", ev.tid);
    event_text(out, ev);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(b: &[u8], limit: usize) -> String {
        let mut s = String::new();
        c_string(&mut s, b, limit);
        s
    }

    #[test]
    fn inspect_c_strings() {
        assert_eq!(cs(b"GET / HTTP/1.1\r\n", 32), r#""GET / HTTP/1.1\r\n""#);
        assert_eq!(cs(b"abcdef", 3), r#""abc"..."#);
        assert_eq!(cs(b"\x7fELF\x02\x01\x00", 32), r#""\177ELF\2\1\0""#);
        assert_eq!(cs(b"\x001", 32), r#""\0001""#);
        assert_eq!(cs(b"a\"\\b", 32), r#""a\"\\b""#);
    }

    #[test]
    fn inspect_values() {
        let v = |x: u64| {
            let mut s = String::new();
            arg_value(&mut s, x);
            s
        };
        assert_eq!(v(3), "3");
        assert_eq!(v(0x7ffd_1234_0000), "0x7ffd12340000");
        assert_eq!(v(-100i64 as u64), "-100");
        assert_eq!(v(0xffff_ff9c), "-100");
        assert_eq!(v(0xffff_ffff), "-1");
        assert_eq!(v(0x8000_0000), "0x80000000");
        let r = |nr: u32, ret: i64, flags: u32| {
            let mut s = String::new();
            ret_value(&mut s, nr, ret, flags);
            s
        };
        assert_eq!(r(0, 16, 0), "16");
        assert_eq!(r(257, -2, 0), "-1 ENOENT (No such file or directory)");
        assert_eq!(r(257, -4000, 0), "-1 E4000");
        assert_eq!(r(231, 0, SYSCALL_NO_RETURN), "?");
        assert_eq!(r(9, 0x7f00_0000_0000, 0), "0x7f0000000000");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(34), "SIGRT_2");
    }

    #[test]
    fn inspect_rel_time() {
        let t = |ns: u64, base: u64| {
            let mut s = String::new();
            rel_time(&mut s, ns, base);
            s
        };
        assert_eq!(t(1_500_000_123, 1_000_000_000), "0.500000");
        assert_eq!(t(3_000_012_000, 1_000_000_000), "2.000012");
        assert_eq!(t(999_999_000, 1_000_000_000), "-0.000001");
    }
}
