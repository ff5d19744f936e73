//! Driving calls: a number of calls spread over workers, each call timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::report::{Latencies, Run, Timeline};

/// Runs `calls` calls of `call(i)`, `concurrency` at once; their latencies and the time taken.
pub async fn drive<F, Fut>(calls: u64, concurrency: u64, call: F) -> anyhow::Result<Run>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, call) = (next.clone(), call.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::new()?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    return anyhow::Ok(latencies);
                }
                let began = Instant::now();
                call(i).await?;
                latencies.record(began.elapsed())?;
            }
        }));
    }
    let mut latencies = Latencies::new()?;
    for worker in workers {
        latencies.merge(&worker.await??)?;
    }
    Ok(Run {
        count: calls,
        elapsed: start.elapsed(),
        latencies,
        timeline: Timeline::default(),
    })
}
