//! Preparing PostgreSQL for capture: resolving the configured tables,
//! creating or validating the publication, and reading the slot's state.

mod error;
mod preflight;
mod publication;
mod slot;
mod tables;

pub use error::SetupError;
pub use preflight::preflight;
pub use publication::{ensure_publication, GeneratedColumns};
pub use slot::{drop_slot, slot_info, SlotInfo};
pub use tables::{resolve_outbox_table, resolve_tables, SourceTable};
