//! Tests that cannot run here say so instead of passing silently
//! (Courier's skip convention: `dev/README.md`, "Skipped tests").

use std::io::Write;

/// Reports the current test as skipped for `reason`, or fails it with
/// `reason` and `fix` when the run must be complete (`CI`, or
/// `COURIER_TEST_REQUIRE_ALL=1` as `dev/test.sh` sets for the whole suite).
/// The line `SKIPPED: <test>: <reason>` goes to stderr past libtest's
/// capture and to the file `COURIER_TEST_SKIPPED` names; the caller
/// returns untested.
pub fn skip(reason: &str, fix: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let complete = ["CI", "COURIER_TEST_REQUIRE_ALL"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")));
    if complete {
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
