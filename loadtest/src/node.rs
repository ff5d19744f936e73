//! What the node scenarios share: a node started in-process on the embedded bus, publishers of
//! numbered events onto its bus, and a watcher that learns what the node applied from its
//! public `Watch` stream (the load tool never reads the node's tables).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use schemas::Envelope;
use schemas::proto::tasks_client::TasksClient;
use schemas::proto::{TaskEvent, WatchRequest};
use switchyard::{Config, Node};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::progress::Progress;
use crate::report::{Latencies, Run, Timeline};

/// How a scenario's node is set up; unset fields keep the node's defaults.
#[derive(Debug, Default, Clone)]
pub struct NodeOptions {
    /// The state database (default: SQLite in the data directory).
    pub database_url: Option<String>,
    /// Partitions of the events topic.
    pub partitions: Option<u32>,
    /// The data directory (default: a fresh temporary one).
    pub data_dir: Option<PathBuf>,
    /// How long idle mailboxes live.
    pub passivate_after_secs: Option<u64>,
    /// The Slack channel, on.
    pub slack: Option<gateways::channels::ChannelConfig>,
}

/// A node in this process with HTTP and gRPC on free loopback ports.
pub struct LoadNode {
    pub node: Node,
    /// The admin key the node wrote into its data directory.
    pub admin: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Its data directory, if temporary (removed on drop unless kept).
    pub dir: tempfile::TempDir,
}

fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl LoadNode {
    /// Starts a node set up by `options`.
    pub async fn start(options: NodeOptions) -> anyhow::Result<LoadNode> {
        let dir = tempfile::tempdir()?;
        let defaults = Config::default();
        let config = Config {
            data_dir: options.data_dir.unwrap_or_else(|| dir.path().to_owned()),
            http: free_loopback_port()?,
            grpc: free_loopback_port()?,
            database_url: options.database_url.unwrap_or_default(),
            partitions: options.partitions.unwrap_or(defaults.partitions),
            passivate_after_secs: options
                .passivate_after_secs
                .unwrap_or(defaults.passivate_after_secs),
            channels: gateways::channels::ChannelsConfig {
                slack: options.slack.unwrap_or_default(),
                ..Default::default()
            },
            ..defaults
        };
        let node = Node::start(&config).await?;
        // A node writes the admin key only into the data directory of the run that created
        // it: a database that already holds one (an earlier run's) leaves this run without.
        let admin = std::fs::read_to_string(config.data_dir.join("admin.token"))
            .context(
                "no admin key for this run: the node writes admin.token only when its database \
                 has no admin key yet; give --database-url a fresh database",
            )?
            .trim()
            .to_owned();
        Ok(LoadNode {
            node,
            admin,
            grpc: config.grpc,
            http: config.http,
            dir,
        })
    }

    /// A gRPC channel to the node.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Channel::from_shared(format!("http://{}", self.grpc))?
            .connect()
            .await
            .context("the node's gRPC")
    }
}

/// `message` with `token` as its bearer key.
pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// When each of a run's numbered things happened, as time since the run's start.
pub struct Marks {
    start: Instant,
    /// Nanoseconds since `start`, plus one; zero while it has not happened.
    at: Vec<AtomicU64>,
}

impl Marks {
    /// Marks for `total` things of a run that began at `start`.
    pub fn new(start: Instant, total: u64) -> Arc<Marks> {
        Arc::new(Marks {
            start,
            at: (0..total).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Notes that thing `i` happened now, unless it was noted before; whether it is new.
    pub fn mark(&self, i: u64) -> bool {
        let now = self.start.elapsed().as_nanos() as u64 + 1;
        self.at.get(i as usize).is_some_and(|at| {
            at.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// When thing `i` happened, if it has.
    pub fn get(&self, i: u64) -> Option<Duration> {
        let at = self.at.get(i as usize)?.load(Ordering::Relaxed);
        (at > 0).then(|| Duration::from_nanos(at - 1))
    }

    /// The time from `earlier`'s mark to this one's, for every thing marked in both.
    pub fn latencies_since(&self, earlier: &Marks) -> anyhow::Result<Latencies> {
        let mut latencies = Latencies::new()?;
        for i in 0..self.at.len() as u64 {
            if let (Some(then), Some(now)) = (earlier.get(i), self.get(i)) {
                latencies.record(now.saturating_sub(then))?;
            }
        }
        Ok(latencies)
    }
}

/// The number `i` of an id `{prefix}-{i}`.
pub fn numbered(prefix: &str, id: &str) -> Option<u64> {
    id.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

/// Numbered events the node tells on its `Watch` stream (with the admin key: every user's),
/// each marked the first time it is seen.
pub struct Watcher {
    /// When each numbered event was first seen.
    pub seen: Arc<Marks>,
    total: u64,
    count: Arc<AtomicU64>,
    changed: Arc<Notify>,
    stream: JoinHandle<anyhow::Result<()>>,
}

impl Watcher {
    /// Opens the stream before anything of the run is published; `number` says which events
    /// count, and as which of the run's `total` numbers.
    pub async fn start(
        node: &LoadNode,
        start: Instant,
        total: u64,
        number: impl Fn(&TaskEvent) -> Option<u64> + Send + 'static,
    ) -> anyhow::Result<Watcher> {
        let mut client = TasksClient::new(node.channel().await?);
        let mut stream = client
            .watch(bearer(&node.admin, WatchRequest::default()))
            .await
            .context("opening the Watch stream")?
            .into_inner();
        let (seen, count, changed) = (
            Marks::new(start, total),
            Arc::new(AtomicU64::new(0)),
            Arc::new(Notify::new()),
        );
        let stream = {
            let (seen, count, changed) = (seen.clone(), count.clone(), changed.clone());
            tokio::spawn(async move {
                while let Some(event) = stream.message().await? {
                    if let Some(i) = number(&event)
                        && seen.mark(i)
                    {
                        count.fetch_add(1, Ordering::Relaxed);
                        changed.notify_waiters();
                    }
                }
                anyhow::bail!("the Watch stream ended")
            })
        };
        Ok(Watcher {
            seen,
            total,
            count,
            changed,
            stream,
        })
    }

    /// Watches for `kind` events of run `run`'s tasks `{run}-{i}`, each numbered `i`.
    pub async fn tasks_of(
        node: &LoadNode,
        start: Instant,
        total: u64,
        kind: &'static str,
        run: &str,
    ) -> anyhow::Result<Watcher> {
        let run = run.to_owned();
        Watcher::start(node, start, total, move |event| {
            (event.r#type == kind)
                .then(|| numbered(&run, &event.task_id))
                .flatten()
        })
        .await
    }

    /// How many numbered events were seen so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits, until `deadline`, for all `total` events, sampling the count into `timeline`
    /// and `progress` every 20 ms; when the last one was seen, as time since the start.
    pub async fn wait_all(
        &self,
        what: &'static str,
        deadline: Instant,
    ) -> anyhow::Result<(Timeline, Duration)> {
        let mut timeline = Timeline::default();
        let mut progress = Progress::new(what, self.total);
        loop {
            let count = self.count();
            timeline.record(self.seen.start.elapsed(), count);
            progress.set(count);
            if count >= self.total {
                progress.finish();
                let last = (0..self.total)
                    .filter_map(|i| self.seen.get(i))
                    .max()
                    .unwrap_or_default();
                return Ok((timeline, last));
            }
            self.check(deadline, || {
                format!("only {count} of {} {what}", self.total)
            })?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The run of `publishers`: waits for all events as `wait_all` does, then for the
    /// publishers; latency from each event's mark in `published` to its sighting.
    pub async fn run_of(
        &self,
        what: &'static str,
        deadline: Instant,
        publishers: Vec<JoinHandle<anyhow::Result<()>>>,
        published: &Marks,
    ) -> anyhow::Result<Run> {
        let waited = self.wait_all(what, deadline).await;
        for publisher in publishers {
            publisher.await??;
        }
        let (timeline, elapsed) = waited?;
        Ok(Run {
            count: self.total,
            elapsed,
            latencies: self.seen.latencies_since(published)?,
            timeline,
        })
    }

    /// Waits, until `deadline`, for event `i`.
    pub async fn wait_for(&self, i: u64, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.seen.get(i).is_some() {
                return Ok(());
            }
            self.check(deadline, || format!("event {i} not seen in time"))?;
            let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
        }
    }

    fn check(&self, deadline: Instant, late: impl FnOnce() -> String) -> anyhow::Result<()> {
        anyhow::ensure!(!self.stream.is_finished(), "the Watch stream stopped");
        anyhow::ensure!(Instant::now() < deadline, late());
        Ok(())
    }
}

impl Drop for Watcher {
    /// Closes the stream, and so lets go of the marks it fills.
    fn drop(&mut self) {
        self.stream.abort();
    }
}

/// Publishes `make(i)` for i in 0..total onto `node`'s bus, `concurrency` at a time, each
/// marked in `published` just before it goes; each publisher's task ends when the numbers
/// run out.
pub fn publish(
    node: &Node,
    total: u64,
    concurrency: u64,
    published: Option<Arc<Marks>>,
    make: impl Fn(u64) -> Envelope + Clone + Send + 'static,
) -> Vec<JoinHandle<anyhow::Result<()>>> {
    let (bus, next) = (node.bus(), Arc::new(AtomicU64::new(0)));
    (0..concurrency.max(1))
        .map(|_| {
            let (bus, next, make, published) =
                (bus.clone(), next.clone(), make.clone(), published.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok(());
                    }
                    let envelope = make(i);
                    if let Some(published) = &published {
                        published.mark(i);
                    }
                    actors::publish(bus.as_ref(), &envelope)
                        .await
                        .map_err(|e| anyhow::anyhow!(e.error))?;
                }
            })
        })
        .collect()
}
