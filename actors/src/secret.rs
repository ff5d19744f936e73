//! Secret settings: read from the configuration, never shown in logs or debug output.

use serde::{Deserialize, Serialize};

/// A secret setting: read from the file or a variable, never shown in logs or debug output.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl<'de> Deserialize<'de> for Secret {
    /// Text, or what a variable's value reads as when it looks like a number or a boolean
    /// (a token of digits): taken as its text, so no error message ever shows the value.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            Text(String),
            Unsigned(u64),
            Signed(i64),
            Float(f64),
            Flag(bool),
        }
        Ok(Secret(match Any::deserialize(deserializer) {
            Ok(Any::Text(s)) => s,
            Ok(Any::Unsigned(n)) => n.to_string(),
            Ok(Any::Signed(n)) => n.to_string(),
            Ok(Any::Float(n)) => n.to_string(),
            Ok(Any::Flag(b)) => b.to_string(),
            Err(_) => return Err(serde::de::Error::custom("a secret must be text")),
        }))
    }
}

impl Secret {
    /// The secret's text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() { "\"***\"" } else { "\"\"" })
    }
}
