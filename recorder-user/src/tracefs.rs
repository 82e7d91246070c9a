//! Tracepoint field offsets from tracefs `format` files. aya has no CO-RE
//! for Rust eBPF, so the programs read classic tracepoint fields at offsets
//! the daemon finds here at load time.

use std::path::{Path, PathBuf};

use recorder_common::Config;

use crate::{sys, RecordError};

/// Where tracefs lives (mounted on demand).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Tracepoints the recorder attaches to, as `(category, name)`.
pub const TRACEPOINTS: [(&str, &str); 6] = [
    ("sched", "sched_switch"),
    ("sched", "sched_process_fork"),
    ("sched", "sched_process_exec"),
    ("sched", "sched_process_exit"),
    ("signal", "signal_generate"),
    ("signal", "signal_deliver"),
];

/// The offset of `field` in a tracepoint `format` file's text.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let off = rest.trim().strip_prefix("offset:")?.split(';').next()?;
        off.trim().parse().ok()
    })
}

fn format_path(category: &str, name: &str) -> PathBuf {
    Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("format")
}

fn offsets(category: &str, name: &str, fields: &[&'static str]) -> Result<Vec<u32>, RecordError> {
    let path = format_path(category, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RecordError::MissingTracepoint {
                name: format!("{category}:{name}"),
            })
        }
        Err(source) => return Err(RecordError::TracepointFormat { path, source }),
    };
    fields
        .iter()
        .map(|&field| {
            field_offset(&text, field).ok_or_else(|| RecordError::TracepointField {
                path: path.clone(),
                field,
            })
        })
        .collect()
}

/// Mounts tracefs if needed, checks every tracepoint exists, and reads the
/// field offsets the programs need.
pub fn load_config() -> Result<Config, RecordError> {
    if !Path::new(TRACEFS).join("events").exists() {
        sys::mount_tracefs(TRACEFS).map_err(|source| RecordError::NoTracefs { source })?;
    }
    for (category, name) in TRACEPOINTS {
        if !format_path(category, name).exists() {
            return Err(RecordError::MissingTracepoint {
                name: format!("{category}:{name}"),
            });
        }
    }
    let sw = offsets(
        "sched",
        "sched_switch",
        &["prev_pid", "prev_state", "next_pid"],
    )?;
    let fork = offsets("sched", "sched_process_fork", &["parent_pid", "child_pid"])?;
    let exec = offsets(
        "sched",
        "sched_process_exec",
        &["filename", "pid", "old_pid"],
    )?;
    let exit = offsets("sched", "sched_process_exit", &["group_dead"])?;
    let gen = offsets(
        "signal",
        "signal_generate",
        &["sig", "errno", "code", "pid", "result"],
    )?;
    let del = offsets(
        "signal",
        "signal_deliver",
        &["sig", "errno", "code", "sa_handler"],
    )?;
    if (gen[0], gen[1], gen[2]) != (del[0], del[1], del[2]) {
        // The programs share these three offsets between both signal events.
        return Err(RecordError::TracepointField {
            path: format_path("signal", "signal_deliver"),
            field: "sig",
        });
    }
    Ok(Config {
        switch_prev_pid: sw[0],
        switch_prev_state: sw[1],
        switch_next_pid: sw[2],
        fork_parent_pid: fork[0],
        fork_child_pid: fork[1],
        exec_filename: exec[0],
        exec_pid: exec[1],
        exec_old_pid: exec[2],
        exit_group_dead: exit[0],
        sig_sig: gen[0],
        sig_errno: gen[1],
        sig_code: gen[2],
        sig_gen_pid: gen[3],
        sig_gen_result: gen[4],
        sig_del_sa_handler: del[3],
        self_tgid: std::process::id(),
        throttle_signal: 0,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWITCH: &str = "name: sched_switch
ID: 300
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
";

    #[test]
    fn tracefs_field_offsets() {
        assert_eq!(field_offset(SWITCH, "prev_pid"), Some(24));
        assert_eq!(field_offset(SWITCH, "prev_state"), Some(32));
        assert_eq!(field_offset(SWITCH, "prev_comm"), Some(8));
        assert_eq!(field_offset(SWITCH, "filename"), Some(8));
        assert_eq!(field_offset(SWITCH, "next_pid"), None);
        assert_eq!(field_offset(SWITCH, "pid"), None);
    }
}
