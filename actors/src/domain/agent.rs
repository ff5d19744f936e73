//! Agents: registration, heartbeats, and going offline when the heartbeats stop.

use super::{Capabilities, Effect, Refusal};

/// An agent as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Client-chosen id.
    pub agent_id: String,
    /// Owning user.
    pub user: String,
    /// Display name.
    pub name: String,
    /// What it offers.
    pub capabilities: Capabilities,
    /// Tasks it works on at once, at most.
    pub max_concurrent: u32,
    /// Whether it is taking work.
    pub online: bool,
    /// Its last sign of life, ms since the Unix epoch (the message's time).
    pub last_heartbeat: u64,
    /// When it first registered, ms since the Unix epoch.
    pub registered_at: u64,
}

/// What can happen to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// It announces itself (again, after a restart).
    Register {
        /// The agent's id.
        agent_id: String,
        /// Display name.
        name: String,
        /// What it offers.
        capabilities: Capabilities,
        /// Tasks it works on at once, at most.
        max_concurrent: u32,
    },
    /// It is alive.
    Heartbeat,
    /// It missed its heartbeats.
    GoOffline {
        /// Why it counts as gone.
        reason: String,
    },
}

impl Command {
    /// The command's name in refusals: its message type.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Register { .. } => "agent.registered",
            Command::Heartbeat => "agent.heartbeat",
            Command::GoOffline { .. } => "agent.offline",
        }
    }
}

/// Applies `command` from `user` at `now` (the message's time) to `agent` (`None` if
/// unknown); returns the new agent and what it asks of the node.
pub fn step(
    agent: Option<&Agent>,
    user: &str,
    command: &Command,
    now: u64,
) -> Result<(Agent, Vec<Effect>), Refusal> {
    let kind = command.name();
    if let Some(agent) = agent
        && agent.user != user
    {
        return Err(Refusal(format!(
            "{kind}: agent `{}` belongs to another user",
            agent.agent_id
        )));
    }
    match (command, agent) {
        // Registering again updates the agent: a restarted worker re-announces itself.
        (
            Command::Register {
                agent_id,
                name,
                capabilities,
                max_concurrent,
            },
            existing,
        ) => Ok((
            Agent {
                agent_id: agent_id.clone(),
                user: user.to_owned(),
                name: name.clone(),
                capabilities: capabilities.clone(),
                max_concurrent: *max_concurrent,
                online: true,
                last_heartbeat: now,
                registered_at: existing.map_or(now, |a| a.registered_at),
            },
            vec![Effect::Assign],
        )),
        (Command::Heartbeat, Some(agent)) => {
            // Only an agent coming back changes who can take work.
            let effects = if agent.online {
                Vec::new()
            } else {
                vec![Effect::Assign]
            };
            let agent = Agent {
                online: true,
                last_heartbeat: now.max(agent.last_heartbeat),
                ..agent.clone()
            };
            Ok((agent, effects))
        }
        (Command::GoOffline { .. }, Some(agent)) => {
            if !agent.online {
                return Err(Refusal(format!(
                    "{kind}: agent `{}` is already offline",
                    agent.agent_id
                )));
            }
            let agent = Agent {
                online: false,
                ..agent.clone()
            };
            let effects = vec![Effect::RequeueTasksOf(agent.agent_id.clone())];
            Ok((agent, effects))
        }
        (_, None) => Err(Refusal(format!("{kind}: the agent is not registered"))),
    }
}

/// Whether an agent last heard of at `last_heartbeat` counts as gone at `now`.
pub fn silent(last_heartbeat: u64, now: u64, timeout_ms: u64) -> bool {
    now.saturating_sub(last_heartbeat) > timeout_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(max: u32) -> Command {
        Command::Register {
            agent_id: "a1".into(),
            name: "builder".into(),
            capabilities: Capabilities::default(),
            max_concurrent: max,
        }
    }

    #[test]
    fn register_heartbeat_offline_and_back() {
        let (agent, effects) = step(None, "u1", &register(2), 10).unwrap();
        assert_eq!(effects, [Effect::Assign]);
        let (agent, effects) = step(Some(&agent), "u1", &Command::Heartbeat, 20).unwrap();
        assert_eq!(
            (agent.registered_at, agent.last_heartbeat, effects.len()),
            (10, 20, 0)
        );
        let gone = Command::GoOffline {
            reason: "silent 30 s".into(),
        };
        let (agent, effects) = step(Some(&agent), "u1", &gone, 60).unwrap();
        assert_eq!(
            (agent.online, effects),
            (false, vec![Effect::RequeueTasksOf("a1".into())])
        );
        assert!(
            step(Some(&agent), "u1", &gone, 61).is_err(),
            "once is enough"
        );
        let (agent, effects) = step(Some(&agent), "u1", &Command::Heartbeat, 70).unwrap();
        assert_eq!((agent.online, effects), (true, vec![Effect::Assign]));
        let (again, _) = step(Some(&agent), "u1", &register(4), 80).unwrap();
        assert_eq!((again.registered_at, again.max_concurrent), (10, 4));
    }

    #[test]
    fn strangers_and_other_users_are_refused() {
        assert_eq!(
            step(None, "u1", &Command::Heartbeat, 0).unwrap_err().0,
            "agent.heartbeat: the agent is not registered"
        );
        let (agent, _) = step(None, "u1", &register(1), 0).unwrap();
        assert!(
            step(Some(&agent), "u2", &Command::Heartbeat, 1)
                .unwrap_err()
                .0
                .contains("another user")
        );
        assert!(silent(0, 31_000, 30_000) && !silent(0, 30_000, 30_000));
    }
}
