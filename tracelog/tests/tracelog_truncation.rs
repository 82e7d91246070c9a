//! A cut events.tlf (killed recorder, full disk, partial copy) yields every
//! event of the intact frames, then one error naming the offset.

mod support;

use std::fs;
use std::path::Path;

use support::*;
use tracelog::{Error, Trace};

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn truncation_at_and_inside_frames() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let events = synthetic(2000, 11);
    write_trace(&src, &events, opts(300));
    let all = expected(&events);
    let frames = Trace::open(&src).unwrap().frames().to_vec();
    assert_eq!(frames.len(), 7);
    let full_len = fs::metadata(src.join("events.tlf")).unwrap().len();

    // Cut points: every frame boundary, and inside each frame's header and payload.
    let mut cuts = vec![0, 5, 16];
    for f in &frames {
        let payload = u64::from(f.compressed_len);
        cuts.extend([
            f.offset,
            f.offset + 1,
            f.offset + 63,
            f.offset + 64,
            f.offset + 64 + payload / 2,
        ]);
        cuts.push(f.offset + 64 + payload - 1);
    }
    for with_index in [true, false] {
        for &cut in &cuts {
            let d = dir.path().join(format!("cut{cut}-{with_index}"));
            copy_dir(&src, &d);
            if !with_index {
                fs::remove_file(d.join("index.tlf")).unwrap();
            }
            let f = fs::OpenOptions::new()
                .write(true)
                .open(d.join("events.tlf"))
                .unwrap();
            f.set_len(cut).unwrap();
            drop(f);

            let t = Trace::open(&d).unwrap();
            let (got, err) = drain(t.events());
            let intact: usize = frames
                .iter()
                .filter(|f| f.offset + 64 + u64::from(f.compressed_len) <= cut)
                .map(|f| f.events as usize)
                .sum();
            assert_eq!(got, all[..intact], "cut at {cut}");
            let at_boundary = cut == 16 || frames.iter().any(|f| f.offset == cut);
            if at_boundary && !with_index {
                // Without an index a cut between frames is indistinguishable
                // from a recorder that stopped there.
                assert!(err.is_none(), "cut at {cut}: {err:?}");
                continue;
            }
            let Some(Error::Corrupt {
                path,
                offset,
                reason,
            }) = err
            else {
                panic!("cut at {cut}: expected a Corrupt error, got {err:?}");
            };
            assert!(path.ends_with("events.tlf"));
            assert!(!reason.is_empty());
            if cut < 16 {
                assert_eq!(offset, 0);
            } else if at_boundary {
                assert_eq!(offset, cut);
            } else {
                // Points at the start of the cut frame.
                let f = frames.iter().rev().find(|f| f.offset <= cut).unwrap();
                assert_eq!(offset, f.offset, "cut at {cut}");
            }
            assert!(t.damage().is_some());
            let msg = t.damage().unwrap().to_string();
            assert!(
                msg.contains("events.tlf") && msg.contains(&offset.to_string()),
                "{msg}"
            );
        }
    }
    // Sanity: the uncut copy is fine.
    assert_eq!(
        full_len,
        frames
            .last()
            .map(|f| f.offset + 64 + u64::from(f.compressed_len))
            .unwrap()
    );
}

#[test]
fn damaged_frame_in_the_middle_stops_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let events = synthetic(1000, 12);
    write_trace(&d, &events, opts(250));
    let frames = Trace::open(&d).unwrap().frames().to_vec();
    // Flip a payload byte of the third frame: the index is still valid, the
    // payload checksum is not.
    let p = d.join("events.tlf");
    let mut bytes = fs::read(&p).unwrap();
    let at = (frames[2].offset + 64 + 10) as usize;
    bytes[at] ^= 0x40;
    fs::write(&p, &bytes).unwrap();

    let t = Trace::open(&d).unwrap();
    let (got, err) = drain(t.events());
    assert_eq!(got, expected(&events)[..500]);
    let err = err.expect("an error");
    assert!(
        matches!(err, Error::Corrupt { offset, .. } if offset == frames[2].offset),
        "{err}"
    );
    assert!(err.to_string().contains("checksum"), "{err}");
    // Iteration from a later seq skips the damaged frame via the index.
    let (got, err) = drain(t.events_from_seq(750));
    assert!(err.is_none());
    assert_eq!(got, expected(&events)[750..]);
}
