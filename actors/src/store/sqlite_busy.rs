//! How every connection to a SQLite state database waits for another's write lock.
//!
//! Why not SQLite's own `busy_timeout`: its handler sleeps 1, 2, 5, … up to 100 ms at a
//! time, so a pool write that met the state writer's commit (about a millisecond) waited tens
//! of ms; and the writer, meeting a pool write, the same.

use std::time::Duration;

/// The wait between two tries for the lock.
const STEP: Duration = Duration::from_micros(100);

/// Tries for the lock before giving up with SQLITE_BUSY: 10 s at least.
const TRIES: i32 = 100_000;

/// The busy handler: waits a step and tries again, until `TRIES`.
pub(super) fn wait_a_step(tries: i32) -> bool {
    if tries >= TRIES {
        return false;
    }
    std::thread::sleep(STEP);
    true
}

/// Installs `wait_a_step` on a connection of sqlx's pool.
pub(super) async fn install(connection: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = connection.lock_handle().await?;
    // SAFETY: the handle stays locked (sqlx does not touch it) while `raw` exists; a
    // connection made from a handle does not close it when dropped, and the handler it
    // installs is a plain function, valid for as long as the handle is.
    let configuration = |e: rusqlite::Error| sqlx::Error::Configuration(Box::new(e));
    let raw = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }
        .map_err(configuration)?;
    raw.busy_handler(Some(wait_a_step)).map_err(configuration)
}
