//! `blobs.tlf`: large output payloads stored once and referenced by id (the
//! record's byte offset), so e.g. the same file read twice costs one copy.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use crate::codec::{check_file_header, file_header, BLOBS_MAGIC, FILE_HEADER_LEN};
use crate::Error;

pub(crate) const BLOBS_FILE: &str = "blobs.tlf";

/// Record header (LE): flags u32 (bit 0: zstd), stored_len u32, raw_len u32,
/// raw data crc32 u32, reserved u32, header crc32 u32 (of bytes 0..20).
const RECORD_HEADER_LEN: usize = 24;
const FLAG_ZSTD: u32 = 1;
/// Largest blob accepted, read or written; bounds reader allocations.
pub(crate) const MAX_BLOB_LEN: u64 = 256 << 20;
/// Reader cache budget: enough for repeated references to hot blobs without
/// holding a large trace's blobs in memory.
const CACHE_BYTES: usize = 64 << 20;
/// Blobs of at least four times this are first compressed on their first
/// `PROBE_LEN` bytes, and stored raw when that saved less than
/// `100 - PROBE_MIN_PERCENT` percent.
const PROBE_LEN: usize = 16 << 10;
const PROBE_MIN_PERCENT: usize = 95;

/// A zstd context, which has no `Debug` of its own.
struct Compressor(zstd::bulk::Compressor<'static>);

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compressor")
    }
}

#[derive(Debug)]
pub(crate) struct BlobWriter {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    /// (crc32, raw len) -> ids of blobs with that key. The record's crc32
    /// doubles as the dedup key: it costs a tenth of a general hash (SipHash
    /// and BLAKE3 were the writer's largest cost on a large read), and a
    /// collision is settled by reading the candidate back.
    seen: HashMap<(u32, u32), Vec<u64>>,
    min_len: usize,
    /// Reused across blobs: a fresh context per blob costs its allocation
    /// and table reset, measurable at a megabyte per read.
    compressor: Option<Compressor>,
    level: i32,
    unsynced: bool,
    pub bytes_written: u64,
}

impl BlobWriter {
    /// `path` is blobs.tlf or a segment's `.blobs.tlf`; created on first use.
    pub fn new(path: PathBuf, min_len: usize, level: i32) -> BlobWriter {
        BlobWriter {
            path,
            file: None,
            len: 0,
            seen: HashMap::new(),
            min_len: min_len.max(1),
            compressor: None,
            level,
            unsynced: false,
            bytes_written: 0,
        }
    }

    /// Stores `data` as a blob if it is large enough, returning its id.
    pub fn put(&mut self, data: &[u8]) -> Result<Option<u64>, Error> {
        if data.len() < self.min_len || data.len() as u64 > MAX_BLOB_LEN {
            return Ok(None);
        }
        let crc = crc32fast::hash(data);
        let key = (crc, data.len() as u32);
        if let Some(ids) = self.seen.get(&key) {
            for &id in ids {
                if self.same_contents(id, data)? {
                    return Ok(Some(id));
                }
            }
        }
        if self.file.is_none() {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&self.path)
                .map_err(|e| Error::io("create", &self.path, e))?;
            f.write_all(&file_header(BLOBS_MAGIC))
                .map_err(|e| Error::io("write", &self.path, e))?;
            self.len = FILE_HEADER_LEN;
            self.file = Some(f);
        }
        let compressed = self.compress(data)?;
        let (flags, stored): (u32, &[u8]) = match &compressed {
            Some(c) if c.len() < data.len() => (FLAG_ZSTD, c),
            _ => (0, data),
        };
        let mut head = Vec::with_capacity(RECORD_HEADER_LEN);
        head.extend_from_slice(&flags.to_le_bytes());
        head.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        head.extend_from_slice(&(data.len() as u32).to_le_bytes());
        head.extend_from_slice(&crc.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        let hcrc = crc32fast::hash(&head);
        head.extend_from_slice(&hcrc.to_le_bytes());
        let id = self.len;
        let file = self.file.as_mut().ok_or(Error::WriterFailed)?;
        // Header and payload written apart: joining them would copy the
        // payload once more (megabytes for a large read).
        file.write_all(&head)
            .and_then(|()| file.write_all(stored))
            .map_err(|e| Error::io("write", &self.path, e))?;
        let rec_len = (RECORD_HEADER_LEN + stored.len()) as u64;
        self.len += rec_len;
        self.bytes_written += rec_len;
        self.unsynced = true;
        self.seen.entry(key).or_default().push(id);
        Ok(Some(id))
    }

    fn same_contents(&self, id: u64, data: &[u8]) -> Result<bool, Error> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let b = read_blob(file, &self.path, self.len, id, data.len() as u64)?;
        Ok(b[..] == *data)
    }

    /// `data` compressed, or `None` when a sample of it did not compress
    /// (random or already compressed bytes): compressing all of it would
    /// cost the recorder's writer more than anything else it does.
    fn compress(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let compressor = match &mut self.compressor {
            Some(c) => c,
            None => self.compressor.insert(Compressor(
                zstd::bulk::Compressor::new(self.level)
                    .map_err(|e| Error::io("compress a blob for", &self.path, e))?,
            )),
        };
        let mut compress = |d: &[u8]| {
            compressor
                .0
                .compress(d)
                .map_err(|e| Error::io("compress a blob for", &self.path, e))
        };
        if data.len() >= 4 * PROBE_LEN {
            let probe = compress(&data[..PROBE_LEN])?;
            if probe.len() * 100 >= PROBE_LEN * PROBE_MIN_PERCENT {
                return Ok(None);
            }
        }
        compress(data).map(Some)
    }

    pub fn sync(&mut self) -> Result<(), Error> {
        if self.unsynced {
            if let Some(f) = &self.file {
                f.sync_data()
                    .map_err(|e| Error::io("fdatasync", &self.path, e))?;
            }
            self.unsynced = false;
        }
        Ok(())
    }
}

/// Reads and verifies the blob record at `id` in `file` (of length `file_len`).
fn read_blob(
    file: &File,
    path: &Path,
    file_len: u64,
    id: u64,
    want_len: u64,
) -> Result<Bytes, Error> {
    let bad = |reason: String| Error::corrupt(path, id, reason);
    if id < FILE_HEADER_LEN || id.saturating_add(RECORD_HEADER_LEN as u64) > file_len {
        return Err(bad(format!(
            "blob id {id} outside the file ({file_len} bytes)"
        )));
    }
    let mut h = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut h, id)
        .map_err(|e| Error::io("read", path, e))?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if crc32fast::hash(&h[..20]) != word(20) {
        return Err(bad("blob header checksum mismatch".into()));
    }
    let (flags, stored_len, raw_len, crc) =
        (word(0), u64::from(word(4)), u64::from(word(8)), word(12));
    if flags & !FLAG_ZSTD != 0 {
        return Err(bad(format!("unknown blob flags {flags:#x}")));
    }
    if raw_len != want_len || raw_len > MAX_BLOB_LEN {
        return Err(bad(format!(
            "blob is {raw_len} bytes, reference says {want_len}"
        )));
    }
    let avail = file_len - id - RECORD_HEADER_LEN as u64;
    if stored_len > avail {
        return Err(bad(format!(
            "blob of {stored_len} bytes runs past the end of the file"
        )));
    }
    let mut stored = vec![0u8; stored_len as usize];
    file.read_exact_at(&mut stored, id + RECORD_HEADER_LEN as u64)
        .map_err(|e| Error::io("read", path, e))?;
    let raw = if flags & FLAG_ZSTD != 0 {
        zstd::bulk::decompress(&stored, raw_len as usize)
            .map_err(|e| bad(format!("blob decompression failed: {e}")))?
    } else {
        stored
    };
    if raw.len() as u64 != raw_len || crc32fast::hash(&raw) != crc {
        return Err(bad("blob checksum mismatch".into()));
    }
    Ok(Bytes::from(raw))
}

/// Reader side of blobs.tlf, with a small cache for repeated references.
#[derive(Debug)]
pub(crate) struct BlobStore {
    path: PathBuf,
    /// Open file and its length, or why it is unusable.
    file: Result<(File, u64), String>,
    cache: Mutex<(HashMap<u64, Bytes>, usize)>,
}

impl BlobStore {
    pub fn open(path: &Path) -> Result<BlobStore, Error> {
        let path = path.to_path_buf();
        let file = match File::open(&path) {
            Ok(f) => {
                let len = f.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
                let mut h = [0u8; FILE_HEADER_LEN as usize];
                if len < FILE_HEADER_LEN {
                    Err("file header truncated".to_string())
                } else {
                    f.read_exact_at(&mut h, 0)
                        .map_err(|e| Error::io("read", &path, e))?;
                    check_file_header(&h, BLOBS_MAGIC).map(|()| (f, len))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err("file is missing".to_string())
            }
            Err(e) => return Err(Error::io("open", path, e)),
        };
        Ok(BlobStore {
            path,
            file,
            cache: Mutex::new((HashMap::new(), 0)),
        })
    }
}

impl crate::codec::BlobSource for BlobStore {
    fn blob(&self, id: u64, len: u64) -> Result<Bytes, Error> {
        let (file, file_len) = match &self.file {
            Ok((f, l)) => (f, *l),
            Err(reason) => return Err(Error::corrupt(&self.path, 0, reason.clone())),
        };
        // A poisoned lock only means another reader panicked mid-insert; the
        // map is still consistent, so keep using it.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = cache.0.get(&id) {
            if b.len() as u64 == len {
                return Ok(b.clone());
            }
        }
        let b = read_blob(file, &self.path, file_len, id, len)?;
        if cache.1 + b.len() > CACHE_BYTES {
            cache.0.clear();
            cache.1 = 0;
        }
        cache.1 += b.len();
        cache.0.insert(id, b.clone());
        Ok(b)
    }
}
