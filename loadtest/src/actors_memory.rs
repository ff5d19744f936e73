//! The `actors` scenario: what live task actors cost in memory, and that passivation keeps it
//! flat. First `--tasks` tasks are created (no agents, so each stays pending with its mailbox
//! alive) and the process's resident memory is read before and after, once idle: the growth
//! divided by the actors. Then, with `--messages`, that many more tasks are created over the
//! run while idle mailboxes passivate after `--passivate-secs`, and resident memory is sampled
//! as it goes.

use std::time::{Duration, Instant};

use actors::store::now_ms;
use anyhow::Context;

use crate::node::{LoadNode, Marks, NodeOptions, Watcher, publish};
use crate::report::{Report, Run};

/// The `actors` scenario's settings.
#[derive(Debug, clap::Args)]
pub struct ActorsArgs {
    /// Tasks (and so live mailboxes) created before memory is read.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// More tasks created afterwards, to watch memory while mailboxes passivate (0: none).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// How long an idle mailbox lives in the passivation run.
    #[arg(long, default_value_t = 2)]
    passivate_secs: u64,
    /// Publishers running at once.
    #[arg(long, default_value_t = 256)]
    concurrency: u64,
}

/// This process's resident memory, in bytes.
fn resident() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

/// Resident memory once it stops moving (sampled until two readings a second apart agree
/// within 1%, at most 20 s).
async fn settled() -> anyhow::Result<u64> {
    let mut last = resident()?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = resident()?;
        if now.abs_diff(last) * 100 <= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Creates `total` tasks of a fresh run on `node` and waits until the node applied them all.
/// The marks that timed them (16 bytes a task) are let go before it returns, so memory read
/// afterwards is the node's.
async fn create(node: &LoadNode, total: u64, concurrency: u64) -> anyhow::Result<Run> {
    let run = format!("mem{}", now_ms());
    let start = Instant::now();
    let watcher = Watcher::tasks_of(node, start, total, "task.created", &run).await?;
    let published = Marks::new(start, total);
    let publishers = publish(&node.node, total, concurrency, Some(published.clone()), {
        let run = run.clone();
        move |i| crate::tasks::envelope(&run, i)
    });
    let deadline = start + Duration::from_secs(3600);
    watcher
        .run_of("created", deadline, publishers, &published)
        .await
}

pub async fn run(args: ActorsArgs) -> anyhow::Result<Vec<Report>> {
    let passivate = if args.messages > 0 {
        args.passivate_secs
    } else {
        24 * 3600
    };
    let node = LoadNode::start(NodeOptions {
        passivate_after_secs: Some(passivate),
        ..NodeOptions::default()
    })
    .await?;
    let idle = settled().await?;
    println!("actors: {} tasks, each a live mailbox", args.tasks);
    let created = create(&node, args.tasks, args.concurrency).await?;
    let live = settled().await?;
    let per_actor = live.saturating_sub(idle) as f64 / args.tasks.max(1) as f64;
    println!(
        "  resident memory idle {:.1} MiB, with {} live actors {:.1} MiB: {per_actor:.0} bytes each",
        idle as f64 / 1048576.0,
        args.tasks,
        live as f64 / 1048576.0
    );
    let mut reports = vec![Report {
        scenario: "actors".into(),
        run: created,
        baseline: None,
        settings: serde_json::json!({
            "resident_idle_bytes": idle,
            "resident_live_bytes": live,
            "bytes_per_actor": per_actor,
        }),
    }];
    if args.messages > 0 {
        println!(
            "  {} more tasks while idle mailboxes passivate after {} s",
            args.messages, passivate
        );
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sampler = {
            let samples = samples.clone();
            tokio::spawn(async move {
                loop {
                    let mib = resident().unwrap_or(0) as f64 / 1048576.0;
                    if let Ok(mut samples) = samples.lock() {
                        samples.push((mib * 10.0).round() / 10.0);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        let passivating = create(&node, args.messages, args.concurrency).await?;
        sampler.abort();
        let samples: Vec<f64> = samples.lock().map(|s| s.clone()).unwrap_or_default();
        let after = settled().await?;
        println!(
            "  resident memory after {} more: {:.1} MiB",
            args.messages,
            after as f64 / 1048576.0
        );
        reports.push(Report {
            scenario: "actors-passivating".into(),
            run: passivating,
            baseline: None,
            settings: serde_json::json!({
                "passivate_after_secs": passivate,
                "resident_before_bytes": live,
                "resident_after_bytes": after,
                "resident_mib_each_second": samples,
            }),
        });
    }
    node.node.shutdown().await.context("stopping the node")?;
    Ok(reports)
}
