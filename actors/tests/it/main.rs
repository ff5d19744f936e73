//! The store against real SQLite and, where `SWITCHYARD_TEST_POSTGRES` is set, real PostgreSQL.

mod store;
