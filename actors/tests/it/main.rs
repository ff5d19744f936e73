//! The store against real SQLite and, real PostgreSQL (`SWITCHYARD_TEST_POSTGRES`).

mod orchestrator;
mod store;
