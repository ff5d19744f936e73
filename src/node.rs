//! Builds and runs one node: bus, store, credentials, and the supervision tree of DESIGN §4.

use std::sync::Arc;
use std::time::Duration;

use std::io::{Read, Write};
use std::path::Path;

use actors::cluster::{ClusterActor, ClusterArgs};
use actors::{
    IngressActor, NodeApi, NodeContext, NotifierActor, OrchestratorActor, Ownership, Store, names,
};
use anyhow::Context;
use broker_adapters::{Bus, EmbeddedBus, KafkaBus, RabbitBus};
use gateways::{Auth, GatewayContext, ServerAddrs, ServersActor};
use migrations::{Migrator, MigratorTrait};
use ractor::{Actor, ActorRef};
use supervisor::{
    Backoff, ChildSpec, Restart, Strategy, SupervisorActor, SupervisorArgs, SupervisorConfig,
    SupervisorMsg, Tree,
};

use crate::config::{BusKind, Config};
use crate::credentials;

/// The root of the tree.
const ROOT: &str = "node";

/// How long a starting node waits for an unreachable broker before giving up.
const BUS_WAIT: Duration = Duration::from_secs(60);

/// A running node.
pub struct Node {
    root: ActorRef<SupervisorMsg>,
    /// Finishes when the root supervisor has stopped, for whatever reason.
    stopped: tokio::task::JoinHandle<()>,
    bus: Arc<dyn Bus>,
    tree: Tree,
    _lock: DataDirLock,
}

/// Opens the configured bus; nothing is created on the broker yet.
pub async fn open_bus(config: &Config) -> anyhow::Result<Arc<dyn Bus>> {
    Ok(match config.bus {
        BusKind::Embedded => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            Arc::new(EmbeddedBus::open(&config.data_dir.join("bus.sqlite")).await?)
        }
        BusKind::Kafka => {
            let session = Duration::from_millis(config.kafka_session_timeout_ms);
            Arc::new(KafkaBus::connect(&config.kafka_brokers, session)?)
        }
        BusKind::Rabbitmq => Arc::new(RabbitBus::connect(&config.amqp_url)),
    })
}

/// Creates the events topic, waiting (with a backoff) while the broker is unreachable.
async fn create_events_topic(bus: &dyn Bus, partitions: u32) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BUS_WAIT;
    let mut wait = Duration::from_millis(200);
    loop {
        match bus.create_topic(schemas::EVENTS_TOPIC, partitions).await {
            Ok(()) => return Ok(()),
            Err(error) if error.is_transient() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "waiting for the bus");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                return Err(error).context(format!("creating the topic {}", schemas::EVENTS_TOPIC));
            }
        }
    }
}

impl Node {
    /// Opens the bus and the database (migrating it), then starts the tree.
    pub async fn start(config: &Config) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let lock = DataDirLock::take(&config.data_dir)?;
        let bus = open_bus(config).await?;
        create_events_topic(bus.as_ref(), config.partitions).await?;
        let store = Store::connect(&config.database_url())
            .await
            .context("connecting to the database")?;
        Migrator::up(store.connection(), None)
            .await
            .context("migrating the database")?;
        credentials::ensure_admin_key(&store, &config.data_dir).await?;

        let tree = Tree::default();
        let agent_timeout = Duration::from_millis(config.agent_timeout_ms.max(300));
        let ctx = NodeContext {
            store: store.clone(),
            bus: bus.clone(),
            node_id: config.node_id.clone(),
            root: ROOT.into(),
            passivate_after: Duration::from_secs(config.passivate_after_secs),
            assign_interval: Duration::from_secs(5).min(agent_timeout / 3),
            ownership: Ownership::default(),
            agent_timeout,
            agent_signals: tokio::sync::broadcast::channel(1024).0,
            outcomes: Default::default(),
        };
        let gateway = GatewayContext {
            auth: Auth::new(store.clone()),
            node: NodeApi::new(&ctx),
            tree: tree.clone(),
            root: ROOT.into(),
            node_id: config.node_id.clone(),
        };
        let addrs = ServerAddrs {
            http: config.http,
            grpc: config.grpc,
        };
        let args = SupervisorArgs {
            path: ROOT.into(),
            tree: tree.clone(),
            config: SupervisorConfig {
                strategy: Strategy::OneForOne,
                max_restarts: 10,
                within: Duration::from_secs(60),
                backoff: Backoff {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(10),
                },
            },
            children: children(&ctx, &tree, gateway, addrs),
        };
        let (root, stopped) = Actor::spawn(Some(ROOT.into()), SupervisorActor, args)
            .await
            .context("starting the supervision tree")?;
        Ok(Node {
            root,
            stopped,
            bus,
            tree,
            _lock: lock,
        })
    }

    /// The node's bus.
    pub fn bus(&self) -> Arc<dyn Bus> {
        self.bus.clone()
    }

    /// The live supervision tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Waits until the tree has died on its own: the root exceeded its restart intensity.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn failed(&mut self) {
        let _ = (&mut self.stopped).await;
    }

    /// Stops the node front to back: servers, then ingress (committing what was acked), then
    /// the mailboxes, so nothing is half-applied and nothing acked is lost.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let order = [
            names::SERVERS,
            names::INGRESS,
            names::CLUSTER,
            names::NOTIFIER,
            names::AGENTS,
            names::TASKS,
            names::ORCHESTRATOR,
        ];
        for name in order {
            let timeout = Duration::from_secs(10);
            // Forget the child first, so the root does not restart what we stop.
            let _ = supervisor::terminate_child(&self.root, name, timeout).await;
        }
        self.root
            .stop_and_wait(None, Some(Duration::from_secs(10)))
            .await?;
        self.bus.close().await?;
        Ok(())
    }
}

/// The node's children, in start order: each one's dependencies start before it.
fn children(
    ctx: &NodeContext,
    tree: &Tree,
    gateway: GatewayContext,
    addrs: ServerAddrs,
) -> Vec<ChildSpec> {
    let cluster = ClusterArgs {
        ctx: ctx.clone(),
        http: addrs.http.to_string(),
        grpc: addrs.grpc.to_string(),
    };
    let with_ctx = |ctx: &NodeContext| {
        let ctx = ctx.clone();
        move || ctx.clone()
    };
    // Entity actors come and go; a burst of their failures should not take the node down.
    let mailboxes = |name: &str| {
        let args = SupervisorArgs {
            path: ctx.path(name),
            tree: tree.clone(),
            config: SupervisorConfig {
                max_restarts: 100,
                within: Duration::from_secs(10),
                ..SupervisorConfig::default()
            },
            children: Vec::new(),
        };
        ChildSpec::actor(name, Restart::Permanent, SupervisorActor, move || {
            args.clone()
        })
    };
    vec![
        ChildSpec::actor(
            names::ORCHESTRATOR,
            Restart::Permanent,
            OrchestratorActor,
            with_ctx(ctx),
        ),
        mailboxes(names::TASKS),
        mailboxes(names::AGENTS),
        ChildSpec::actor(
            names::NOTIFIER,
            Restart::Permanent,
            NotifierActor,
            with_ctx(ctx),
        ),
        ChildSpec::actor(
            names::INGRESS,
            Restart::Permanent,
            IngressActor,
            with_ctx(ctx),
        ),
        ChildSpec::actor(
            names::CLUSTER,
            Restart::Permanent,
            ClusterActor,
            move || cluster.clone(),
        ),
        ChildSpec::actor(
            names::SERVERS,
            Restart::Permanent,
            ServersActor,
            move || (gateway.clone(), addrs),
        ),
    ]
}

/// An exclusive lock on a data directory, held while the node runs, so a second node cannot
/// use the same embedded log and state.
struct DataDirLock {
    /// Held, not read: the lock lasts as long as the file is open.
    _file: std::fs::File,
}

impl DataDirLock {
    const FILE: &str = "node.lock";

    fn take(dir: &Path) -> anyhow::Result<DataDirLock> {
        let path = dir.join(Self::FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown" } else { holder };
            anyhow::bail!(
                "the data directory {} is in use by another switchyard node (process {holder}); \
                 stop it, or give this node its own --data-dir",
                dir.display()
            );
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(DataDirLock { _file: file })
    }
}
