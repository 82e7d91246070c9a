//! `--json`: one JSON object per event, fields in a fixed order.
//!
//! Common fields: `seq`, `epoch`, `time_ns`, `cpu`, `pid`, `tid`, `kind`.
//! Per kind:
//! - `syscall`: `name`, `nr`, `args`, `ret`, `error` (errno name, only on
//!   failure), `enter_ns`, `flags`, `out_hex` (the first output's bytes, "" if
//!   none) and `outputs` (`[{arg, addr, len, complete, out_hex}]`);
//! - `switch`: `prev_tid`, `next_tid`, `prev_state`, `preempted`, `ip`, `sp`;
//! - `fork`: `child_pid`, `child_tid`, `flags`;
//! - `exec`: `path`, `argv`;
//! - `exit`: `code`, `signal`, `group_dead`;
//! - `signal`: `sig`, `signame`, `phase` ("generated" / "delivered"), `code`,
//!   `errno`, `result`, `target_tid`;
//! - `epoch`: `new_epoch`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;
use tracelog::{Event, EventKind, SignalPhase};

use super::format::{errno_name, errno_of, signal_name, sync_name, syscall_name};

#[derive(Debug, Serialize)]
struct JsonEvent<'a> {
    seq: u64,
    epoch: u32,
    time_ns: u64,
    cpu: u32,
    pid: u32,
    tid: u32,
    kind: &'static str,
    #[serde(flatten)]
    body: Body<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Syscall {
        name: Cow<'static, str>,
        nr: u32,
        args: &'a [u64],
        ret: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<Cow<'static, str>>,
        enter_ns: u64,
        flags: u32,
        out_hex: String,
        outputs: Vec<JsonOutput>,
    },
    Switch {
        prev_tid: u32,
        next_tid: u32,
        prev_state: u64,
        preempted: bool,
        ip: u64,
        sp: u64,
    },
    Fork {
        child_pid: u32,
        child_tid: u32,
        flags: u64,
    },
    Exec {
        path: &'a str,
        argv: &'a [String],
    },
    Exit {
        code: i32,
        signal: u32,
        group_dead: bool,
    },
    Signal {
        sig: u32,
        signame: Cow<'static, str>,
        phase: &'static str,
        code: i32,
        errno: i32,
        result: i32,
        target_tid: u32,
    },
    Epoch {
        new_epoch: u32,
    },
    Sync {
        function: Cow<'static, str>,
        op: u32,
        ip: u64,
        object: u64,
    },
}

#[derive(Debug, Serialize)]
struct JsonOutput {
    arg: u8,
    addr: u64,
    len: usize,
    complete: bool,
    out_hex: String,
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn body(ev: &Event) -> Body<'_> {
    match &ev.kind {
        EventKind::Syscall(sc) => Body::Syscall {
            name: syscall_name(sc.nr),
            nr: sc.nr,
            args: sc.args.as_slice(),
            ret: sc.ret,
            error: errno_of(sc.ret, sc.flags).map(errno_name),
            enter_ns: sc.enter_ns,
            flags: sc.flags,
            out_hex: sc.outputs.first().map(|o| hex(&o.data)).unwrap_or_default(),
            outputs: sc
                .outputs
                .iter()
                .map(|o| JsonOutput {
                    arg: o.arg,
                    addr: o.addr,
                    len: o.data.len(),
                    complete: o.complete,
                    out_hex: hex(&o.data),
                })
                .collect(),
        },
        EventKind::Switch {
            prev_tid,
            next_tid,
            prev_state,
            ip,
            sp,
        } => Body::Switch {
            prev_tid: *prev_tid,
            next_tid: *next_tid,
            prev_state: *prev_state,
            preempted: *prev_state == 0,
            ip: *ip,
            sp: *sp,
        },
        EventKind::Fork {
            child_pid,
            child_tid,
            flags,
        } => Body::Fork {
            child_pid: *child_pid,
            child_tid: *child_tid,
            flags: *flags,
        },
        EventKind::Exec { path, argv } => Body::Exec { path, argv },
        EventKind::Exit {
            code,
            signal,
            group_dead,
        } => Body::Exit {
            code: *code,
            signal: *signal,
            group_dead: *group_dead,
        },
        EventKind::Signal {
            sig,
            phase,
            code,
            errno,
            result,
            target_tid,
        } => Body::Signal {
            sig: *sig,
            signame: signal_name(*sig),
            phase: match phase {
                SignalPhase::Generated => "generated",
                SignalPhase::Delivered => "delivered",
            },
            code: *code,
            errno: *errno,
            result: *result,
            target_tid: *target_tid,
        },
        EventKind::EpochMark { epoch } => Body::Epoch { new_epoch: *epoch },
        EventKind::Sync { op, ip, object } => Body::Sync {
            function: sync_name(*op),
            op: *op,
            ip: *ip,
            object: *object,
        },
    }
}

/// Appends the event as one line of JSON (without the newline).
pub fn event_line(out: &mut String, ev: &Event) {
    let j = JsonEvent {
        seq: ev.seq,
        epoch: ev.epoch,
        time_ns: ev.time_ns,
        cpu: ev.cpu,
        pid: ev.pid,
        tid: ev.tid,
        kind: ev.kind.name(),
        body: body(ev),
    };
    // Serialising plain data with string keys cannot fail.
    out.push_str(&serde_json::to_string(&j).unwrap_or_default());
}
