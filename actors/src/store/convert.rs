//! Conversions between domain values and their stored text forms.

use std::collections::BTreeMap;

use schemas::{Capabilities, CborValue, Dependency, DependencyKind, Priority};
use serde_json::{Map, Value as Json, json};

/// Capabilities as a JSON object of lists.
pub(crate) fn capabilities_to_text(caps: &Capabilities) -> String {
    json!({
        "repos": caps.repos,
        "languages": caps.languages,
        "environments": caps.environments,
        "tools": caps.tools,
        "tags": caps.tags,
    })
    .to_string()
}

/// Reads what `capabilities_to_text` wrote; missing or damaged lists read as empty.
pub(crate) fn capabilities_from_text(text: &str) -> Capabilities {
    let json: Json = serde_json::from_str(text).unwrap_or(Json::Null);
    let list = |name: &str| -> Vec<String> {
        json.get(name)
            .and_then(Json::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Capabilities {
        repos: list("repos"),
        languages: list("languages"),
        environments: list("environments"),
        tools: list("tools"),
        tags: list("tags"),
    }
}

/// The JSON form of a CBOR value: byte strings become hex text, tags are dropped.
pub fn cbor_to_json(value: &CborValue) -> Json {
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
        CborValue::Array(items) => Json::Array(items.iter().map(cbor_to_json).collect()),
        CborValue::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        CborValue::Text(t) => t.clone(),
                        other => cbor_to_json(other).to_string(),
                    };
                    (key, cbor_to_json(v))
                })
                .collect(),
        ),
        CborValue::Tag(_, inner) => cbor_to_json(inner),
        _ => Json::Null,
    }
}

/// A task result as JSON text.
pub(crate) fn result_to_text(result: &BTreeMap<String, CborValue>) -> String {
    Json::Object(
        result
            .iter()
            .map(|(k, v)| (k.clone(), cbor_to_json(v)))
            .collect::<Map<_, _>>(),
    )
    .to_string()
}

/// Reads a stored task result back (as CBOR values, through JSON).
pub(crate) fn result_from_text(text: &str) -> BTreeMap<String, CborValue> {
    serde_json::from_str(text).unwrap_or_default()
}

pub(crate) fn priority_from_text(text: &str) -> Priority {
    match text {
        "low" => Priority::Low,
        "high" => Priority::High,
        "urgent" => Priority::Urgent,
        _ => Priority::Normal,
    }
}

pub(crate) fn dependency_kind_to_text(kind: DependencyKind) -> &'static str {
    match kind {
        DependencyKind::Blocks => "blocks",
        DependencyKind::Input => "input",
        DependencyKind::Related => "related",
    }
}

pub(crate) fn dependency_from_row(
    task_id: String,
    kind: &str,
    contract_key: Option<String>,
) -> Dependency {
    let kind = match kind {
        "input" => DependencyKind::Input,
        "related" => DependencyKind::Related,
        _ => DependencyKind::Blocks,
    };
    Dependency {
        task_id,
        kind,
        contract_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_survive_storage() {
        let caps = Capabilities {
            languages: vec!["rust".into()],
            tags: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(capabilities_from_text(&capabilities_to_text(&caps)), caps);
        assert_eq!(capabilities_from_text("garbage"), Capabilities::default());
    }

    #[test]
    fn cbor_becomes_plain_json() {
        let value = CborValue::Map(BTreeMap::from([
            (
                CborValue::Text("b".into()),
                CborValue::Bytes(vec![0xab, 0x01]),
            ),
            (CborValue::Text("n".into()), CborValue::Integer(-3)),
            (CborValue::Text("f".into()), CborValue::Float(f64::NAN)),
        ]));
        assert_eq!(
            cbor_to_json(&value),
            json!({"b": "ab01", "n": -3, "f": null})
        );
    }
}
