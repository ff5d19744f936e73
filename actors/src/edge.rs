//! The edge between the wire and the domain: a decoded message becomes a domain command for
//! the entity its key names, and a domain command becomes the message that carries it.

use std::collections::BTreeMap;

use schemas::{CborValue, Envelope, Message};
use serde_json::Value as Json;

use crate::domain::task::{self, NewTask, NotificationDraft};
use crate::domain::{
    Capabilities, Dependency, DependencyKind, DependencyState, Map, Priority, agent, conversation,
};

/// A wire message as the command of the entity it is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// A command for task `task_id`.
    Task(String, task::Command),
    /// A command for agent `agent_id`.
    Agent(String, agent::Command),
    /// A notification to record.
    Notify(NotificationDraft),
    /// A message received in conversation `key` (`conversation/<channel>/<id>`).
    Conversation(conversation::Inbound),
    /// A message of calendar `calendar_id`, read by its mailbox as it is.
    Calendar(String),
    /// A message of `user`'s cost ledger, read by its mailbox as it is.
    Costs(String),
    /// A message of automation `automation_id`, read by the automations actor as it is.
    Automation(String),
}

/// The domain command `envelope` carries.
pub fn command(envelope: &Envelope) -> Routed {
    use task::Command as T;
    let task = |id: &str, command| Routed::Task(id.to_owned(), command);
    match &envelope.message {
        Message::AgentRegistered(m) => Routed::Agent(
            m.agent_id.clone(),
            agent::Command::Register {
                agent_id: m.agent_id.clone(),
                name: m.name.clone(),
                capabilities: capabilities(&m.capabilities),
                max_concurrent: m.max_concurrent,
            },
        ),
        Message::AgentHeartbeat(m) => Routed::Agent(m.agent_id.clone(), agent::Command::Heartbeat),
        Message::AgentOffline(m) => Routed::Agent(
            m.agent_id.clone(),
            agent::Command::GoOffline {
                reason: m.reason.clone(),
            },
        ),
        Message::NotificationRequested(m) => Routed::Notify(NotificationDraft {
            user: envelope.user.clone(),
            channel: m.channel.clone(),
            to: m.to.clone(),
            subject: m.subject.clone(),
            text: m.text.clone(),
            // Scoped to its user, so no one else's key can silence it.
            dedupe_key: format!(
                "{}:{}",
                envelope.user,
                m.dedupe_key.as_deref().unwrap_or(&envelope.id)
            ),
            task_id: None,
        }),
        Message::TaskCreated(m) => task(&m.task_id, T::Create(new_task(m))),
        Message::TaskAssigned(m) => task(
            &m.task_id,
            T::Assign {
                agent_id: m.agent_id.clone(),
            },
        ),
        Message::TaskStarted(m) => task(
            &m.task_id,
            T::Start {
                agent_id: m.agent_id.clone(),
            },
        ),
        Message::TaskPlanSubmitted(m) => task(
            &m.task_id,
            T::SubmitPlan {
                agent_id: m.agent_id.clone(),
                plan: m.plan.clone(),
            },
        ),
        Message::TaskPlanApproved(m) => task(&m.task_id, T::ApprovePlan),
        Message::TaskPlanRejected(m) => task(
            &m.task_id,
            T::RejectPlan {
                feedback: m.feedback.clone(),
            },
        ),
        Message::TaskHelpRequested(m) => task(
            &m.task_id,
            T::RequestHelp {
                agent_id: m.agent_id.clone(),
                question: m.question.clone(),
            },
        ),
        Message::TaskAnswered(m) => task(
            &m.task_id,
            T::Answer {
                answer: m.answer.clone(),
            },
        ),
        Message::TaskReviewRequested(m) => task(
            &m.task_id,
            T::RequestReview {
                agent_id: m.agent_id.clone(),
                result: map_from_wire(&m.result),
            },
        ),
        Message::TaskApproved(m) => task(&m.task_id, T::Approve),
        Message::TaskRevisionRequested(m) => task(
            &m.task_id,
            T::RequestRevision {
                feedback: m.feedback.clone(),
            },
        ),
        Message::TaskCompleted(m) => task(
            &m.task_id,
            T::Complete {
                agent_id: m.agent_id.clone(),
                result: map_from_wire(&m.result),
            },
        ),
        Message::TaskFailed(m) => task(
            &m.task_id,
            T::Fail {
                agent_id: m.agent_id.clone(),
                error: m.error.clone(),
            },
        ),
        Message::TaskCancelled(m) => task(
            &m.task_id,
            T::Cancel {
                reason: m.reason.clone(),
            },
        ),
        Message::TaskRetried(m) => task(&m.task_id, T::Retry),
        Message::TaskRequeued(m) => task(
            &m.task_id,
            T::Requeue {
                agent_id: m.agent_id.clone(),
                reason: m.reason.clone(),
            },
        ),
        Message::TaskDependencyAdded(m) => {
            task(&m.task_id, T::AddDependency(dependency(&m.dependency)))
        }
        Message::TaskDependencyResolved(m) => task(
            &m.task_id,
            T::ResolveDependency {
                upstream: m.upstream.clone(),
                value: m.value.as_ref().map(value_from_wire),
            },
        ),
        Message::TaskDependencyFailed(m) => task(
            &m.task_id,
            T::FailDependency {
                upstream: m.upstream.clone(),
                reason: m.reason.clone(),
            },
        ),
        Message::TaskOutput(m) => task(
            &m.task_id,
            T::Output {
                agent_id: m.agent_id.clone(),
                lines: m.lines.clone(),
            },
        ),
        Message::CalendarBookRequested(m) => Routed::Calendar(m.calendar_id.clone()),
        Message::CalendarBooked(m) => Routed::Calendar(m.calendar_id.clone()),
        Message::CalendarConflict(m) => Routed::Calendar(m.calendar_id.clone()),
        Message::AutomationDefined(m) => Routed::Automation(m.automation_id.clone()),
        Message::AutomationRunRequested(m) => Routed::Automation(m.automation_id.clone()),
        Message::InvocationRecorded(_) | Message::BudgetSet(_) => {
            Routed::Costs(envelope.user.clone())
        }
        Message::MessageReceived(m) => Routed::Conversation(conversation::Inbound {
            channel: m.channel.clone(),
            conversation: m.conversation.clone(),
            sender: m.sender.clone(),
            text: m.text.clone(),
            received: m.received,
        }),
    }
}

/// The message that carries `command` for task `task_id`.
pub fn task_message(task_id: &str, command: &task::Command) -> Message {
    use task::Command as T;
    let task_id = task_id.to_owned();
    match command.clone() {
        T::Create(new) => Message::TaskCreated(schemas::TaskCreated {
            task_id,
            title: new.title,
            spec: new.spec,
            priority: priority_to_wire(new.priority),
            requirements: capabilities_to_wire(&new.requirements),
            depends_on: new.dependencies.iter().map(dependency_to_wire).collect(),
            contracts: new.contracts,
            require_plan_approval: new.require_plan_approval,
            max_attempts: new.max_attempts,
            preferred_agent: new.preferred_agent,
        }),
        T::Assign { agent_id } => {
            Message::TaskAssigned(schemas::TaskAssigned { task_id, agent_id })
        }
        T::Start { agent_id } => Message::TaskStarted(schemas::TaskStarted { task_id, agent_id }),
        T::SubmitPlan { agent_id, plan } => {
            Message::TaskPlanSubmitted(schemas::TaskPlanSubmitted {
                task_id,
                agent_id,
                plan,
            })
        }
        T::ApprovePlan => Message::TaskPlanApproved(schemas::TaskPlanApproved { task_id }),
        T::RejectPlan { feedback } => {
            Message::TaskPlanRejected(schemas::TaskPlanRejected { task_id, feedback })
        }
        T::RequestHelp { agent_id, question } => {
            Message::TaskHelpRequested(schemas::TaskHelpRequested {
                task_id,
                agent_id,
                question,
            })
        }
        T::Answer { answer } => Message::TaskAnswered(schemas::TaskAnswered { task_id, answer }),
        T::RequestReview { agent_id, result } => {
            Message::TaskReviewRequested(schemas::TaskReviewRequested {
                task_id,
                agent_id,
                result: map_to_wire(&result),
            })
        }
        T::Approve => Message::TaskApproved(schemas::TaskApproved { task_id }),
        T::RequestRevision { feedback } => {
            Message::TaskRevisionRequested(schemas::TaskRevisionRequested { task_id, feedback })
        }
        T::Complete { agent_id, result } => Message::TaskCompleted(schemas::TaskCompleted {
            task_id,
            result: map_to_wire(&result),
            agent_id,
        }),
        T::Fail { agent_id, error } => Message::TaskFailed(schemas::TaskFailed {
            task_id,
            error,
            agent_id,
        }),
        T::Cancel { reason } => Message::TaskCancelled(schemas::TaskCancelled { task_id, reason }),
        T::Retry => Message::TaskRetried(schemas::TaskRetried { task_id }),
        T::Requeue { agent_id, reason } => Message::TaskRequeued(schemas::TaskRequeued {
            task_id,
            agent_id,
            reason,
        }),
        T::AddDependency(d) => Message::TaskDependencyAdded(schemas::TaskDependencyAdded {
            task_id,
            dependency: dependency_to_wire(&d),
        }),
        T::ResolveDependency { upstream, value } => {
            Message::TaskDependencyResolved(schemas::TaskDependencyResolved {
                task_id,
                upstream,
                value: value.as_ref().map(value_to_wire),
            })
        }
        T::FailDependency { upstream, reason } => {
            Message::TaskDependencyFailed(schemas::TaskDependencyFailed {
                task_id,
                upstream,
                reason,
            })
        }
        T::Output { agent_id, lines } => Message::TaskOutput(schemas::TaskOutput {
            task_id,
            agent_id,
            lines,
        }),
    }
}

/// The domain form of a `task.created` body.
pub fn new_task(m: &schemas::TaskCreated) -> NewTask {
    NewTask {
        task_id: m.task_id.clone(),
        title: m.title.clone(),
        spec: m.spec.clone(),
        priority: Priority::parse(m.priority.as_str()).unwrap_or_default(),
        requirements: capabilities(&m.requirements),
        dependencies: m.depends_on.iter().map(dependency).collect(),
        contracts: m.contracts.clone(),
        require_plan_approval: m.require_plan_approval,
        preferred_agent: m.preferred_agent.clone(),
        max_attempts: m.max_attempts,
    }
}

/// The domain form of wire capabilities.
pub fn capabilities(c: &schemas::Capabilities) -> Capabilities {
    Capabilities {
        repos: c.repos.clone(),
        languages: c.languages.clone(),
        environments: c.environments.clone(),
        tools: c.tools.clone(),
        tags: c.tags.clone(),
    }
}

/// The wire form of domain capabilities.
pub fn capabilities_to_wire(c: &Capabilities) -> schemas::Capabilities {
    schemas::Capabilities {
        repos: c.repos.clone(),
        languages: c.languages.clone(),
        environments: c.environments.clone(),
        tools: c.tools.clone(),
        tags: c.tags.clone(),
    }
}

/// The wire form of a priority.
pub fn priority_to_wire(p: Priority) -> schemas::Priority {
    match p {
        Priority::Low => schemas::Priority::Low,
        Priority::Normal => schemas::Priority::Normal,
        Priority::High => schemas::Priority::High,
        Priority::Urgent => schemas::Priority::Urgent,
    }
}

/// The domain form of a wire dependency (waiting).
pub fn dependency(d: &schemas::Dependency) -> Dependency {
    Dependency {
        upstream: d.task_id.clone(),
        kind: match d.kind {
            schemas::DependencyKind::Blocks => DependencyKind::Blocks,
            schemas::DependencyKind::Input => DependencyKind::Input,
            schemas::DependencyKind::Related => DependencyKind::Related,
        },
        contract_key: d.contract_key.clone(),
        state: DependencyState::Waiting,
    }
}

/// The wire form of a dependency.
pub fn dependency_to_wire(d: &Dependency) -> schemas::Dependency {
    schemas::Dependency {
        task_id: d.upstream.clone(),
        kind: match d.kind {
            DependencyKind::Blocks => schemas::DependencyKind::Blocks,
            DependencyKind::Input => schemas::DependencyKind::Input,
            DependencyKind::Related => schemas::DependencyKind::Related,
        },
        contract_key: d.contract_key.clone(),
    }
}

/// A wire result map as domain values.
pub fn map_from_wire(map: &BTreeMap<String, CborValue>) -> Map {
    map.iter()
        .map(|(k, v)| (k.clone(), value_from_wire(v)))
        .collect()
}

/// A domain map as wire values.
pub fn map_to_wire(map: &Map) -> BTreeMap<String, CborValue> {
    map.iter()
        .map(|(k, v)| (k.clone(), value_to_wire(v)))
        .collect()
}

/// The domain form of a CBOR value: byte strings become hex text, tags are dropped.
pub fn value_from_wire(value: &CborValue) -> Json {
    match value {
        CborValue::Null => Json::Null,
        CborValue::Bool(b) => Json::Bool(*b),
        CborValue::Integer(i) => i64::try_from(*i)
            .map(Json::from)
            .or_else(|_| u64::try_from(*i).map(Json::from))
            .unwrap_or_else(|_| Json::String(i.to_string())),
        CborValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        CborValue::Bytes(b) => Json::String(hex::encode(b)),
        CborValue::Text(t) => Json::String(t.clone()),
        CborValue::Array(items) => Json::Array(items.iter().map(value_from_wire).collect()),
        CborValue::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        CborValue::Text(t) => t.clone(),
                        other => value_from_wire(other).to_string(),
                    };
                    (key, value_from_wire(v))
                })
                .collect(),
        ),
        CborValue::Tag(_, inner) => value_from_wire(inner),
        _ => Json::Null,
    }
}

/// The CBOR form of a domain value.
pub fn value_to_wire(value: &Json) -> CborValue {
    match value {
        Json::Null => CborValue::Null,
        Json::Bool(b) => CborValue::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CborValue::Integer(i.into()),
            (None, Some(u)) => CborValue::Integer(u.into()),
            _ => CborValue::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => CborValue::Text(s.clone()),
        Json::Array(items) => CborValue::Array(items.iter().map(value_to_wire).collect()),
        Json::Object(map) => CborValue::Map(
            map.iter()
                .map(|(k, v)| (CborValue::Text(k.clone()), value_to_wire(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cbor_becomes_plain_json_and_back() {
        let value = CborValue::Map(BTreeMap::from([
            (
                CborValue::Text("b".into()),
                CborValue::Bytes(vec![0xab, 0x01]),
            ),
            (CborValue::Text("n".into()), CborValue::Integer(-3)),
            (CborValue::Text("f".into()), CborValue::Float(f64::NAN)),
        ]));
        assert_eq!(
            value_from_wire(&value),
            json!({"b": "ab01", "n": -3, "f": null})
        );
        let plain = json!({"a": [1, 2.5, "x", true, null], "big": u64::MAX});
        assert_eq!(value_from_wire(&value_to_wire(&plain)), plain);
    }

    #[test]
    fn every_task_command_survives_the_wire() {
        let commands = [
            task::Command::Start {
                agent_id: "a".into(),
            },
            task::Command::Cancel {
                reason: Some("no".into()),
            },
            task::Command::Complete {
                agent_id: Some("a".into()),
                result: Map::from([("k".into(), json!({"x": 1}))]),
            },
            task::Command::Fail {
                agent_id: None,
                error: "e".into(),
            },
            task::Command::ResolveDependency {
                upstream: "u".into(),
                value: Some(json!("v")),
            },
            task::Command::Output {
                agent_id: "a".into(),
                lines: vec!["l".into()],
            },
        ];
        for command in commands {
            let envelope = Envelope::new("m", "s", 1, "u1", task_message("t1", &command));
            assert_eq!(
                super::command(&envelope),
                Routed::Task("t1".into(), command)
            );
        }
    }
}
