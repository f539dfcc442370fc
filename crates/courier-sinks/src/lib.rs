//! Courier's sinks.
