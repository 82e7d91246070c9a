//! `uniplay record`.

use recorder_user::{
    dirty::TrackWrites,
    probe::RingSizes,
    session::{self, CheckpointOptions, RecordOptions, Target},
    sys::{self, ExitStatus, HeldChild},
    RecordError,
};

use crate::{
    cli::{RecordArgs, TrackWritesArg},
    exit,
};

pub fn run(args: RecordArgs) -> i32 {
    match record(args) {
        Ok(code) => code,
        Err(e) => {
            exit::report(&e);
            exit_code(&e)
        }
    }
}

fn exit_code(e: &RecordError) -> i32 {
    match e {
        RecordError::MissingCapability { .. }
        | RecordError::NoBtf { .. }
        | RecordError::MissingTracepoint { .. }
        | RecordError::NoTracefs { .. }
        | RecordError::TracepointFormat { .. }
        | RecordError::TracepointField { .. }
        | RecordError::Load { .. }
        | RecordError::Program { .. } => exit::CANNOT_RECORD,
        // As a shell says it: not found, found but not executable.
        RecordError::Launch { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
        RecordError::Launch { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            126
        }
        RecordError::NoSuchProcess { .. }
        | RecordError::Zombie { .. }
        | RecordError::Launch { .. }
        | RecordError::Supervise { .. } => exit::BAD_INPUT,
        RecordError::Trace {
            source: tracelog::Error::DirNotEmpty { .. } | tracelog::Error::Locked { .. },
        } => exit::BAD_INPUT,
        _ => exit::FAILURE,
    }
}

fn record(args: RecordArgs) -> Result<i32, RecordError> {
    if args.pid.is_none() && args.command.is_empty() {
        eprintln!("uniplay: error: nothing to record: give a command after `--` or --pid PID (see uniplay record --help)");
        return Ok(2);
    }
    // A Ctrl-C from here on waits for the recording's handler (the
    // launched command starts with no signal blocked).
    sys::block_stop_signals(true);
    // Everything that can be checked is checked before a child exists, and
    // the child is forked before any thread is started.
    let config = session::preflight()?;
    if let Some(pid) = args.pid {
        if !sys::process_exists(pid) {
            return Err(RecordError::NoSuchProcess { pid });
        }
        if sys::task_state(pid).is_some_and(|s| s.starts_with('Z')) {
            return Err(RecordError::Zombie { pid });
        }
    }
    if args.output.exists() && !args.force {
        let msg = format!(
            "{} exists: choose another -o DIR, or add --force to replace it",
            args.output.display()
        );
        eprintln!("uniplay: error: {msg}");
        return Ok(exit::BAD_INPUT);
    }
    let target = match args.pid {
        Some(pid) => Target::Attach { pid },
        None => Target::Launch {
            child: HeldChild::spawn(&args.command)?,
            argv: args.command.clone(),
        },
    };
    let opts = RecordOptions {
        out: args.output.clone(),
        force: args.force,
        rings: RingSizes {
            data: args.ring_size,
            lifecycle: args.lifecycle_ring_size,
        },
        status_line: !args.quiet && sys::stderr_is_tty(),
        writer: tracelog::WriterOptions {
            force: args.force,
            segment_epochs: args.keep_epochs.is_some(),
            keep_epochs: args.keep_epochs,
            ..Default::default()
        },
        checkpoints: (!args.no_checkpoints).then_some(CheckpointOptions {
            epoch: args.epoch,
            epoch_events: args.epoch_events,
            keep_epochs: args.keep_epochs,
            track_writes: match args.track_writes {
                TrackWritesArg::Auto => TrackWrites::Auto,
                TrackWritesArg::Always => TrackWrites::Always,
                TrackWritesArg::Never => TrackWrites::Never,
            },
            cut_at_syscall: args.cut_at_syscall,
            sync_order: !args.no_sync_order,
        }),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RecordError::Io {
            what: "starting the runtime",
            source,
        })?;
    let outcome = rt.block_on(session::record(config, target, opts))?;

    let meta = &outcome.meta;
    let events: u64 = meta.event_counts.values().sum();
    if !args.quiet {
        eprintln!(
            "uniplay: recorded {} events from {} process(es), {} thread(s) into {} ({})",
            events,
            meta.pids.len(),
            meta.tids.len(),
            args.output.display(),
            meta.end_reason
        );
    }
    if outcome.lost > 0 {
        eprintln!(
            "uniplay: {} lost: {} events dropped (ring buffer full), {} outputs not copied in full; try a larger --ring-size",
            if args.allow_loss { "warning" } else { "error" },
            meta.losses.ring_full,
            meta.losses.incomplete_copies
        );
        if !args.allow_loss {
            return Ok(exit::LOST_EVENTS);
        }
    }
    Ok(match outcome.child {
        Some(ExitStatus::Code(c)) => c,
        Some(ExitStatus::Signal(s)) => 128 + s,
        None => 0,
    })
}
