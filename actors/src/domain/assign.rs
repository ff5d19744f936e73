//! Assignment, first fit: each pending task, in priority order, goes to the first eligible
//! agent with free capacity. Scoring replaces first fit later; the shape stays.

use schemas::Capabilities;

/// A task waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTask {
    /// The task.
    pub task_id: String,
    /// Its owner; only the owner's agents may take it.
    pub user: String,
    /// What an agent must offer.
    pub requirements: Capabilities,
}

/// An agent that could take work, with how much it already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The agent.
    pub agent_id: String,
    /// Its owner.
    pub user: String,
    /// What it offers.
    pub capabilities: Capabilities,
    /// Tasks it works on at once, at most.
    pub max_concurrent: u32,
    /// Tasks it works on now.
    pub load: u32,
}

/// Whether `offer` covers every requirement in `need` (all lists are hard requirements).
pub fn satisfies(offer: &Capabilities, need: &Capabilities) -> bool {
    let covers = |have: &[String], want: &[String]| want.iter().all(|w| have.contains(w));
    covers(&offer.repos, &need.repos)
        && covers(&offer.languages, &need.languages)
        && covers(&offer.environments, &need.environments)
        && covers(&offer.tools, &need.tools)
        && covers(&offer.tags, &need.tags)
}

/// Pairs tasks (already in priority order) with agents; agents of the task's own user only.
pub fn first_fit(tasks: &[PendingTask], agents: &mut [Candidate]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for task in tasks {
        let chosen = agents.iter_mut().find(|a| {
            a.user == task.user
                && a.load < a.max_concurrent
                && satisfies(&a.capabilities, &task.requirements)
        });
        if let Some(agent) = chosen {
            agent.load += 1;
            pairs.push((task.task_id.clone(), agent.agent_id.clone()));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, languages: &[&str]) -> PendingTask {
        PendingTask {
            task_id: id.into(),
            user: "u1".into(),
            requirements: Capabilities {
                languages: languages.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        }
    }

    fn agent(id: &str, languages: &[&str], max: u32, load: u32) -> Candidate {
        Candidate {
            agent_id: id.into(),
            user: "u1".into(),
            capabilities: Capabilities {
                languages: languages.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            max_concurrent: max,
            load,
        }
    }

    #[test]
    fn fills_capacity_in_order_and_respects_requirements() {
        let tasks = [
            task("t1", &[]),
            task("t2", &["go"]),
            task("t3", &[]),
            task("t4", &[]),
        ];
        let mut agents = [
            agent("a1", &["rust"], 2, 1),
            agent("a2", &["go", "rust"], 2, 0),
        ];
        let pairs = first_fit(&tasks, &mut agents);
        let pairs: Vec<_> = pairs.iter().map(|(t, a)| format!("{t}->{a}")).collect();
        assert_eq!(pairs, ["t1->a1", "t2->a2", "t3->a2"]);
    }

    #[test]
    fn never_crosses_users() {
        let mut agents = [Candidate {
            user: "u2".into(),
            ..agent("a1", &[], 5, 0)
        }];
        assert!(first_fit(&[task("t1", &[])], &mut agents).is_empty());
    }
}
