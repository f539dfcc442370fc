//! What `courier check` learns about a sink beyond "it starts": for a sink
//! that writes into named places (Kafka's topics), one finding per place.

/// One line of `courier check` about something a sink will write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What the line is about, e.g. `topic shop.public.orders`.
    pub subject: String,
    pub verdict: Verdict,
}

/// How a finding reads, and whether it fails the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// As Courier would have it.
    Ok(String),
    /// Usable as it is, but not what Courier would have made: the check
    /// still passes.
    Note(String),
    /// Courier cannot run like this.
    Fail { problem: String, fix: String },
}

impl Finding {
    pub fn ok(subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding {
            subject: subject.into(),
            verdict: Verdict::Ok(detail.into()),
        }
    }

    pub fn note(subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding {
            subject: subject.into(),
            verdict: Verdict::Note(detail.into()),
        }
    }

    pub fn fail(
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            subject: subject.into(),
            verdict: Verdict::Fail {
                problem: problem.into(),
                fix: fix.into(),
            },
        }
    }
}
