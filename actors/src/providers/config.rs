//! The `[notifier]` table: delivery policy, and each outbound provider with its limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::notify::{Preferences, QuietHours};

use crate::secret::Secret;

/// How delivery works, and the providers that carry it (a provider left out is off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierConfig {
    /// How often the outbox looks for due notifications.
    pub poll_ms: u64,
    /// How long a sender holds a claimed notification before another may take it over.
    pub lease_ms: u64,
    /// Attempts before a notification is given up (status `failed`, dead-lettered).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each one.
    pub retry_initial_ms: u64,
    /// The longest wait between attempts.
    pub retry_max_ms: u64,
    /// How long one provider call may take.
    pub timeout_ms: u64,
    /// A JSON POST signed with an HMAC for the receiver to check.
    pub webhook: Option<WebhookConfig>,
    /// Email over SMTP.
    pub email: Option<EmailConfig>,
    /// SMS through Twilio's Messages API.
    pub sms: Option<SmsConfig>,
    /// Replies into Slack conversations (`chat.postMessage`).
    pub slack: Option<ChatConfig>,
    /// Replies into Telegram chats (`sendMessage`).
    pub telegram: Option<ChatConfig>,
    /// How each user wants to be reached (`[notifier.users.<id>]`).
    pub users: BTreeMap<String, UserConfig>,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            poll_ms: 250,
            lease_ms: 300_000,
            max_attempts: 8,
            retry_initial_ms: 1_000,
            retry_max_ms: 300_000,
            timeout_ms: 10_000,
            webhook: None,
            email: None,
            sms: None,
            slack: None,
            telegram: None,
            users: BTreeMap::new(),
        }
    }
}

/// A provider's quota and queue (`limit = { per_second = 10, burst = 1, queue = 1000 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limit {
    /// Calls per second.
    pub per_second: u32,
    /// Calls that may go at once after a quiet spell; 1 keeps every second at the quota.
    pub burst: u32,
    /// Calls that may wait; one more is refused.
    pub queue: usize,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            per_second: 10,
            burst: 1,
            queue: 1000,
        }
    }
}

/// `[notifier.webhook]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where notifications are posted.
    pub url: String,
    /// The HMAC secret the receiver checks `X-Switchyard-Signature` with.
    pub secret: Secret,
    /// The provider's limit.
    pub limit: Limit,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: only for a relay on this machine.
    None,
    /// STARTTLS on a plain connection (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[notifier.email]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// How the connection is secured.
    pub tls: SmtpTls,
    /// The login, if the server wants one.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// The `From` address.
    pub from: String,
    /// The provider's limit.
    pub limit: Limit,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            host: "127.0.0.1".into(),
            port: 587,
            tls: SmtpTls::default(),
            username: String::new(),
            password: Secret::default(),
            from: String::new(),
            limit: Limit::default(),
        }
    }
}

/// `[notifier.sms]`: Twilio's Messages API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// The API's base URL.
    pub api_url: String,
    /// The account SID (`AC…`).
    pub account_sid: String,
    /// The account's auth token.
    pub auth_token: Secret,
    /// The sending number.
    pub from: String,
    /// The provider's limit.
    pub limit: Limit,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            api_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token: Secret::default(),
            from: String::new(),
            limit: Limit::default(),
        }
    }
}

/// `[notifier.slack]` or `[notifier.telegram]`: a bot that replies into conversations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// The API's base URL; empty means the provider's own.
    pub api_url: String,
    /// The bot's token.
    pub bot_token: Secret,
    /// The provider's limit.
    pub limit: Limit,
}

/// `[notifier.users.<id>]`: one user's channels and quiet hours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// The channel a `default` notification takes (`email`, `sms`, `webhook`).
    pub default_channel: String,
    /// Their email address.
    pub email: String,
    /// Their phone number.
    pub sms: String,
    /// `HH:MM-HH:MM` in `time_zone` when nothing is sent to them (held, then sent).
    pub quiet_hours: String,
    /// An IANA zone (`Europe/Paris`); empty means UTC.
    pub time_zone: String,
}

impl NotifierConfig {
    /// Each configured user's preferences, or the first setting that does not parse.
    pub fn preferences(&self) -> Result<BTreeMap<String, Preferences>, String> {
        self.users
            .iter()
            .map(|(user, c)| {
                let quiet_hours = match c.quiet_hours.as_str() {
                    "" => None,
                    text => Some(
                        text.parse::<QuietHours>()
                            .map_err(|e| format!("notifier.users.{user}: {e}"))?,
                    ),
                };
                let time_zone = match c.time_zone.as_str() {
                    "" => chrono_tz::UTC,
                    zone => zone.parse().map_err(|_| {
                        format!("notifier.users.{user}: `{zone}` is not an IANA time zone")
                    })?,
                };
                let addresses = [("email", &c.email), ("sms", &c.sms)]
                    .into_iter()
                    .filter(|(_, a)| !a.is_empty())
                    .map(|(channel, a)| (channel.to_owned(), a.clone()))
                    .collect();
                let preferences = Preferences {
                    default_channel: Some(c.default_channel.clone()).filter(|c| !c.is_empty()),
                    addresses,
                    quiet_hours,
                    time_zone,
                };
                Ok((user.clone(), preferences))
            })
            .collect()
    }
}
