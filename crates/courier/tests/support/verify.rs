//! Running `courier verify` on a test's folder.

use serde_json::Value;

use super::courier_cmd;

/// `courier verify --format json` with `args`: the exit code and each
/// verification's report (one before and one after a repair).
pub fn courier_verify(dir: &std::path::Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let config = dir.join("courier.toml");
    let mut all = vec![
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--format",
        "json",
    ];
    all.extend_from_slice(args);
    let started = std::time::Instant::now();
    let (code, out, err) = courier_cmd(&all);
    eprintln!(
        "courier {} took {:.1}s",
        all.join(" "),
        started.elapsed().as_secs_f64()
    );
    let reports = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (code, reports, err)
}
