//! Scored assignment (seed 003): hard requirements disqualify an agent, soft ones add points;
//! tasks go in priority order (urgent first, then oldest), each to its best-scoring agent with
//! room. Decisions already made and not yet applied (reservations) count against capacity and
//! are not made again, so an orchestrator that restarts mid-way decides the same things once.

use std::cmp::Reverse;

use super::{Capabilities, Priority};

/// A task waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTask {
    /// The task.
    pub task_id: String,
    /// Its owner; only the owner's agents may take it.
    pub user: String,
    /// Urgency.
    pub priority: Priority,
    /// When it was created (older first within a priority).
    pub created_at: u64,
    /// What an agent must (or should) offer.
    pub requirements: Capabilities,
    /// An agent to prefer.
    pub preferred_agent: Option<String>,
    /// Which time it is pending (names the assignment).
    pub generation: u32,
}

/// An agent that could take work, with how much it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSlot {
    /// The agent.
    pub agent_id: String,
    /// Its owner.
    pub user: String,
    /// What it offers.
    pub capabilities: Capabilities,
    /// Tasks it works on at once, at most.
    pub max_concurrent: u32,
    /// Tasks it holds now (applied assignments).
    pub load: u32,
    /// Whether it is taking work.
    pub online: bool,
}

/// A task given to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The task.
    pub task_id: String,
    /// Which time it is pending.
    pub generation: u32,
    /// The agent.
    pub agent_id: String,
}

/// The score of `agent` for `task`, or `None` if a hard requirement disqualifies it: every
/// required repo (+100) and language (+50), at least one required environment (+30); each
/// matching tool (+10) and tag (+5); the preferred agent (+200); free capacity (+50).
pub fn score(agent: &AgentSlot, task: &PendingTask) -> Option<u32> {
    let need = &task.requirements;
    let have = &agent.capabilities;
    let all = |want: &[String], got: &[String]| want.iter().all(|w| got.contains(w));
    let matching =
        |want: &[String], got: &[String]| want.iter().filter(|w| got.contains(w)).count() as u32;
    if !all(&need.repos, &have.repos) || !all(&need.languages, &have.languages) {
        return None;
    }
    if !need.environments.is_empty() && matching(&need.environments, &have.environments) == 0 {
        return None;
    }
    let mut score = 50;
    score += if need.repos.is_empty() { 0 } else { 100 };
    score += if need.languages.is_empty() { 0 } else { 50 };
    score += if need.environments.is_empty() { 0 } else { 30 };
    score += 10 * matching(&need.tools, &have.tools);
    score += 5 * matching(&need.tags, &have.tags);
    if task.preferred_agent.as_deref() == Some(agent.agent_id.as_str()) {
        score += 200;
    }
    Some(score)
}

/// Decides who takes which pending task. `reserved` are decisions made before and not yet
/// applied: they hold their agent's capacity and are not decided again.
pub fn plan(tasks: &[PendingTask], agents: &[AgentSlot], reserved: &[Decision]) -> Vec<Decision> {
    let mut agents: Vec<AgentSlot> = agents.iter().filter(|a| a.online).cloned().collect();
    for reservation in reserved {
        if let Some(agent) = agents
            .iter_mut()
            .find(|a| a.agent_id == reservation.agent_id)
        {
            agent.load += 1;
        }
    }
    let mut queue: Vec<&PendingTask> = tasks
        .iter()
        .filter(|t| {
            !reserved
                .iter()
                .any(|r| r.task_id == t.task_id && r.generation == t.generation)
        })
        .collect();
    queue.sort_by_key(|t| (Reverse(t.priority), t.created_at, t.task_id.clone()));
    let mut decisions = Vec::new();
    for task in queue {
        let best = agents
            .iter_mut()
            .filter(|a| a.user == task.user && a.load < a.max_concurrent)
            .filter_map(|a| score(a, task).map(|s| (s, a)))
            // Highest score; among equals the least loaded, then the first by id.
            .max_by(|(s1, a1), (s2, a2)| {
                s1.cmp(s2)
                    .then(a2.load.cmp(&a1.load))
                    .then(a2.agent_id.cmp(&a1.agent_id))
            });
        if let Some((_, agent)) = best {
            agent.load += 1;
            decisions.push(Decision {
                task_id: task.task_id.clone(),
                generation: task.generation,
                agent_id: agent.agent_id.clone(),
            });
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn task(id: &str, priority: Priority, created_at: u64, need: Capabilities) -> PendingTask {
        PendingTask {
            task_id: id.into(),
            user: "u1".into(),
            priority,
            created_at,
            requirements: need,
            preferred_agent: None,
            generation: 1,
        }
    }

    fn agent(id: &str, have: Capabilities, max: u32, load: u32) -> AgentSlot {
        AgentSlot {
            agent_id: id.into(),
            user: "u1".into(),
            capabilities: have,
            max_concurrent: max,
            load,
            online: true,
        }
    }

    fn pairs(decisions: &[Decision]) -> Vec<String> {
        decisions
            .iter()
            .map(|d| format!("{}->{}", d.task_id, d.agent_id))
            .collect()
    }

    #[test]
    fn hard_requirements_disqualify_and_soft_ones_rank() {
        let rust = Capabilities {
            languages: names(&["rust"]),
            tools: names(&["cargo"]),
            ..Default::default()
        };
        let go = Capabilities {
            languages: names(&["go"]),
            ..Default::default()
        };
        let need = Capabilities {
            languages: names(&["rust"]),
            tools: names(&["cargo", "clippy"]),
            ..Default::default()
        };
        let t = task("t", Priority::Normal, 0, need);
        assert_eq!(
            score(&agent("a", rust.clone(), 1, 0), &t),
            Some(50 + 50 + 10)
        );
        assert_eq!(score(&agent("b", go, 1, 0), &t), None);
        let envs = Capabilities {
            environments: names(&["gpu", "linux"]),
            ..Default::default()
        };
        let one_of = task(
            "t",
            Priority::Normal,
            0,
            Capabilities {
                environments: names(&["linux", "mac"]),
                ..Default::default()
            },
        );
        assert_eq!(score(&agent("c", envs, 1, 0), &one_of), Some(50 + 30));
        let preferred = PendingTask {
            preferred_agent: Some("a".into()),
            ..t
        };
        assert_eq!(
            score(&agent("a", rust, 1, 0), &preferred),
            Some(50 + 50 + 10 + 200)
        );
    }

    #[test]
    fn urgent_first_then_oldest_and_capacity_holds() {
        let none = Capabilities::default;
        let tasks = [
            task("old-low", Priority::Low, 1, none()),
            task("new-urgent", Priority::Urgent, 9, none()),
            task("old-normal", Priority::Normal, 2, none()),
            task("new-normal", Priority::Normal, 3, none()),
        ];
        let agents = [agent("a1", none(), 2, 1), agent("a2", none(), 1, 0)];
        assert_eq!(
            pairs(&plan(&tasks, &agents, &[])),
            ["new-urgent->a2", "old-normal->a1"]
        );
    }

    #[test]
    fn reservations_hold_capacity_and_are_not_decided_again() {
        let none = Capabilities::default;
        let tasks = [
            task("t1", Priority::Normal, 1, none()),
            task("t2", Priority::Normal, 2, none()),
        ];
        let agents = [agent("a1", none(), 1, 0), agent("a2", none(), 1, 0)];
        let reserved = [Decision {
            task_id: "t1".into(),
            generation: 1,
            agent_id: "a1".into(),
        }];
        assert_eq!(pairs(&plan(&tasks, &agents, &reserved)), ["t2->a2"]);
        let stale = [Decision {
            generation: 0,
            ..reserved[0].clone()
        }];
        assert_eq!(
            plan(&tasks, &agents, &stale).len(),
            1,
            "a stale reservation still holds a1"
        );
    }

    #[test]
    fn offline_agents_and_other_users_get_nothing() {
        let none = Capabilities::default;
        let tasks = [task("t1", Priority::Normal, 1, none())];
        let offline = AgentSlot {
            online: false,
            ..agent("a1", none(), 5, 0)
        };
        let foreign = AgentSlot {
            user: "u2".into(),
            ..agent("a2", none(), 5, 0)
        };
        assert!(plan(&tasks, &[offline, foreign], &[]).is_empty());
    }
}
