//! Between protobuf messages and domain values.

use actors::domain::agent::Agent;
use actors::domain::task::{NewTask, Task};
use actors::domain::{
    Capabilities, Dependency, DependencyKind, DependencyState, Map, Priority, Value,
};
use prost_types::value::Kind;
use schemas::proto;

use crate::GatewayError;

/// A domain map as a protobuf Struct.
pub fn to_struct(map: &Map) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A protobuf Struct as a domain map; whole numbers become integers.
pub fn from_struct(s: &prost_types::Struct) -> Map {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), from_value(v)))
        .collect()
}

fn from_value(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            Value::from(*n as i64)
        }
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_value(v)))
                .collect(),
        ),
    }
}

pub(crate) fn capabilities(c: Option<&proto::Capabilities>) -> Capabilities {
    let Some(c) = c else {
        return Capabilities::default();
    };
    Capabilities {
        repos: c.repos.clone(),
        languages: c.languages.clone(),
        environments: c.environments.clone(),
        tools: c.tools.clone(),
        tags: c.tags.clone(),
    }
}

fn capabilities_to_proto(c: &Capabilities) -> proto::Capabilities {
    proto::Capabilities {
        repos: c.repos.clone(),
        languages: c.languages.clone(),
        environments: c.environments.clone(),
        tools: c.tools.clone(),
        tags: c.tags.clone(),
    }
}

/// A requested dependency, checked.
pub(crate) fn dependency(d: &proto::Dependency) -> Result<Dependency, GatewayError> {
    let kind = DependencyKind::parse(&d.r#type).ok_or_else(|| {
        GatewayError::BadRequest(format!(
            "dependency on `{}`: unknown type `{}` (blocks, input, related)",
            d.task_id, d.r#type
        ))
    })?;
    if d.task_id.is_empty() {
        return Err(GatewayError::BadRequest(
            "a dependency needs the upstream task_id".into(),
        ));
    }
    Ok(Dependency {
        upstream: d.task_id.clone(),
        kind,
        contract_key: Some(d.contract_key.clone()).filter(|k| !k.is_empty()),
        state: DependencyState::Waiting,
    })
}

/// A create request as a new task, checked.
pub(crate) fn new_task(r: &proto::CreateTaskRequest) -> Result<NewTask, GatewayError> {
    if r.task_id.is_empty() || r.task_id.len() > schemas::MAX_ID_BYTES {
        return Err(GatewayError::BadRequest(format!(
            "task_id must be 1 to {} bytes",
            schemas::MAX_ID_BYTES
        )));
    }
    let priority = match r.priority.as_str() {
        "" => Priority::Normal,
        name => Priority::parse(name).ok_or_else(|| {
            GatewayError::BadRequest(format!(
                "unknown priority `{name}` (low, normal, high, urgent)"
            ))
        })?,
    };
    Ok(NewTask {
        task_id: r.task_id.clone(),
        title: r.title.clone(),
        spec: r.spec.clone(),
        priority,
        requirements: capabilities(r.requirements.as_ref()),
        dependencies: r
            .depends_on
            .iter()
            .map(dependency)
            .collect::<Result<_, _>>()?,
        contracts: r.contracts.clone(),
        require_plan_approval: r.require_plan_approval,
        preferred_agent: r.preferred_agent.clone().filter(|a| !a.is_empty()),
        max_attempts: r.max_attempts,
    })
}

/// A task as the API shows it.
pub(crate) fn task(task: Task) -> proto::Task {
    let text = |o: Option<String>| o.unwrap_or_default();
    proto::Task {
        result_json: task
            .result
            .as_ref()
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .unwrap_or_default(),
        result: task.result.as_ref().map(to_struct),
        inputs: Some(to_struct(&task.inputs)),
        dependencies: task
            .dependencies
            .iter()
            .map(|d| {
                let (state, reason) = match &d.state {
                    DependencyState::Waiting => ("waiting", String::new()),
                    DependencyState::Resolved => ("resolved", String::new()),
                    DependencyState::Failed(reason) => ("failed", reason.clone()),
                };
                proto::Dependency {
                    task_id: d.upstream.clone(),
                    r#type: d.kind.as_str().to_owned(),
                    contract_key: d.contract_key.clone().unwrap_or_default(),
                    state: state.to_owned(),
                    reason,
                }
            })
            .collect(),
        requirements: Some(capabilities_to_proto(&task.requirements)),
        state: task.state.as_str().to_owned(),
        priority: task.priority.as_str().to_owned(),
        agent_id: text(task.agent_id),
        error: text(task.error),
        blocked_reason: text(task.blocked_reason),
        note: text(task.note),
        preferred_agent: text(task.preferred_agent),
        contracts: task.contracts,
        attempts: task.attempts,
        max_attempts: task.max_attempts,
        require_plan_approval: task.require_plan_approval,
        generation: task.generation,
        created_at: task.created_at,
        updated_at: task.updated_at,
        task_id: task.task_id,
        title: task.title,
        spec: task.spec,
        user: task.user,
    }
}

/// An agent as the API shows it.
pub(crate) fn agent(agent: Agent) -> proto::Agent {
    proto::Agent {
        capabilities: Some(capabilities_to_proto(&agent.capabilities)),
        max_concurrent: agent.max_concurrent,
        online: agent.online,
        last_heartbeat: agent.last_heartbeat,
        registered_at: agent.registered_at,
        agent_id: agent.agent_id,
        user: agent.user,
        name: agent.name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structs_carry_plain_values_both_ways() {
        let map: Map = serde_json::from_value(
            json!({"n": 3, "f": 1.5, "s": "x", "l": [true, null], "o": {"k": "v"}}),
        )
        .unwrap();
        assert_eq!(from_struct(&to_struct(&map)), map);
    }
}
