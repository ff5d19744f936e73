//! A notification as a JSON POST, signed for the receiver with `X-Switchyard-Signature`.

use futures::future::BoxFuture;

use super::config::WebhookConfig;
use super::{Outgoing, Provider, SendError, http_outcome};
use crate::secret::Secret;
use crate::signature;

/// The header carrying the notification's deduplication key, the same on every attempt.
pub const DELIVERY_HEADER: &str = "X-Switchyard-Delivery";

/// Posts to one URL.
pub struct Webhook {
    url: String,
    secret: Secret,
    http: reqwest::Client,
}

impl Webhook {
    /// A webhook posting as `config` says.
    pub fn new(config: &WebhookConfig, http: reqwest::Client) -> Webhook {
        Webhook {
            url: config.url.clone(),
            secret: config.secret.clone(),
            http,
        }
    }
}

impl Provider for Webhook {
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&serde_json::json!({
                "user": message.user,
                "to": message.to,
                "subject": message.subject,
                "text": message.text,
                "dedupe_key": message.dedupe_key,
            }))
            .map_err(|e| SendError::Permanent(format!("encoding the webhook body: {e}")))?;
            let sent = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header(
                    signature::HEADER,
                    signature::sign(self.secret.expose(), &body),
                )
                .header(DELIVERY_HEADER, &message.dedupe_key)
                .body(body)
                .send()
                .await;
            http_outcome("webhook", sent).await?;
            Ok(message.dedupe_key.clone())
        })
    }
}
