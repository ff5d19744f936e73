//! The allocator of every switchyard process (the node, the worker, the load tool).

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
