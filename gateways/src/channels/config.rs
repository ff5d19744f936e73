//! The `[channels.<name>]` tables of the node's configuration.

use serde::{Deserialize, Serialize};

pub use actors::secret::Secret;

/// One channel's settings; a channel whose secret is not set is off (its route answers 404).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Slack: the app's signing secret.
    pub signing_secret: Secret,
    /// SMS: the Twilio account's auth token.
    pub auth_token: Secret,
    /// SMS: the URL Twilio calls and signs (this route as the internet sees it).
    pub public_url: String,
    /// Discord: the application's public key, hex Ed25519.
    pub public_key: String,
    /// Telegram: the secret token given to `setWebhook`.
    pub secret_token: Secret,
    /// Email: the HMAC-SHA256 secret shared with the relay.
    pub hmac_secret: Secret,
    /// The switchyard user the channel's messages and tasks belong to.
    pub user: String,
    /// A message starting with it creates a task titled with the rest.
    pub task_prefix: String,
    /// Senders every message of whom creates a task.
    pub allow_senders: Vec<String>,
    /// Messages one sender may send a minute before 429s (0: the default, 60).
    pub per_sender_per_minute: u32,
}

/// Every channel's settings, `[channels.sms]` … `[channels.email]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Twilio SMS.
    pub sms: ChannelConfig,
    /// Slack Events API.
    pub slack: ChannelConfig,
    /// Discord interactions.
    pub discord: ChannelConfig,
    /// Telegram bot updates.
    pub telegram: ChannelConfig,
    /// An email relay.
    pub email: ChannelConfig,
}

impl ChannelsConfig {
    /// Each channel's name with its settings.
    pub fn each(&self) -> [(&'static str, &ChannelConfig); 5] {
        [
            ("sms", &self.sms),
            ("slack", &self.slack),
            ("discord", &self.discord),
            ("telegram", &self.telegram),
            ("email", &self.email),
        ]
    }

    /// What the messages of each channel that is on may become, for its conversations.
    pub fn rules(&self) -> std::collections::BTreeMap<String, actors::domain::conversation::Rules> {
        self.each()
            .into_iter()
            .filter(|(name, config)| config.is_on(name))
            .map(|(name, config)| {
                let rules = actors::domain::conversation::Rules {
                    user: config.user.clone(),
                    task_prefix: Some(config.task_prefix.clone()).filter(|p| !p.is_empty()),
                    // Email addresses arrive lowercased; the list is compared alike.
                    allow_senders: match name {
                        "email" => config
                            .allow_senders
                            .iter()
                            .map(|s| s.to_lowercase())
                            .collect(),
                        _ => config.allow_senders.clone(),
                    },
                };
                (name.to_owned(), rules)
            })
            .collect()
    }
}

impl ChannelConfig {
    /// Whether channel `name` is on: its secret is set.
    pub fn is_on(&self, name: &str) -> bool {
        match name {
            "sms" => self.auth_token.is_set(),
            "slack" => self.signing_secret.is_set(),
            "discord" => !self.public_key.is_empty(),
            "telegram" => self.secret_token.is_set(),
            "email" => self.hmac_secret.is_set(),
            _ => false,
        }
    }
}
