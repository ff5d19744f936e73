//! The outbound providers notifications are delivered through, each called as its API
//! documents: a signed webhook, SMTP, Twilio's Messages API, Slack's `chat.postMessage`,
//! Telegram's `sendMessage`. Every call goes through the provider's mailbox
//! (`shells::provider`), which holds its rate limit.

pub mod caldav;
pub mod chat;
pub mod config;
pub mod email;
pub mod sms;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use config::{Limit, NotifierConfig};

/// One notification on its way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Whose notification it is.
    pub user: String,
    /// The recipient, in the provider's terms (an address, a number, a chat).
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Message text.
    pub text: String,
    /// The notification's deduplication key: the same for every attempt, so a receiver can
    /// tell a retry from a new notification.
    pub dedupe_key: String,
}

/// Why a provider did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: unreachable, overloaded, rate limited, a 5xx.
    #[error("{0}")]
    Transient(String),
    /// Trying again would fail the same way: a refused recipient or credentials, a 4xx.
    #[error("{0}")]
    Permanent(String),
}

/// An outbound provider: sends one message, answering the provider's reference for it.
pub trait Provider: Send + Sync + 'static {
    /// Sends `message`.
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<String, SendError>>;
}

/// A provider and the limit its mailbox holds it to.
pub type Limited = (Arc<dyn Provider>, Limit);

/// The providers `config` sets up, by channel name, each with its limit.
pub fn from_config(config: &NotifierConfig) -> Result<BTreeMap<String, Limited>, String> {
    let http = http_client(config.timeout_ms)?;
    let mut providers: BTreeMap<String, Limited> = BTreeMap::new();
    if let Some(c) = &config.webhook {
        let provider = webhook::Webhook::new(c, http.clone());
        providers.insert("webhook".into(), (Arc::new(provider), c.limit));
    }
    if let Some(c) = &config.email {
        let provider = email::Email::new(c, config.timeout_ms)?;
        providers.insert("email".into(), (Arc::new(provider), c.limit));
    }
    if let Some(c) = &config.sms {
        let provider = sms::Twilio::new(c, http.clone());
        providers.insert("sms".into(), (Arc::new(provider), c.limit));
    }
    if let Some(c) = &config.slack {
        let provider = chat::Slack::new(c, http.clone());
        providers.insert("slack".into(), (Arc::new(provider), c.limit));
    }
    if let Some(c) = &config.telegram {
        let provider = chat::Telegram::new(c, http);
        providers.insert("telegram".into(), (Arc::new(provider), c.limit));
    }
    Ok(providers)
}

/// The HTTP client providers call through, each call at most `timeout_ms`.
pub fn http_client(timeout_ms: u64) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(timeout_ms.max(1)))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// What an HTTP provider's answer means: the body on a 2xx, else a transient (429, 5xx) or
/// permanent (any other) error naming the provider and status.
async fn http_outcome(
    provider: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<String, SendError> {
    let response = sent.map_err(|e| SendError::Transient(format!("{provider}: {e}")))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    Err(refusal(provider, status, &body))
}

/// What a provider's non-2xx answer means: worth trying again for 429, 5xx, and 401 / 403
/// (credentials may be put right meanwhile); any other 4xx would fail the same way again.
pub(crate) fn refusal(provider: &str, status: reqwest::StatusCode, body: &str) -> SendError {
    let reason = format!("{provider} answered {status}: {}", excerpt(body));
    match status.as_u16() {
        401 | 403 | 429 | 500..=599 => SendError::Transient(reason),
        _ => SendError::Permanent(reason),
    }
}

/// At most 200 characters of `text`, for an error message.
pub(crate) fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
