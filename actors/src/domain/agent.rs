//! Agents: registration and heartbeats.

use schemas::{Capabilities, Envelope, Message};

use super::{Effect, Refusal};

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
    /// Its last sign of life, ms since the Unix epoch.
    pub last_heartbeat: u64,
    /// When it first registered, ms since the Unix epoch.
    pub registered_at: u64,
}

/// Applies an `agent.*` message to `agent` (`None` if unknown); returns the new agent and effects.
pub fn step(
    agent: Option<&Agent>,
    envelope: &Envelope,
    now: u64,
) -> Result<(Agent, Vec<Effect>), Refusal> {
    if let Some(agent) = agent
        && agent.user != envelope.user
    {
        return Err(Refusal(format!(
            "agent `{}` belongs to another user",
            agent.agent_id
        )));
    }
    let next = match (&envelope.message, agent) {
        // Registering again updates the agent: a restarted worker re-announces itself.
        (Message::AgentRegistered(r), existing) => Agent {
            agent_id: r.agent_id.clone(),
            user: envelope.user.clone(),
            name: r.name.clone(),
            capabilities: r.capabilities.clone(),
            max_concurrent: r.max_concurrent,
            online: true,
            last_heartbeat: now,
            registered_at: existing.map_or(now, |a| a.registered_at),
        },
        (Message::AgentHeartbeat(_), Some(agent)) => Agent {
            online: true,
            last_heartbeat: now,
            ..agent.clone()
        },
        (Message::AgentHeartbeat(h), None) => {
            return Err(Refusal(format!(
                "agent.heartbeat: agent `{}` is not registered",
                h.agent_id
            )));
        }
        (other, _) => {
            return Err(Refusal(format!(
                "`{}` is not an agent message",
                other.type_name()
            )));
        }
    };
    Ok((next, vec![Effect::Assign]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{AgentHeartbeat, AgentRegistered};

    fn registered(max: u32) -> Envelope {
        Envelope::new(
            "m",
            "t",
            0,
            "u1",
            Message::AgentRegistered(AgentRegistered {
                agent_id: "a1".into(),
                name: "builder".into(),
                capabilities: Capabilities::default(),
                max_concurrent: max,
            }),
        )
    }

    fn heartbeat() -> Envelope {
        Envelope::new(
            "m",
            "t",
            0,
            "u1",
            Message::AgentHeartbeat(AgentHeartbeat {
                agent_id: "a1".into(),
            }),
        )
    }

    #[test]
    fn register_then_heartbeat_keeps_registration_time() {
        let (agent, _) = step(None, &registered(2), 10).unwrap();
        let (agent, effects) = step(Some(&agent), &heartbeat(), 20).unwrap();
        assert_eq!(
            (agent.registered_at, agent.last_heartbeat, agent.online),
            (10, 20, true)
        );
        assert_eq!(effects, vec![Effect::Assign]);
        let (again, _) = step(Some(&agent), &registered(4), 30).unwrap();
        assert_eq!((again.registered_at, again.max_concurrent), (10, 4));
    }

    #[test]
    fn heartbeat_of_a_stranger_is_refused() {
        assert_eq!(
            step(None, &heartbeat(), 0).unwrap_err().0,
            "agent.heartbeat: agent `a1` is not registered"
        );
    }
}
