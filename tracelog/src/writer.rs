//! [`TraceWriter`]: batches events on the caller's thread and hands full
//! batches to a background thread that encodes, compresses and appends them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::blob::BlobWriter;
use crate::codec::{file_header, Encoder, EVENTS_MAGIC, FILE_HEADER_LEN, MAX_UNCOMPRESSED};
use crate::meta::{sync_dir, write_meta, EpochInfo, Meta, TraceState};
use crate::reader::{write_index, FrameInfo, EVENTS_FILE, LOCK_FILE};
use crate::{Error, Event, EventKind, FORMAT_VERSION, KIND_NAMES};

/// Frames handed to the background thread but not yet written. Bounds memory
/// (a few frames) and makes `push` block, rather than grow, if the disk is
/// slower than the recorder.
const FRAMES_IN_FLIGHT: usize = 2;
/// Upper bound on events per frame regardless of options, so that a frame's
/// metadata (at most ~120 bytes/event encoded) stays far below
/// MAX_UNCOMPRESSED.
const MAX_FRAME_EVENTS: usize = 1 << 18;
/// A batch is also cut when its inline payload bytes reach this, and a single
/// event may carry at most this much: together with MAX_FRAME_EVENTS this
/// keeps every frame under MAX_UNCOMPRESSED.
const MAX_BATCH_BYTES: usize = 64 << 20;
const _: () = assert!(MAX_FRAME_EVENTS * 128 + 2 * MAX_BATCH_BYTES < MAX_UNCOMPRESSED as usize);

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Overwrite (empty) an existing non-empty directory.
    pub force: bool,
    /// Events per frame (clamped to 1..=262144).
    pub frame_events: usize,
    /// `tick` writes a partial frame and fdatasyncs when this much time has
    /// passed since the last frame; bounds what a crash can lose.
    pub flush_interval: Duration,
    pub zstd_level: i32,
    /// Output payloads at least this long are stored once in blobs.tlf
    /// (usize::MAX disables deduplication).
    pub dedup_min_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            force: false,
            frame_events: 16384,
            flush_interval: Duration::from_secs(1),
            zstd_level: 3,
            dedup_min_bytes: 4096,
        }
    }
}

/// Snapshot of writer progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub events: u64,
    /// Bytes appended to events.tlf and blobs.tlf (compressed).
    pub bytes_written: u64,
    pub frames: u64,
}

#[derive(Debug, Default)]
struct StatsInner {
    events: AtomicU64,
    bytes_written: AtomicU64,
    frames: AtomicU64,
}

/// Cloneable, thread-safe view of a writer's [`WriterStats`].
#[derive(Debug, Clone, Default)]
pub struct StatsHandle(Arc<StatsInner>);

impl StatsHandle {
    pub fn get(&self) -> WriterStats {
        WriterStats {
            events: self.0.events.load(Ordering::Relaxed),
            bytes_written: self.0.bytes_written.load(Ordering::Relaxed),
            frames: self.0.frames.load(Ordering::Relaxed),
        }
    }
}

enum Msg {
    Frame {
        events: Vec<Event>,
        sync: bool,
    },
    /// Make everything written so far durable, then answer.
    Sync(SyncSender<()>),
}

struct BgDone {
    frames: Vec<FrameInfo>,
    events_len: u64,
}

/// Writes one trace directory. See the crate docs and docs/FORMAT.md.
#[derive(Debug)]
pub struct TraceWriter {
    dir: PathBuf,
    frame_events: usize,
    flush_interval: Duration,
    batch: Vec<Event>,
    batch_bytes: usize,
    next_seq: u64,
    tx: Option<SyncSender<Msg>>,
    handle: Option<JoinHandle<Result<BgDone, Error>>>,
    stats: StatsHandle,
    counts: [u64; KIND_NAMES.len()],
    epochs: Vec<EpochInfo>,
    last_flush: Instant,
    /// Frames were sent since the last durable sync.
    unsynced: bool,
    /// Held (flock) until finish/drop; readers test it to tell a live
    /// recorder from a dead one.
    lock: Option<File>,
}

impl TraceWriter {
    pub fn create(dir: &Path, mut meta: Meta, opts: WriterOptions) -> Result<TraceWriter, Error> {
        let non_empty = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_some(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        if non_empty && !opts.force {
            return Err(Error::DirNotEmpty {
                path: dir.to_path_buf(),
            });
        }
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        // Lock before clearing so we never wipe a directory a live recorder
        // is writing, even with force.
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("create", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        if non_empty {
            for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
                let entry = entry.map_err(|e| Error::io("list", dir, e))?;
                if entry.file_name() == LOCK_FILE {
                    continue;
                }
                let p = entry.path();
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                let r = if is_dir {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|e| Error::io("remove", &p, e))?;
            }
        }

        let events_path = dir.join(EVENTS_FILE);
        let mut events_file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&events_path)
            .map_err(|e| Error::io("create", &events_path, e))?;
        events_file
            .write_all(&file_header(EVENTS_MAGIC))
            .map_err(|e| Error::io("write", &events_path, e))?;

        meta.format_version = FORMAT_VERSION;
        meta.state = TraceState::Recording;
        write_meta(dir, &meta)?;

        let stats = StatsHandle::default();
        let (tx, rx) = sync_channel(FRAMES_IN_FLIGHT);
        let bg = Background {
            file: events_file,
            path: events_path,
            offset: FILE_HEADER_LEN,
            blobs: BlobWriter::new(dir, opts.dedup_min_bytes, opts.zstd_level),
            stats: stats.clone(),
            level: opts.zstd_level,
        };
        let handle = std::thread::Builder::new()
            .name("tracelog-writer".into())
            .spawn(move || bg.run(rx))
            .map_err(|e| Error::io("spawn writer thread for", dir, e))?;
        let frame_events = opts.frame_events.clamp(1, MAX_FRAME_EVENTS);
        Ok(TraceWriter {
            dir: dir.to_path_buf(),
            frame_events,
            flush_interval: opts.flush_interval,
            batch: Vec::with_capacity(frame_events),
            batch_bytes: 0,
            next_seq: 0,
            tx: Some(tx),
            handle: Some(handle),
            stats,
            counts: [0; KIND_NAMES.len()],
            epochs: Vec::new(),
            last_flush: Instant::now(),
            unsynced: false,
            lock: Some(lock),
        })
    }

    /// Appends an event (its `seq` is assigned here). Returns an error if the
    /// background thread failed, e.g. on a full disk.
    pub fn push(&mut self, mut ev: Event) -> Result<(), Error> {
        if self.tx.is_none() {
            return Err(Error::WriterFailed);
        }
        ev.seq = self.next_seq;
        let bytes = payload_bytes(&ev.kind);
        if bytes > MAX_BATCH_BYTES {
            return Err(Error::InvalidEvent {
                seq: ev.seq,
                reason: format!("{bytes} payload bytes, at most {MAX_BATCH_BYTES} per event"),
            });
        }
        self.next_seq += 1;
        self.counts[ev.kind.code() as usize] += 1;
        if self.epochs.is_empty() {
            self.epochs.push(EpochInfo {
                index: ev.epoch,
                start_seq: ev.seq,
                start_ns: ev.time_ns,
            });
        }
        if let EventKind::EpochMark { epoch } = ev.kind {
            self.epochs.push(EpochInfo {
                index: epoch,
                start_seq: ev.seq,
                start_ns: ev.time_ns,
            });
        }
        self.stats.0.events.fetch_add(1, Ordering::Relaxed);
        self.batch.push(ev);
        self.batch_bytes += bytes;
        if self.batch.len() >= self.frame_events || self.batch_bytes >= MAX_BATCH_BYTES {
            self.send_batch(false)?;
        }
        Ok(())
    }

    /// Call periodically (every 100 ms or more often): writes a partial frame
    /// and makes it durable once `flush_interval` has passed since the last
    /// frame, so a killed recorder loses at most about that much.
    pub fn tick(&mut self) -> Result<(), Error> {
        self.check_background()?;
        if self.last_flush.elapsed() >= self.flush_interval {
            if !self.batch.is_empty() {
                self.send_batch(true)?;
            } else if self.unsynced {
                self.send(Msg::Frame {
                    events: Vec::new(),
                    sync: true,
                })?;
                self.unsynced = false;
            }
            self.last_flush = Instant::now();
        }
        Ok(())
    }

    /// Writes everything pushed so far and waits until it is on disk
    /// (addition to the brief's API; tests and checkpoints need a barrier).
    pub fn sync(&mut self) -> Result<(), Error> {
        if !self.batch.is_empty() {
            self.send_batch(false)?;
        }
        let (reply_tx, reply_rx) = sync_channel(1);
        self.send(Msg::Sync(reply_tx))?;
        if reply_rx.recv().is_err() {
            return Err(self.collect_failure());
        }
        self.unsynced = false;
        self.last_flush = Instant::now();
        Ok(())
    }

    pub fn stats(&self) -> WriterStats {
        self.stats.get()
    }

    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Flushes everything, writes index.tlf and the final meta.json (state
    /// Complete unless `meta.state` is Incomplete; event_counts,
    /// format_version and, if empty, epochs filled in) and releases the lock.
    pub fn finish(mut self, mut meta: Meta) -> Result<Meta, Error> {
        if !self.batch.is_empty() {
            self.send_batch(true)?;
        }
        drop(self.tx.take());
        let done = match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r?,
            Some(Err(_)) => return Err(Error::WriterPanicked),
            None => return Err(Error::WriterFailed),
        };
        write_index(&self.dir, &done.frames, done.events_len)?;
        meta.format_version = FORMAT_VERSION;
        meta.event_counts = KIND_NAMES
            .iter()
            .zip(self.counts)
            .map(|(k, n)| (k.to_string(), n))
            .collect::<BTreeMap<_, _>>();
        if meta.epochs.is_empty() {
            meta.epochs = std::mem::take(&mut self.epochs);
        }
        if !matches!(meta.state, TraceState::Incomplete { .. }) {
            meta.state = TraceState::Complete;
        }
        write_meta(&self.dir, &meta)?;
        sync_dir(&self.dir)?;
        drop(self.lock.take());
        Ok(meta)
    }

    fn send_batch(&mut self, sync: bool) -> Result<(), Error> {
        let events = std::mem::replace(&mut self.batch, Vec::with_capacity(self.frame_events));
        self.batch_bytes = 0;
        self.send(Msg::Frame { events, sync })?;
        self.unsynced = !sync;
        self.last_flush = Instant::now();
        Ok(())
    }

    fn send(&mut self, msg: Msg) -> Result<(), Error> {
        let Some(tx) = &self.tx else {
            return Err(Error::WriterFailed);
        };
        if tx.send(msg).is_err() {
            return Err(self.collect_failure());
        }
        Ok(())
    }

    fn check_background(&mut self) -> Result<(), Error> {
        match &self.handle {
            Some(h) if h.is_finished() => Err(self.collect_failure()),
            Some(_) => Ok(()),
            None => Err(Error::WriterFailed),
        }
    }

    /// The background thread is gone: return its error (once).
    fn collect_failure(&mut self) -> Error {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => Error::WriterPanicked,
            _ => Error::WriterFailed,
        }
    }
}

impl Drop for TraceWriter {
    /// Without `finish`: write and sync what we have but leave meta.json in
    /// state Recording, so readers report the recording as cut short.
    fn drop(&mut self) {
        if self.tx.is_some() {
            if !self.batch.is_empty() {
                let _ = self.send_batch(true);
            }
            drop(self.tx.take());
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// Bytes an event adds to a frame beyond its fixed-size fields.
fn payload_bytes(kind: &EventKind) -> usize {
    match kind {
        EventKind::Syscall(s) => s.outputs.iter().map(|o| o.data.len() + 32).sum(),
        EventKind::Exec { path, argv } => {
            path.len() + argv.iter().map(|a| a.len() + 10).sum::<usize>()
        }
        _ => 0,
    }
}

struct Background {
    file: File,
    path: PathBuf,
    offset: u64,
    blobs: BlobWriter,
    stats: StatsHandle,
    level: i32,
}

impl Background {
    fn run(mut self, rx: Receiver<Msg>) -> Result<BgDone, Error> {
        let mut enc = Encoder::new();
        let mut raw = Vec::new();
        let mut frames = Vec::new();
        let mut next_seq = 0u64;
        let mut compressor = zstd::bulk::Compressor::new(self.level)
            .map_err(|e| Error::io("set up compression for", &self.path, e))?;
        for msg in rx {
            match msg {
                Msg::Frame { events, sync } => {
                    if !events.is_empty() {
                        let blobs = &mut self.blobs;
                        let mut sink = |d: &[u8]| blobs.put(d);
                        let mut h = enc.encode(&events, next_seq, &mut sink, &mut raw)?;
                        let compressed = compressor
                            .compress(&raw)
                            .map_err(|e| Error::io("compress a frame for", &self.path, e))?;
                        h.uncompressed_len = raw.len() as u32;
                        h.compressed_len = compressed.len() as u32;
                        h.payload_crc = crc32fast::hash(&compressed);
                        let mut buf = Vec::with_capacity(64 + compressed.len());
                        buf.extend_from_slice(&h.to_bytes());
                        buf.extend_from_slice(&compressed);
                        // One write per frame: a crash leaves a prefix of the
                        // frame at worst, which the reader detects by length.
                        self.file
                            .write_all(&buf)
                            .map_err(|e| Error::io("write", &self.path, e))?;
                        frames.push(FrameInfo {
                            offset: self.offset,
                            compressed_len: h.compressed_len,
                            events: h.events,
                            first_seq: h.first_seq,
                            first_ns: h.min_ns,
                            last_ns: h.max_ns,
                            epoch_min: h.epoch_min,
                            epoch_max: h.epoch_max,
                        });
                        self.offset += buf.len() as u64;
                        next_seq += events.len() as u64;
                        let s = &self.stats.0;
                        s.bytes_written.store(
                            self.offset - FILE_HEADER_LEN + self.blobs.bytes_written,
                            Ordering::Relaxed,
                        );
                        s.frames.fetch_add(1, Ordering::Relaxed);
                    }
                    if sync {
                        self.sync()?;
                    }
                }
                Msg::Sync(reply) => {
                    self.sync()?;
                    let _ = reply.send(());
                }
            }
        }
        self.sync()?;
        Ok(BgDone {
            frames,
            events_len: self.offset,
        })
    }

    /// Blobs first: a durable frame must not reference a lost blob.
    fn sync(&mut self) -> Result<(), Error> {
        self.blobs.sync()?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))
    }
}
