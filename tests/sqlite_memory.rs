//! SQLite takes its memory from jemalloc, without its memory statistics, when asked before
//! its first use: a process of its own, since SQLite takes the settings only then.

use rusqlite::ffi;

#[test]
fn sqlite_takes_its_memory_from_jemalloc_when_asked_first() {
    assert!(
        switchyard::sqlite_on_jemalloc(),
        "SQLite refused the allocator"
    );
    let db = rusqlite::Connection::open_in_memory().unwrap();
    db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(100000));")
        .unwrap();
    let stored: i64 = db
        .query_row("SELECT length(x) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 100_000);
    // SQLite's own allocator would size a block of 1000 bytes as 1000; jemalloc's size class
    // holding it is 1024.
    // SAFETY: a block SQLite allocates, sized and freed by SQLite.
    let size = unsafe {
        let block = ffi::sqlite3_malloc(1000);
        assert!(!block.is_null());
        let size = ffi::sqlite3_msize(block);
        ffi::sqlite3_free(block);
        size
    };
    assert_eq!(size, 1024);
    // SAFETY: a plain read of SQLite's counters.
    let counted = unsafe { ffi::sqlite3_memory_used() };
    assert_eq!(counted, 0, "SQLite keeps memory statistics");
    assert!(
        !switchyard::sqlite_on_jemalloc(),
        "SQLite in use takes no other allocator"
    );
}
