//! The random choices of a test (when to kill Courier, for one) come from a
//! seed the test prints, so that a failing run can be repeated.

use rand::rngs::StdRng;
use rand::SeedableRng;

/// A random number generator for `what`, seeded with `COURIER_TEST_SEED`
/// when it is set, else with a fresh random seed. The seed goes to stderr,
/// which the test harness shows when the test fails.
pub fn seeded_rng(what: &str) -> StdRng {
    let seed = match std::env::var("COURIER_TEST_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("COURIER_TEST_SEED={s:?} is not an unsigned integer")),
        Err(_) => rand::random(),
    };
    eprintln!("{what}: seed {seed} (COURIER_TEST_SEED={seed} repeats it)");
    StdRng::seed_from_u64(seed)
}
