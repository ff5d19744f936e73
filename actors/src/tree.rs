//! The node's supervision tree (DESIGN §4), declared once: names, nesting, strategies and
//! start order come from `LAYOUT`; paths are derived from it, and the node stops its children
//! in the reverse of their start order (front doors first, state last).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use supervisor::{Strategy, SupervisorConfig};

/// The actors of a node that the tree starts, each a permanent child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// Assignment and the sweep (`OrchestratorActor`).
    Scheduler,
    /// Recurring and requested runs of automations (`AutomationsActor`).
    Automations,
    /// Records requested notifications (`NotifierActor`).
    Notifier,
    /// Delivers recorded notifications (`OutboxActor`).
    Outbox,
    /// The bus consumer (`IngressActor`).
    Ingress,
    /// This node's record in the cluster (`ClusterActor`).
    Cluster,
    /// HTTP and gRPC (`ServersActor`).
    Servers,
}

/// What a node of the tree is.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A supervisor of the children listed, with this strategy.
    Supervisor(Strategy, &'static [Part]),
    /// A supervisor of mailboxes started on demand (one per entity), tolerant of their bursts.
    Mailboxes,
    /// A supervisor of the configured outbound providers' mailboxes (`ProviderActor`).
    Providers,
    /// An actor.
    Worker(Worker),
}

/// A named node of the tree.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// Its name, the last segment of its path.
    pub name: &'static str,
    /// What it is.
    pub kind: Kind,
}

const fn part(name: &'static str, kind: Kind) -> Part {
    Part { name, kind }
}

/// Child names of the node's tree.
pub mod names {
    /// The bus consumer.
    pub const INGRESS: &str = "ingress";
    /// The supervisor of scheduling and the task mailboxes.
    pub const ORCHESTRATOR: &str = "orchestrator";
    /// Assignment and the sweep.
    pub const SCHEDULER: &str = "scheduler";
    /// The supervisor of task mailboxes.
    pub const TASKS: &str = "tasks";
    /// Automations: cron schedules and run-now.
    pub const AUTOMATIONS: &str = "automations";
    /// The supervisor of agent mailboxes.
    pub const AGENTS: &str = "agents";
    /// The supervisor of conversation mailboxes.
    pub const CONVERSATIONS: &str = "conversations";
    /// The supervisor of notifications.
    pub const NOTIFIER: &str = "notifier";
    /// Records requested notifications.
    pub const REQUESTS: &str = "requests";
    /// Delivers recorded notifications.
    pub const OUTBOX: &str = "outbox";
    /// The supervisor of the outbound providers' mailboxes.
    pub const LIMITERS: &str = "limiters";
    /// Rate limiters, the calendar writer, the cost monitor.
    pub const INTEGRATIONS: &str = "integrations";
    /// The supervisor of calendar mailboxes.
    pub const CALENDARS: &str = "calendars";
    /// The supervisor of cost mailboxes (the cost monitor).
    pub const COSTS: &str = "costs";
    /// This node's record in the cluster.
    pub const CLUSTER: &str = "cluster";
    /// HTTP and gRPC.
    pub const SERVERS: &str = "servers";
}

/// The node's children, in start order (each one's dependencies before it).
pub const LAYOUT: &[Part] = &[
    part(
        names::ORCHESTRATOR,
        // The scheduler reads what task mailboxes write; either may restart alone.
        Kind::Supervisor(
            Strategy::OneForOne,
            &[
                part(names::SCHEDULER, Kind::Worker(Worker::Scheduler)),
                part(names::AUTOMATIONS, Kind::Worker(Worker::Automations)),
                part(names::TASKS, Kind::Mailboxes),
            ],
        ),
    ),
    part(names::AGENTS, Kind::Mailboxes),
    part(names::CONVERSATIONS, Kind::Mailboxes),
    part(
        names::INTEGRATIONS,
        Kind::Supervisor(
            Strategy::OneForOne,
            &[
                part(names::LIMITERS, Kind::Providers),
                part(names::CALENDARS, Kind::Mailboxes),
                part(names::COSTS, Kind::Mailboxes),
            ],
        ),
    ),
    part(
        names::NOTIFIER,
        // The outbox sends through the limiters, started before it.
        Kind::Supervisor(
            Strategy::OneForOne,
            &[
                part(names::REQUESTS, Kind::Worker(Worker::Notifier)),
                part(names::OUTBOX, Kind::Worker(Worker::Outbox)),
            ],
        ),
    ),
    part(names::INGRESS, Kind::Worker(Worker::Ingress)),
    part(names::CLUSTER, Kind::Worker(Worker::Cluster)),
    part(names::SERVERS, Kind::Worker(Worker::Servers)),
];

/// How a mailbox supervisor restarts: entity actors come and go, and a burst of their failures
/// should not take the node down.
pub fn mailbox_config() -> SupervisorConfig {
    SupervisorConfig {
        max_restarts: 100,
        within: Duration::from_secs(10),
        ..SupervisorConfig::default()
    }
}

/// The path below the root of the part named `name` (`orchestrator/tasks`, say).
pub fn relative_path(name: &str) -> Option<&'static str> {
    // Worked out once: the router and the mailboxes ask for every message they pass on.
    static PATHS: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    fn walk(parts: &'static [Part], parent: &str, paths: &mut HashMap<&'static str, String>) {
        for p in parts {
            let path = match parent {
                "" => p.name.to_owned(),
                parent => format!("{parent}/{}", p.name),
            };
            // The first of a name in start order wins, as a search would find it.
            paths.entry(p.name).or_insert_with(|| path.clone());
            if let Kind::Supervisor(_, children) = p.kind {
                walk(children, &path, paths);
            }
        }
    }
    PATHS
        .get_or_init(|| {
            let mut paths = HashMap::new();
            walk(LAYOUT, "", &mut paths);
            paths
        })
        .get(name)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_nesting() {
        assert_eq!(relative_path(names::TASKS), Some("orchestrator/tasks"));
        assert_eq!(relative_path(names::SERVERS), Some("servers"));
        assert_eq!(relative_path("nobody"), None);
    }
}
