//! PostgreSQL side of Courier.
