//! The allocator of every switchyard process (the node, the worker, the load tool).

use std::ffi::{c_int, c_void};

use tikv_jemalloc_sys as jemalloc;

/// glibc's allocator spent a third of the node's time under load in `malloc` / `free`
/// (perf, `loadtest tasks`); jemalloc's thread caches take that away, and unlike mimalloc
/// (measured too) it keeps p99 latency below capacity where glibc had it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: a background thread hands pages freed a second ago back to the system.
/// Without it pages go back only as later allocations happen, so an idle node kept what a
/// burst had used (100k live task mailboxes: 2.1 KB resident each, 1.4 KB with this).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Option<&'static std::ffi::c_char> = Some(
    // SAFETY: a pointer to the first byte of a string literal, which lives for the program.
    unsafe {
        &*c"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:1000"
            .as_ptr()
    },
);

/// Hands SQLite's memory to jemalloc, as the rest of the process's, without SQLite's memory
/// statistics; whether SQLite took both (it does only before its first use and while no
/// other thread runs, so call this first thing in `main`).
///
/// Through glibc's allocator, the page caches and statements of a dozen connections, each
/// on a thread of its own, left glibc's arenas twice the size of what they held and growing:
/// 92 MB for 46 MB in use after 6M tasks. The statistics take one global mutex on every
/// allocation, which the state writer, the pool's readers and the embedded bus contended for:
/// without them the lifecycle went from 3.2k to 3.8k tasks/s.
pub fn sqlite_on_jemalloc() -> bool {
    use rusqlite::ffi;
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(sqlite_malloc),
        xFree: Some(sqlite_free),
        xRealloc: Some(sqlite_realloc),
        xSize: Some(sqlite_size),
        xRoundup: Some(sqlite_roundup),
        xInit: Some(sqlite_init),
        xShutdown: Some(sqlite_shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: SQLite copies the methods before this returns; each is a valid allocator
    // function of the signature SQLite calls.
    let allocator = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) };
    // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int; like the call above, it is made before
    // any other thread uses SQLite (this function's precondition), as `sqlite3_config` needs.
    let statistics = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
    allocator == ffi::SQLITE_OK && statistics == ffi::SQLITE_OK
}

unsafe extern "C" fn sqlite_malloc(size: c_int) -> *mut c_void {
    if size <= 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: any size may be asked of jemalloc.
    unsafe { jemalloc::malloc(size as usize) }
}

unsafe extern "C" fn sqlite_free(block: *mut c_void) {
    // SAFETY: SQLite frees only what `sqlite_malloc` or `sqlite_realloc` gave it.
    unsafe { jemalloc::free(block) }
}

unsafe extern "C" fn sqlite_realloc(block: *mut c_void, size: c_int) -> *mut c_void {
    // Null leaves the block as it was, which SQLite takes as out of memory; a size of zero
    // would have jemalloc free it.
    if size <= 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: as for `sqlite_free`.
    unsafe { jemalloc::realloc(block, size as usize) }
}

unsafe extern "C" fn sqlite_size(block: *mut c_void) -> c_int {
    if block.is_null() {
        return 0;
    }
    // SAFETY: as for `sqlite_free`.
    let size = unsafe { jemalloc::malloc_usable_size(block) };
    size.min(c_int::MAX as usize) as c_int
}

unsafe extern "C" fn sqlite_roundup(size: c_int) -> c_int {
    if size <= 0 {
        return size;
    }
    // SAFETY: a size above zero, no flags.
    let class = unsafe { jemalloc::nallocx(size as usize, 0) };
    // A size class past what a c_int holds (requests near 2 GiB) is asked for as it came.
    c_int::try_from(class)
        .ok()
        .filter(|c| *c > 0)
        .unwrap_or(size)
}

unsafe extern "C" fn sqlite_init(_: *mut c_void) -> c_int {
    rusqlite::ffi::SQLITE_OK
}

unsafe extern "C" fn sqlite_shutdown(_: *mut c_void) {}
