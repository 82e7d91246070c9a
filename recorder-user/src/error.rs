use std::path::PathBuf;

/// Why a recording could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("missing capability {cap}: run as root, or grant it (setcap cap_bpf,cap_perfmon+ep)")]
    MissingCapability { cap: &'static str },
    #[error("no process with PID {pid}: check the PID (ps -p {pid})")]
    NoSuchProcess { pid: u32 },
    #[error("process {pid} has exited (a zombie its parent has not reaped): nothing runs there to record")]
    Zombie { pid: u32 },
    #[error(
        "the kernel has no BTF ({path}): uniplay needs a kernel built with CONFIG_DEBUG_INFO_BTF"
    )]
    NoBtf { path: &'static str },
    #[error("the kernel has no tracepoint {name}: uniplay needs it to record")]
    MissingTracepoint { name: String },
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed; mount it with `mount -t tracefs nodev /sys/kernel/tracing`")]
    NoTracefs {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read tracepoint format {path}")]
    TracepointFormat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracepoint format {path} has no field {field}")]
    TracepointField { path: PathBuf, field: &'static str },
    #[error("loading the eBPF recorder failed")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error("eBPF program {program} could not be loaded or attached")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {map} could not be used")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot launch {command}")]
    Launch {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot supervise the target for checkpoints: {reason}")]
    Supervise { reason: String },
    #[error("writing the trace failed")]
    Trace {
        #[source]
        source: tracelog::Error,
    },
    #[error("{what} failed")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl From<tracelog::Error> for RecordError {
    fn from(source: tracelog::Error) -> Self {
        RecordError::Trace { source }
    }
}
