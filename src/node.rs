//! Builds and runs one node: bus, store, credentials, and the supervision tree of DESIGN §4.

use std::sync::Arc;
use std::time::Duration;

use std::io::{Read, Write};
use std::path::Path;

use actors::cluster::{ClusterActor, ClusterArgs};
use actors::tree::Worker;
use actors::{
    AutomationsActor, Clock, IngressActor, NodeApi, NodeContext, Notifier, NotifierActor,
    OrchestratorActor, OutboxActor, Ownership, ProviderActor, ProviderArgs, Store, tree,
};
use anyhow::Context;
use broker_adapters::{Bus, EmbeddedBus, KafkaBus, RabbitBus, StartAt};
use gateways::channels::Channels;
use gateways::{Auth, GatewayContext, HttpPolicy, ServerAddrs, ServersActor};
use migrations::{Migrator, MigratorTrait};
use ractor::{Actor, ActorRef};
use supervisor::{
    Backoff, ChildSpec, Restart, Strategy, SupervisorActor, SupervisorArgs, SupervisorConfig,
    SupervisorMsg, Tree,
};

use crate::config::{BusKind, Config};

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

/// Creates the events topic and the ingress's consumer group, waiting (with a backoff) while
/// the broker is unreachable: the group exists before the gateways accept a first event, so
/// it receives every event in the order it was published.
async fn create_events_topic(bus: &dyn Bus, partitions: u32) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BUS_WAIT;
    let mut wait = Duration::from_millis(200);
    let group = actors::INGRESS_GROUP;
    loop {
        let created = async {
            bus.create_topic(schemas::EVENTS_TOPIC, partitions).await?;
            bus.declare_group(schemas::EVENTS_TOPIC, group, StartAt::Earliest)
                .await
        };
        match created.await {
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
        Node::start_with_clock(config, Clock::system()).await
    }

    /// `start`, with `clock` as the time of the node's timed work (retries, quiet hours).
    pub async fn start_with_clock(config: &Config, clock: Clock) -> anyhow::Result<Node> {
        // Installed first: what is recorded before a recorder exists is lost.
        gateways::metrics::recorder();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let lock = DataDirLock::take(&config.data_dir)?;
        let bus = open_bus(config).await?;
        create_events_topic(bus.as_ref(), config.partitions).await?;
        // An existing topic keeps its own count. Only live reads use it, and a wrong count
        // finds no live mailbox (an entity lives in the shard of its deliveries' partition).
        let partitions = bus
            .partitions(schemas::EVENTS_TOPIC)
            .await
            .unwrap_or(config.partitions);
        let store = Store::connect(&config.database_url())
            .await
            .context("connecting to the database")?;
        Migrator::up(store.connection(), None)
            .await
            .context("migrating the database")?;
        actors::credentials::ensure_admin_key(&store, &config.data_dir).await?;

        let (notifier, mut providers) = notifier(&config.notifier)?;
        let caldav = match &config.calendar.caldav {
            Some(c) => {
                let http = actors::providers::http_client(config.notifier.timeout_ms)
                    .map_err(|e| anyhow::anyhow!(e))?;
                let (args, mailbox) = actors::mailbox("caldav", c.limit);
                providers.push(("caldav".into(), args));
                let client = actors::providers::caldav::CalDav::new(c, http);
                Some(actors::CalDavBackend { client, mailbox })
            }
            None => None,
        };
        let mut models = std::collections::BTreeMap::new();
        for (provider, limit) in &config.models {
            let name = format!("model.{provider}");
            let (args, mailbox) = actors::mailbox(&name, *limit);
            providers.push((name, args));
            models.insert(provider.clone(), mailbox);
        }
        config.costs.check().map_err(|e| anyhow::anyhow!(e))?;
        let tree = Tree::default();
        let ctx = NodeContext {
            notifier: Arc::new(notifier),
            caldav,
            models: Arc::new(models),
            ..context(
                config,
                store.clone(),
                bus.clone(),
                partitions,
                tree.clone(),
                clock,
            )
        };
        let channels = Channels::new(&config.channels).map_err(|e| anyhow::anyhow!(e))?;
        let gateway = GatewayContext {
            auth: Auth::new(store.clone()),
            node: NodeApi::new(&ctx),
            tree: tree.clone(),
            root: ROOT.into(),
            node_id: config.node_id.clone(),
            channels: Arc::new(channels),
            http: Arc::new(HttpPolicy::new(
                config.limits.clone(),
                config.open_operator_endpoints,
            )),
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
            children: Parts {
                ctx: ctx.clone(),
                tree: tree.clone(),
                servers: Some((gateway, addrs)),
                providers,
            }
            .specs(ROOT, tree::LAYOUT),
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
        // The reverse of the start order: front doors first, the state's writers last.
        let order = tree::LAYOUT.iter().rev().map(|part| part.name);
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

/// What the actors of a node on `store` and `bus` share, as `config` says, with no outbound
/// provider, CalDAV server or model limit (a node adds those it has).
fn context(
    config: &Config,
    store: Store,
    bus: Arc<dyn Bus>,
    partitions: u32,
    tree: Tree,
    clock: Clock,
) -> NodeContext {
    let agent_timeout = Duration::from_millis(config.agent_timeout_ms.max(300));
    NodeContext {
        store,
        bus,
        node_id: config.node_id.clone(),
        root: ROOT.into(),
        partitions,
        tree,
        passivate_after: Duration::from_secs(config.passivate_after_secs),
        assign_interval: Duration::from_secs(5).min(agent_timeout / 3),
        ownership: Ownership::default(),
        agent_timeout,
        agent_signals: Default::default(),
        outcomes: Default::default(),
        cascades: Default::default(),
        assign_request: Default::default(),
        channels: Arc::new(config.channels.rules()),
        notifier: Arc::new(Notifier::default()),
        budgets: Arc::new(config.costs.clone()),
        clock,
        automation_grace: Duration::from_millis(config.automation_grace_ms),
        caldav: None,
        models: Default::default(),
    }
}

/// What a replay did, and the publishes it held back.
#[derive(Debug, Clone)]
pub struct ReplaySummary {
    /// Records read and how they fared.
    pub replayed: actors::Replayed,
    /// Events the mailboxes would have published (they are on the topic already).
    pub suppressed: u64,
    /// Where a resumed replay went on from, past its checkpoint.
    pub resumed_from: Option<broker_adapters::ReplayFrom>,
}

/// Rebuilds state into the database at `into` (migrated first) from the configured bus's
/// events topic, from `from`, through the node's own mailboxes with nothing published,
/// scheduled or sent outward; `progress` hears how far it read. A database that holds state
/// already is refused unless `resume`, which goes on with it past the checkpoint the earlier
/// run left (what is applied stays applied).
pub async fn replay(
    config: &Config,
    from: broker_adapters::ReplayFrom,
    into: &str,
    resume: bool,
    progress: &(dyn Fn(actors::Progress) + Sync),
) -> anyhow::Result<ReplaySummary> {
    let source = open_bus(config).await?;
    let partitions = source
        .partitions(schemas::EVENTS_TOPIC)
        .await
        .with_context(|| format!("reading the topic {}", schemas::EVENTS_TOPIC))?;
    let store = Store::connect(into)
        .await
        .context("connecting to the target database")?;
    Migrator::up(store.connection(), None)
        .await
        .context("migrating the target database")?;
    let (checkpoint_from, checkpoint) = store
        .replay_checkpoint(schemas::EVENTS_TOPIC)
        .await
        .context("reading the replay's checkpoint")?;
    if !resume && (store.holds_state().await? || !checkpoint.is_empty()) {
        anyhow::bail!("the target database already holds state; give --resume to go on with it");
    }
    // A checkpoint says nothing of what came before its replay's start.
    let started_from = crate::replay::show_from(&from);
    if let Some(earlier) = checkpoint_from.filter(|f| resume && *f != started_from) {
        anyhow::bail!(
            "the target's checkpoint is of a replay from {earlier}; resume it with --from {earlier}"
        );
    }
    let resumed_from =
        (resume && !checkpoint.is_empty()).then(|| actors::resume_from(from.clone(), &checkpoint));
    let from = resumed_from.clone().unwrap_or(from);
    let quiet = Arc::new(actors::Quiet::new(source.clone()));
    let tree = Tree::default();
    let ctx = NodeContext {
        node_id: format!("{}-replay", config.node_id),
        ..context(
            config,
            store,
            quiet.clone(),
            partitions,
            tree.clone(),
            Clock::system(),
        )
    };
    let parts = Parts {
        ctx: ctx.clone(),
        tree: tree.clone(),
        servers: None,
        providers: Vec::new(),
    };
    let args = SupervisorArgs {
        path: ROOT.into(),
        tree,
        config: SupervisorConfig::default(),
        children: parts.specs(ROOT, tree::LAYOUT),
    };
    let (root, _stopped) = Actor::spawn(Some(ROOT.into()), SupervisorActor, args)
        .await
        .context("starting the replay's mailboxes")?;
    let replayed = actors::replay(&ctx, source.as_ref(), from, &started_from, progress).await;
    root.stop_and_wait(None, Some(Duration::from_secs(10)))
        .await
        .context("stopping the replay's mailboxes")?;
    source.close().await.context("closing the bus")?;
    Ok(ReplaySummary {
        replayed: replayed.context("reading the bus")?,
        suppressed: quiet.suppressed(),
        resumed_from,
    })
}

/// The notifier `config` describes, and the mailbox of each provider it sends through.
fn notifier(
    config: &actors::providers::NotifierConfig,
) -> anyhow::Result<(Notifier, Vec<(String, ProviderArgs)>)> {
    let preferences = config.preferences().map_err(|e| anyhow::anyhow!(e))?;
    let providers = actors::providers::from_config(config).map_err(|e| anyhow::anyhow!(e))?;
    let mut handles = std::collections::BTreeMap::new();
    let mut mailboxes = Vec::new();
    for (name, (provider, limit)) in providers {
        let (args, mailbox) = actors::mailbox(&name, limit);
        handles.insert(name.clone(), actors::Channel { provider, mailbox });
        mailboxes.push((name, args));
    }
    let ms = Duration::from_millis;
    let notifier = Notifier {
        poll: ms(config.poll_ms.max(10)),
        lease: ms(config.lease_ms.max(1000)),
        max_attempts: config.max_attempts.max(1),
        retry_initial: ms(config.retry_initial_ms.max(1)),
        retry_max: ms(config.retry_max_ms.max(1)),
        preferences,
        providers: handles,
    };
    Ok((notifier, mailboxes))
}

/// What the node's actors are started with.
struct Parts {
    ctx: NodeContext,
    tree: Tree,
    /// The servers' context and addresses; none for a replay, which runs only mailboxes.
    servers: Option<(GatewayContext, ServerAddrs)>,
    /// Each outbound provider's mailbox, by name.
    providers: Vec<(String, ProviderArgs)>,
}

impl Parts {
    /// The child specs of `parts`, below the supervisor at `parent`.
    fn specs(&self, parent: &str, parts: &[tree::Part]) -> Vec<ChildSpec> {
        parts
            .iter()
            .filter(|part| self.runs(part))
            .map(|part| self.spec(parent, part))
            .collect()
    }

    /// Whether `part` runs: all of it on a node; on a replay only what applies messages (the
    /// mailboxes and the notifier's recorder), nothing that reads the bus live, decides,
    /// schedules or calls out.
    fn runs(&self, part: &tree::Part) -> bool {
        self.servers.is_some()
            || !matches!(
                part.kind,
                tree::Kind::Providers
                    | tree::Kind::Worker(
                        Worker::Scheduler
                            | Worker::Automations
                            | Worker::Outbox
                            | Worker::Ingress
                            | Worker::Cluster
                            | Worker::Servers
                    )
            )
    }

    fn spec(&self, parent: &str, part: &tree::Part) -> ChildSpec {
        let path = format!("{parent}/{}", part.name);
        let ctx = self.ctx.clone();
        let with_ctx = move || ctx.clone();
        let supervisor = |config: SupervisorConfig, children: Vec<ChildSpec>| {
            let args = SupervisorArgs {
                path: path.clone(),
                tree: self.tree.clone(),
                config,
                children,
            };
            ChildSpec::actor(part.name, Restart::Permanent, SupervisorActor, move || {
                args.clone()
            })
        };
        match part.kind {
            tree::Kind::Supervisor(strategy, children) => {
                let config = SupervisorConfig {
                    strategy,
                    ..SupervisorConfig::default()
                };
                supervisor(config, self.specs(&path, children))
            }
            tree::Kind::Mailboxes => supervisor(tree::mailbox_config(), Vec::new()),
            tree::Kind::Providers => {
                let mailboxes = self.providers.iter().map(|(name, args)| {
                    let args = args.clone();
                    ChildSpec::actor(name, Restart::Permanent, ProviderActor, move || {
                        args.clone()
                    })
                });
                supervisor(SupervisorConfig::default(), mailboxes.collect())
            }
            tree::Kind::Worker(worker) => {
                let name = part.name;
                match worker {
                    Worker::Scheduler => {
                        ChildSpec::actor(name, Restart::Permanent, OrchestratorActor, with_ctx)
                    }
                    Worker::Automations => {
                        ChildSpec::actor(name, Restart::Permanent, AutomationsActor, with_ctx)
                    }
                    Worker::Notifier => {
                        ChildSpec::actor(name, Restart::Permanent, NotifierActor, with_ctx)
                    }
                    Worker::Outbox => {
                        ChildSpec::actor(name, Restart::Permanent, OutboxActor, with_ctx)
                    }
                    Worker::Ingress => {
                        ChildSpec::actor(name, Restart::Permanent, IngressActor, with_ctx)
                    }
                    Worker::Cluster => {
                        let addrs = self.servers.as_ref().map(|(_, a)| *a);
                        let cluster = ClusterArgs {
                            ctx: self.ctx.clone(),
                            http: addrs.map(|a| a.http.to_string()).unwrap_or_default(),
                            grpc: addrs.map(|a| a.grpc.to_string()).unwrap_or_default(),
                        };
                        ChildSpec::actor(name, Restart::Permanent, ClusterActor, move || {
                            cluster.clone()
                        })
                    }
                    Worker::Servers => {
                        let Some((gateway, addrs)) = self.servers.clone() else {
                            unreachable!("a replay runs no servers (`runs`)")
                        };
                        ChildSpec::actor(name, Restart::Permanent, ServersActor, move || {
                            (gateway.clone(), addrs)
                        })
                    }
                }
            }
        }
    }
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
