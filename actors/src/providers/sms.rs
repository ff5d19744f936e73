//! SMS through Twilio's Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with HTTP basic auth (account SID, auth token) and the form fields `To`, `From`, `Body`;
//! a 201 answers the message's `sid`.

use futures::future::BoxFuture;

use super::config::SmsConfig;
use super::{Outgoing, Provider, SendError, http_outcome};
use crate::secret::Secret;

/// One Twilio account's sender.
pub struct Twilio {
    url: String,
    account_sid: String,
    auth_token: Secret,
    from: String,
    http: reqwest::Client,
}

impl Twilio {
    /// A sender for the account `config` names.
    pub fn new(config: &SmsConfig, http: reqwest::Client) -> Twilio {
        Twilio {
            url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                config.api_url.trim_end_matches('/'),
                config.account_sid
            ),
            account_sid: config.account_sid.clone(),
            auth_token: config.auth_token.clone(),
            from: config.from.clone(),
            http,
        }
    }
}

impl Provider for Twilio {
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(async move {
            let sent = self
                .http
                .post(&self.url)
                .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
                .form(&[
                    ("To", message.to.as_str()),
                    ("From", self.from.as_str()),
                    ("Body", message.text.as_str()),
                ])
                .send()
                .await;
            let body = http_outcome("twilio", sent).await?;
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            Ok(answer["sid"].as_str().unwrap_or_default().to_owned())
        })
    }
}
