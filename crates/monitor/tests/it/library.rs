//! The monitor as a third-party monitor uses it: no CLI, progress through a callback,
//! results as values.

use monitor::entry::{Access, Head};
use testkit::static_log::{ORIGIN, entries, new_key, outcome_of, publish};

const SIZE: u64 = 600;

/// A static log of [`SIZE`] entries in a temporary folder, and how to reach it.
fn static_log() -> (
    tempfile::TempDir,
    tlog::note::Verifier,
    Box<dyn tlog::TileFetcher>,
) {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key();
    publish(dir.path(), &key, &entries(SIZE));
    let verifier = monitor::load_verifier(&key.vkey).unwrap();
    let log = monitor::open_log(dir.path().to_str().unwrap()).unwrap();
    (dir, verifier, log)
}

/// Verifies the log, handing every entry to `visit`.
fn visit_all(
    log: &dyn tlog::TileFetcher,
    verifier: &tlog::note::Verifier,
    visit: &mut monitor::verify::EntryVisitor<'_>,
) -> anyhow::Result<tlog::checkpoint::Checkpoint> {
    monitor::verify_entries(log, verifier, None, &mut monitor::Silent, visit)
}

#[test]
fn verify_reports_progress_counts_entries_and_keeps_the_checkpoint() {
    let (dir, verifier, log) = static_log();
    let state = dir.path().join("monitor.state");
    let mut last = (0, 0);
    let verified = monitor::verify(&*log, &verifier, Some(&state), &mut |done, total| {
        last = (done, total)
    })
    .unwrap();
    assert_eq!(verified.checkpoint.origin, ORIGIN);
    assert_eq!(verified.checkpoint.size, SIZE);
    assert_eq!(last.1, SIZE, "progress is told against the whole log");
    assert_eq!(verified.stats.kinds["config"], SIZE / 10);
    assert_eq!(verified.stats.kinds["access"], SIZE - SIZE / 10);
    assert!(verified.previous.is_none());
    assert!(verified.to_string().contains("trusted on first use"));

    // The next run checks consistency with the kept checkpoint.
    let again = monitor::verify(&*log, &verifier, Some(&state), &mut monitor::Silent).unwrap();
    assert_eq!(again.previous.as_ref(), Some(&verified.checkpoint));
}

#[test]
fn verify_entries_hands_over_every_entry_in_order_with_its_kind_and_typed_members() {
    let (_dir, verifier, log) = static_log();
    let mut seen = 0;
    let checkpoint = visit_all(&*log, &verifier, &mut |index, info, entry| {
        assert_eq!(index, seen);
        seen += 1;
        let head: Head = serde_json::from_slice(entry).map_err(|e| e.to_string())?;
        assert_eq!(head.kind, info.kind);
        if info.kind == "access" {
            let access: Access = serde_json::from_slice(entry).map_err(|e| e.to_string())?;
            assert_eq!(access.outcome, outcome_of(index));
            assert_eq!(info.outcome, Some(outcome_of(index)));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, SIZE);
    assert_eq!(checkpoint.size, SIZE);
}

#[test]
fn a_visitor_that_refuses_an_entry_stops_the_run_naming_it() {
    let (_dir, verifier, log) = static_log();
    let err = visit_all(&*log, &verifier, &mut |index, _, _| {
        if index == 7 {
            Err("not wanted".into())
        } else {
            Ok(())
        }
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("7") && err.contains("not wanted"), "{err}");
}
