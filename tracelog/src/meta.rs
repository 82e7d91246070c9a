//! `meta.json`: human-readable description of a trace. Every field has a
//! serde default so fields added later (same format version) don't break
//! reading older traces.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

pub(crate) const META_FILE: &str = "meta.json";

/// meta.json larger than this is not a meta file we wrote (guards the
/// allocation when reading a damaged or foreign directory).
const MAX_META_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Meta {
    pub format_version: u32,
    pub uniplay_version: String,
    pub host: Host,
    /// "launch" or "attach".
    pub mode: String,
    pub command: Vec<String>,
    /// "K=V" entries.
    pub env: Vec<String>,
    pub cwd: String,
    pub root_pid: u32,
    pub pids: Vec<u32>,
    pub tids: Vec<u32>,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub start_mono_ns: u64,
    pub end_mono_ns: u64,
    /// Events by kind name ([`crate::KIND_NAMES`]); filled by `finish`.
    pub event_counts: BTreeMap<String, u64>,
    pub losses: Losses,
    /// Kept epochs (oldest first): the first event's epoch, then one per
    /// `EpochMark`; epochs deleted by `drop_epochs_before` are removed.
    pub epochs: Vec<EpochInfo>,
    pub state: TraceState,
    pub exit: Option<ExitInfo>,
    pub end_reason: String,
    /// Files the target mapped while recording: path → content hash of its
    /// copy in `files/` (replay maps the copy where the program mapped the
    /// file). Files mapped at a checkpoint are also named in its maps.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Files mapped again after they changed (a config file rewritten and
    /// read back): every copy of such a path, oldest first, with the time
    /// of the mapping it was made for; `files` holds the first one. A
    /// mapping at time T uses the latest copy made for a mapping at or
    /// before T ([`Meta::file_at`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_versions: Vec<FileVersion>,
    /// Events are stored as one file per epoch, `events/NNNNNN.tlf`, instead
    /// of `events.tlf` (see `WriterOptions::segment_epochs`). Set by the writer.
    pub event_segments: bool,
    /// Oldest kept epoch: epochs before it were deleted (flight recorder).
    pub first_epoch: u32,
    /// Seq of the first kept event (0 unless epochs were deleted). Seqs are
    /// never renumbered, so a trace with deleted epochs starts here.
    pub first_seq: u64,
    /// `--keep-epochs K`: the recorder keeps only the last K epochs.
    pub keep_epochs: Option<u32>,
    /// How the order of lock calls was recorded: "multi-uprobe links",
    /// "uprobes" (one per function), or "off" with the reason. Empty in
    /// traces from before it was kept.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sync_probes: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Host {
    pub kernel: String,
    pub hostname: String,
    pub arch: String,
    pub cpus: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Losses {
    pub ring_full: u64,
    pub incomplete_copies: u64,
    pub per_cpu: Vec<CpuLoss>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct CpuLoss {
    pub cpu: u32,
    pub ring_full: u64,
    pub incomplete_copies: u64,
}

/// One copy of a file that changed while it was being mapped (see
/// `Meta::file_versions`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileVersion {
    pub path: String,
    /// Monotonic time of the mapping the copy was made for.
    pub time_ns: u64,
    /// Content hash of the copy in `files/`.
    pub hash: String,
}

impl Meta {
    /// The content hash of the copy of `path` for a mapping made at
    /// `time_ns` (monotonic).
    pub fn file_at(&self, path: &str, time_ns: u64) -> Option<&str> {
        self.file_versions
            .iter()
            .rfind(|v| v.path == path && v.time_ns <= time_ns)
            .map(|v| v.hash.as_str())
            .or_else(|| self.files.get(path).map(String::as_str))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct EpochInfo {
    pub index: u32,
    /// Seq of the epoch's first event (its `EpochMark`, except for the
    /// first epoch of a recording).
    pub start_seq: u64,
    pub start_ns: u64,
    /// Largest event time seen in the epoch (0 if unknown).
    pub end_ns: u64,
    /// Events pushed from this epoch's start to the next epoch's start.
    pub events: u64,
    /// A complete checkpoint `checkpoints/NNNNNN/` exists for this epoch.
    pub checkpoint: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ExitInfo {
    pub code: i32,
    pub signal: u32,
}

/// Life-cycle of a trace. Serialised as `{"kind": "recording"}`,
/// `{"kind": "complete"}` or `{"kind": "incomplete", "reason": "..."}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceState {
    /// The recorder is (or was, if it died) still writing.
    #[default]
    Recording,
    Complete,
    Incomplete {
        reason: String,
    },
}

impl std::fmt::Display for TraceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceState::Recording => f.write_str("still recording"),
            TraceState::Complete => f.write_str("complete"),
            TraceState::Incomplete { reason } => write!(f, "incomplete: {reason}"),
        }
    }
}

/// Reads and version-checks `dir/meta.json`.
pub(crate) fn read_meta(dir: &Path) -> Result<Meta, Error> {
    let path = dir.join(META_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingMeta { path })
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", &path, e))?
        .len();
    if len > MAX_META_BYTES {
        return Err(Error::corrupt(
            path,
            0,
            format!("{len} bytes is too large for a meta file"),
        ));
    }
    let text = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    // Check the version before the shape: another version may have fields
    // this one cannot parse, and "wrong version" is the useful message then.
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|source| Error::Meta {
        path: path.clone(),
        source,
    })?;
    let found = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if found != u64::from(crate::FORMAT_VERSION) {
        return Err(Error::Version {
            found,
            expected: crate::FORMAT_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|source| Error::Meta { path, source })
}

/// Replaces `dir/name` atomically: write a temporary file, fsync it, rename
/// it over the target, fsync the directory (so the rename itself is durable).
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), Error> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

pub(crate) fn write_meta(dir: &Path, meta: &Meta) -> Result<(), Error> {
    let mut text = serde_json::to_vec_pretty(meta).map_err(|source| Error::Meta {
        path: dir.join(META_FILE),
        source,
    })?;
    text.push(b'\n');
    write_atomic(dir, META_FILE, &text)
}
