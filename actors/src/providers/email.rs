//! Email over SMTP (lettre), one message per notification; its `Message-ID` derives from the
//! deduplication key, so a retry is recognisably the same mail.

use futures::future::BoxFuture;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest, Sha256};

use super::config::{EmailConfig, SmtpTls};
use super::{Outgoing, Provider, SendError};

/// A sender through one SMTP server.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Email {
    /// A sender as `config` says, or why the settings are unusable.
    pub fn new(config: &EmailConfig, timeout_ms: u64) -> Result<Email, String> {
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|e| format!("notifier.email.from `{}`: {e}", config.from))?;
        let host = config.host.as_str();
        let builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| format!("notifier.email: {e}"))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| format!("notifier.email: {e}"))?,
        };
        let mut builder = builder
            .port(config.port)
            .timeout(Some(std::time::Duration::from_millis(timeout_ms.max(1))));
        if !config.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                config.username.clone(),
                config.password.expose().to_owned(),
            ));
        }
        Ok(Email {
            transport: builder.build(),
            from,
        })
    }
}

impl Provider for Email {
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(async move {
            let to = message.to.parse::<Mailbox>().map_err(|e| {
                SendError::Permanent(format!("`{}` is not an email address: {e}", message.to))
            })?;
            let digest = hex::encode(&Sha256::digest(message.dedupe_key.as_bytes())[..16]);
            let domain = self.from.email.domain().to_owned();
            let mail = Message::builder()
                .from(self.from.clone())
                .to(to)
                .subject(message.subject.clone())
                .message_id(Some(format!("<{digest}@{domain}>")))
                .body(message.text.clone())
                .map_err(|e| SendError::Permanent(format!("building the mail: {e}")))?;
            match self.transport.send(mail).await {
                Ok(response) => Ok(response.message().collect::<Vec<_>>().join(" ")),
                Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("smtp: {e}"))),
                Err(e) => Err(SendError::Transient(format!("smtp: {e}"))),
            }
        })
    }
}
