//! Replies into chat conversations: Slack's `chat.postMessage` (bearer token, JSON
//! `channel` and `text`; `ok: false` with an `error` on failure) and Telegram's
//! `sendMessage` (`/bot<token>/sendMessage`, JSON `chat_id` and `text`).

use futures::future::BoxFuture;

use super::config::ChatConfig;
use super::{Outgoing, Provider, SendError, http_outcome};
use crate::secret::Secret;

/// A Slack bot.
pub struct Slack {
    url: String,
    token: Secret,
    http: reqwest::Client,
}

impl Slack {
    /// A bot posting as `config` says.
    pub fn new(config: &ChatConfig, http: reqwest::Client) -> Slack {
        let base = api_url(config, "https://slack.com/api");
        Slack {
            url: format!("{base}/chat.postMessage"),
            token: config.bot_token.clone(),
            http,
        }
    }
}

impl Provider for Slack {
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(async move {
            let sent = self
                .http
                .post(&self.url)
                .bearer_auth(self.token.expose())
                .json(&serde_json::json!({"channel": message.to, "text": message.text}))
                .send()
                .await;
            let answer = json_answer("slack", sent).await?;
            if answer["ok"].as_bool() != Some(true) {
                let error = answer["error"].as_str().unwrap_or("no error given");
                let reason = format!("slack refused the message: {error}");
                return Err(if error == "ratelimited" {
                    SendError::Transient(reason)
                } else {
                    SendError::Permanent(reason)
                });
            }
            Ok(answer["ts"].as_str().unwrap_or_default().to_owned())
        })
    }
}

/// A Telegram bot.
pub struct Telegram {
    url: String,
    http: reqwest::Client,
}

impl Telegram {
    /// A bot posting as `config` says.
    pub fn new(config: &ChatConfig, http: reqwest::Client) -> Telegram {
        let base = api_url(config, "https://api.telegram.org");
        Telegram {
            url: format!("{base}/bot{}/sendMessage", config.bot_token.expose()),
            http,
        }
    }
}

impl Provider for Telegram {
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(async move {
            let sent = self
                .http
                .post(&self.url)
                .json(&serde_json::json!({"chat_id": message.to, "text": message.text}))
                .send()
                .await
                // The URL holds the token: keep it out of the error.
                .map_err(|e| e.without_url());
            let answer = json_answer("telegram", sent).await?;
            Ok(answer["result"]["message_id"].to_string())
        })
    }
}

fn api_url(config: &ChatConfig, default: &str) -> String {
    let url = if config.api_url.is_empty() {
        default
    } else {
        &config.api_url
    };
    url.trim_end_matches('/').to_owned()
}

async fn json_answer(
    provider: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<serde_json::Value, SendError> {
    let body = http_outcome(provider, sent).await?;
    serde_json::from_str(&body)
        .map_err(|e| SendError::Transient(format!("{provider} answered something not JSON: {e}")))
}
