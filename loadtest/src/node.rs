//! What the node scenarios share: a node started in-process on the embedded bus, and
//! publishers of numbered events onto its bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use schemas::Envelope;
use switchyard::{Config, Node};
use tokio::task::JoinHandle;

/// A node in this process with gRPC on a free loopback port.
pub struct LoadNode {
    pub node: Node,
    /// A second handle on its state database, for waiting on results.
    pub store: actors::Store,
    /// The admin key the node wrote into its data directory.
    pub admin: String,
    pub grpc: SocketAddr,
    /// Its data directory, removed on drop unless kept.
    pub dir: tempfile::TempDir,
}

impl LoadNode {
    /// Starts a node on a fresh data directory, its state in `database_url` if given.
    pub async fn start(database_url: Option<String>) -> anyhow::Result<LoadNode> {
        let dir = tempfile::tempdir()?;
        let grpc = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = Config {
            data_dir: dir.path().to_owned(),
            http: "127.0.0.1:0".parse()?,
            grpc,
            database_url: database_url.unwrap_or_default(),
            ..Config::default()
        };
        let node = Node::start(&config).await?;
        let store = actors::Store::connect(&config.database_url()).await?;
        let admin = std::fs::read_to_string(dir.path().join("admin.token"))?
            .trim()
            .to_owned();
        Ok(LoadNode {
            node,
            store,
            admin,
            grpc,
            dir,
        })
    }
}

/// Publishes `make(i)` for i in 0..total onto `node`'s bus, `concurrency` at a time; each
/// publisher's task ends when the numbers run out.
pub fn publish(
    node: &Node,
    total: u64,
    concurrency: u64,
    make: impl Fn(u64) -> Envelope + Clone + Send + 'static,
) -> Vec<JoinHandle<anyhow::Result<()>>> {
    {
        let (bus, next) = (node.bus(), Arc::new(AtomicU64::new(0)));
        (0..concurrency.max(1))
            .map(|_| {
                let (bus, next, make) = (bus.clone(), next.clone(), make.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return Ok(());
                        }
                        actors::publish(bus.as_ref(), &make(i))
                            .await
                            .map_err(|e| anyhow::anyhow!(e.error))?;
                    }
                })
            })
            .collect()
    }
}
