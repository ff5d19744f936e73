//! Conversions between domain values and their stored text forms.

use serde_json::{Value as Json, json};

use crate::domain::{Capabilities, DependencyState, Map};

/// Capabilities as a JSON object of lists, keys in alphabetical order.
pub(crate) fn capabilities_to_text(caps: &Capabilities) -> String {
    // Written straight from the lists: through a `json!` value each task's row built a map
    // and a copy of every name first. The keys are in the order that value wrote them.
    #[derive(serde::Serialize)]
    struct Text<'a> {
        environments: &'a [String],
        languages: &'a [String],
        repos: &'a [String],
        tags: &'a [String],
        tools: &'a [String],
    }
    let text = Text {
        environments: &caps.environments,
        languages: &caps.languages,
        repos: &caps.repos,
        tags: &caps.tags,
        tools: &caps.tools,
    };
    serde_json::to_string(&text).unwrap_or_default()
}

/// Reads what `capabilities_to_text` wrote; missing or damaged lists read as empty.
pub(crate) fn capabilities_from_text(text: &str) -> Capabilities {
    let json: Json = serde_json::from_str(text).unwrap_or(Json::Null);
    let list = |name: &str| list_from_json(json.get(name));
    Capabilities {
        repos: list("repos"),
        languages: list("languages"),
        environments: list("environments"),
        tools: list("tools"),
        tags: list("tags"),
    }
}

fn list_from_json(json: Option<&Json>) -> Vec<String> {
    json.and_then(Json::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A list of names as JSON text.
pub(crate) fn list_to_text(list: &[String]) -> String {
    json!(list).to_string()
}

/// Reads what `list_to_text` wrote.
pub(crate) fn list_from_text(text: &str) -> Vec<String> {
    list_from_json(serde_json::from_str::<Json>(text).ok().as_ref())
}

/// A map of values as JSON text.
pub(crate) fn map_to_text(map: &Map) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

/// Reads what `map_to_text` wrote; damaged text reads as empty.
pub(crate) fn map_from_text(text: &str) -> Map {
    serde_json::from_str(text).unwrap_or_default()
}

/// A dependency's state as its stored name and reason.
pub(crate) fn dependency_state_to_text(state: &DependencyState) -> (&'static str, Option<String>) {
    match state {
        DependencyState::Waiting => ("waiting", None),
        DependencyState::Resolved => ("resolved", None),
        DependencyState::Failed(reason) => ("failed", Some(reason.clone())),
    }
}

/// Reads what `dependency_state_to_text` wrote.
pub(crate) fn dependency_state_from_text(state: &str, reason: Option<String>) -> DependencyState {
    match state {
        "resolved" => DependencyState::Resolved,
        "failed" => DependencyState::Failed(reason.unwrap_or_default()),
        _ => DependencyState::Waiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_storage() {
        let caps = Capabilities {
            languages: vec!["rust".into()],
            tags: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(capabilities_from_text(&capabilities_to_text(&caps)), caps);
        // The stored form, which digests of earlier databases were taken over.
        assert_eq!(
            capabilities_to_text(&caps),
            r#"{"environments":[],"languages":["rust"],"repos":[],"tags":["x"],"tools":[]}"#
        );
        assert_eq!(capabilities_from_text("garbage"), Capabilities::default());
        let map = Map::from([("k".into(), json!([1, {"a": null}]))]);
        assert_eq!(map_from_text(&map_to_text(&map)), map);
        assert_eq!(list_from_text(&list_to_text(&["a".into()])), ["a"]);
        let failed = DependencyState::Failed("why".into());
        let (name, reason) = dependency_state_to_text(&failed);
        assert_eq!(dependency_state_from_text(name, reason), failed);
    }
}
