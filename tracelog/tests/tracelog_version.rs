mod support;

use support::*;
use tracelog::{Error, Trace};

#[test]
fn version_mismatch_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    write_trace(&d, &synthetic(10, 1), opts(64));
    let p = d.join("meta.json");
    let text = std::fs::read_to_string(&p).unwrap();
    let text = text.replace("\"format_version\": 2", "\"format_version\": 3");
    // Version 3 may also reshape fields: the version error must still win.
    let text = text.replace("\"pids\": [", "\"pids\": \"changed\", \"x\": [");
    std::fs::write(&p, text).unwrap();
    let err = Trace::open(&d).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Version {
                found: 3,
                expected: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "trace format version 3, this uniplay reads version 2"
    );
}

#[test]
fn missing_meta_is_clear() {
    let dir = tempfile::tempdir().unwrap();
    let err = Trace::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::MissingMeta { .. }));
    assert!(err.to_string().contains("meta.json"), "{err}");
    assert!(err.to_string().contains("not a trace directory"), "{err}");
}

#[test]
fn unparsable_meta_names_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("meta.json"), "{ not json").unwrap();
    let err = Trace::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("meta.json"), "{msg}");
    // The cause is reachable via source() and not repeated in Display.
    let cause = std::error::Error::source(&err).expect("source").to_string();
    assert!(!msg.contains(&cause), "{msg} / {cause}");
}
