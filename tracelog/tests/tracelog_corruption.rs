//! Random damage to any file of a trace never panics the reader: opening and
//! iterating either succeed or fail with an error that names the file.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use support::*;
use tracelog::{Error, Trace};

const FILES: [&str; 4] = ["events.tlf", "index.tlf", "meta.json", "blobs.tlf"];

/// One pristine trace shared by all cases (kept for the process lifetime).
fn pristine() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("t");
        let mut events = every_kind();
        events.extend(synthetic(600, 13));
        write_trace(&d, &events, opts(100));
        (dir, d)
    })
    .1
}

fn check_error(e: &Error) {
    let msg = e.to_string();
    match e {
        Error::Corrupt { path, .. } => {
            assert!(path.to_string_lossy().contains(".tlf"), "{msg}");
            assert!(msg.contains("offset"), "{msg}");
        }
        Error::Meta { .. } | Error::MissingMeta { .. } => {
            assert!(msg.contains("meta.json"), "{msg}")
        }
        Error::Version { .. } => assert!(msg.contains("version"), "{msg}"),
        other => panic!("unexpected error kind: {other:?}"),
    }
}

fn exercise(dir: &Path) {
    let t = match Trace::open(dir) {
        Ok(t) => t,
        Err(e) => return check_error(&e),
    };
    let _ = t.state();
    if let Some(d) = t.damage() {
        check_error(d);
    }
    let last_seq = t
        .frames()
        .last()
        .map(|f| f.first_seq + u64::from(f.events))
        .unwrap_or(0);
    let iters: Vec<Box<dyn Iterator<Item = _>>> = vec![
        Box::new(t.events()),
        Box::new(t.events_from_seq(last_seq / 2)),
        Box::new(t.events_in_time(0, u64::MAX)),
        Box::new(t.events_in_epoch(1)),
    ];
    for it in iters {
        let (_, err) = drain(it);
        if let Some(e) = err {
            check_error(&e);
        }
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { pos: usize, bit: u8 },
    Overwrite { pos: usize, value: u8 },
    Truncate { len: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(pos, bit)| Damage::Flip { pos, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(pos, value)| Damage::Overwrite { pos, value }),
        any::<usize>().prop_map(|len| Damage::Truncate { len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_damage_never_panics(
        file in 0..FILES.len(),
        damages in prop::collection::vec(damage(), 1..6),
    ) {
        let src = pristine();
        let dir = tempfile::tempdir().unwrap();
        for f in FILES {
            fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let p = dir.path().join(FILES[file]);
        let mut bytes = fs::read(&p).unwrap();
        for d in &damages {
            if bytes.is_empty() {
                break;
            }
            match *d {
                Damage::Flip { pos, bit } => {
                    let n = bytes.len();
                    bytes[pos % n] ^= 1 << bit;
                }
                Damage::Overwrite { pos, value } => {
                    let n = bytes.len();
                    bytes[pos % n] = value;
                }
                Damage::Truncate { len } => {
                    let n = bytes.len();
                    bytes.truncate(len % n);
                }
            }
        }
        fs::write(&p, &bytes).unwrap();
        exercise(dir.path());
    }
}

/// Targeted: a header whose checksum was recomputed after changing lengths
/// (so only the sanity checks stand between it and a huge allocation).
#[test]
fn forged_frame_header_lengths() {
    let src = pristine();
    for (field_at, value) in [
        (8usize, u32::MAX),
        (12, u32::MAX),
        (16, u32::MAX),
        (8, 1_000_000),
        (12, 0),
        (16, 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for f in FILES {
            fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        fs::remove_file(dir.path().join("index.tlf")).unwrap();
        let p = dir.path().join("events.tlf");
        let mut b = fs::read(&p).unwrap();
        let h = &mut b[16..16 + 64];
        h[field_at..field_at + 4].copy_from_slice(&value.to_le_bytes());
        let crc = crc32fast_hash(&h[..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        fs::write(&p, &b).unwrap();
        let t = Trace::open(dir.path()).unwrap();
        let (got, err) = drain(t.events());
        assert!(got.is_empty());
        let err = err.expect("error");
        check_error(&err);
        assert!(matches!(err, Error::Corrupt { offset: 16, .. }), "{err}");
    }
}

/// Minimal CRC-32 (IEEE), so the test doesn't depend on crc32fast directly.
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
