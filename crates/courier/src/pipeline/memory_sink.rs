//! A sink in memory for the pipeline's unit tests: records the versions it
//! applied and fails as a test tells it to.

use std::collections::VecDeque;
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use courier_core::{Batch, Sink, SinkError, SinkErrorKind};
use courier_sinks::BuildError;

/// What [`MemorySink::apply`] does once its scripted errors are used up.
#[derive(Clone, Copy)]
pub enum Then {
    Apply,
    /// Every later apply fails with a retriable error (a store that is down).
    FailRetriable,
}

pub struct MemorySink {
    pub applied: Arc<Mutex<Vec<u64>>>,
    errors: VecDeque<SinkError>,
    then: Then,
}

impl MemorySink {
    /// A sink that fails with `errors` first, one per apply, then does `then`.
    pub fn new(errors: Vec<SinkError>, then: Then) -> Self {
        MemorySink {
            applied: Arc::default(),
            errors: errors.into(),
            then,
        }
    }

    /// A `run_sink` builder that hands this sink out once.
    pub fn builder(
        self,
    ) -> impl FnMut() -> Ready<Result<Box<dyn Sink>, BuildError>> + Send + 'static {
        let mut sink = Some(self);
        move || {
            ready(
                sink.take()
                    .map(|s| Box::new(s) as Box<dyn Sink>)
                    .ok_or_else(|| BuildError::Config {
                        sink: "memory".into(),
                        message: "built twice".into(),
                    }),
            )
        }
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        if let Some(e) = self.errors.pop_front() {
            return Err(e);
        }
        if let Then::FailRetriable = self.then {
            return Err(SinkError::new(
                SinkErrorKind::Overloaded,
                "memory store is down",
            ));
        }
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied.extend(batch.changes.iter().map(|c| c.version().0));
        Ok(())
    }
}
