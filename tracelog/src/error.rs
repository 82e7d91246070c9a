use std::path::PathBuf;

/// Everything that can go wrong writing or reading a trace.
///
/// Variants that wrap a cause keep it in `source` and do not repeat its text
/// in their own message, so error chains print each cause once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed (`op` is e.g. "write", "open", "fdatasync").
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("trace directory {} is not empty (use force to overwrite it)", path.display())]
    DirNotEmpty { path: PathBuf },

    #[error("trace directory {} is locked by a running recorder", path.display())]
    Locked { path: PathBuf },

    #[error("{} does not exist: not a trace directory, or its recorder never started", path.display())]
    MissingMeta { path: PathBuf },

    #[error("cannot parse {}", path.display())]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("trace format version {found}, this uniplay reads version {expected}")]
    Version { found: u64, expected: u32 },

    /// Damaged or truncated data; `offset` is the byte offset in `path` of the
    /// frame (or record) that could not be read.
    #[error("{} is damaged at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    #[error("event {seq} cannot be stored: {reason}")]
    InvalidEvent { seq: u64, reason: String },

    /// The background writer failed earlier; that error was already returned.
    #[error("trace writer stopped after an earlier error")]
    WriterFailed,

    #[error("trace writer's background thread panicked")]
    WriterPanicked,

    /// No complete checkpoint (with `state.json`) for this epoch.
    #[error("no complete checkpoint for epoch {epoch}")]
    NoCheckpoint { epoch: u32 },

    #[error("checkpoint {epoch} already exists")]
    CheckpointExists { epoch: u32 },

    #[error("checkpoint {epoch} has no process {pid}")]
    NoProcess { epoch: u32, pid: u32 },

    #[error("page at {addr:#x} of process {pid} cannot be stored: {reason}")]
    InvalidPage { pid: u32, addr: u64, reason: String },

    #[error("{what}")]
    Unsupported { what: &'static str },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A copy of a damage report (only `Corrupt` is ever stored as damage;
    /// other variants are rendered into a `Corrupt` since io errors don't clone).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Corrupt {
                path,
                offset,
                reason,
            } => Error::corrupt(path.clone(), *offset, reason.clone()),
            other => Error::corrupt(PathBuf::new(), 0, other.to_string()),
        }
    }
}
