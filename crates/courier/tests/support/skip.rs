//! Tests that cannot run here say so instead of passing silently.
//!
//! libtest has no skip at run time, so a test that finds something it needs
//! missing, or left out of the run on purpose, calls [`skip`]. When the run
//! must be complete (`CI` is set, or `COURIER_TEST_REQUIRE_ALL=1`, which
//! `dev/test.sh` sets when it runs the whole suite) that is a failure that
//! says how to provide what is missing. Otherwise the test writes
//! `SKIPPED: <test>: <reason>` to stderr, past libtest's capture, appends the
//! same line to the file `COURIER_TEST_SKIPPED` names (`dev/test.sh` counts
//! them in its summary), and returns: libtest still reports it `ok`.

use std::io::Write;

/// Reports the current test as skipped for `reason`, or fails it with
/// `reason` and `fix` when the run must be complete (see the module doc).
/// The caller returns without testing anything.
pub fn skip(reason: &str, fix: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if must_be_complete() {
        panic!("{test} cannot run: {reason}; {fix} (a complete run, CI or COURIER_TEST_REQUIRE_ALL=1, skips no test)");
    }
    let line = format!("SKIPPED: {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("COURIER_TEST_SKIPPED") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            panic!("record the skip in COURIER_TEST_SKIPPED={path:?}: {e}");
        }
    }
}

/// Whether every test must run: `CI` or `COURIER_TEST_REQUIRE_ALL` is set
/// to something other than empty, `0` or `false`.
fn must_be_complete() -> bool {
    ["CI", "COURIER_TEST_REQUIRE_ALL"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")))
}
