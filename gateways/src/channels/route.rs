//! `POST /v1/channels/{channel}`: verify, read, limit, deduplicate, publish.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use ed25519_dalek::VerifyingKey;
use moka::future::Cache;
use schemas::{Envelope, Message, MessageReceived};
use serde_json::json;
use tracing::Instrument;

use super::config::ChannelsConfig;
use super::parse::{self, Parsed, Received};
use super::verify::{self, Unsigned};
use crate::limits::KeyedLimit;
use crate::{GatewayContext, GatewayError, metrics};

/// How long a provider message id is remembered, so a resent webhook lands once.
const REMEMBER: Duration = Duration::from_secs(24 * 3600);

/// Most provider message ids remembered at once.
const REMEMBERED: u64 = 1_000_000;

/// The default messages per sender and minute.
const DEFAULT_PER_SENDER_PER_MINUTE: u32 = 60;

/// How a channel's requests are signed, with its secret.
enum Scheme {
    Sms { auth_token: String, url: String },
    Slack { signing_secret: String },
    Discord { public_key: VerifyingKey },
    Telegram { secret_token: String },
    Email { hmac_secret: String },
}

impl Scheme {
    /// The key of the channel's message ids: its secret (Discord's public key, which no
    /// outside key holder can use anyway: those ids are refused at `/v1/events`).
    fn id_key(&self) -> &[u8] {
        match self {
            Scheme::Sms { auth_token, .. } => auth_token.as_bytes(),
            Scheme::Slack { signing_secret } => signing_secret.as_bytes(),
            Scheme::Discord { public_key } => public_key.as_bytes(),
            Scheme::Telegram { secret_token } => secret_token.as_bytes(),
            Scheme::Email { hmac_secret } => hmac_secret.as_bytes(),
        }
    }
}

/// A channel that is on.
struct Channel {
    scheme: Scheme,
    user: String,
    per_sender: KeyedLimit,
}

/// The channels that are on, with what they remember of recent messages.
pub struct Channels {
    on: BTreeMap<&'static str, Channel>,
    seen: Cache<String, ()>,
}

impl Channels {
    /// The channels `config` turns on; an error names the setting that is wrong.
    pub fn new(config: &ChannelsConfig) -> Result<Channels, String> {
        let mut on = BTreeMap::new();
        for (name, c) in config.each() {
            if !c.is_on(name) {
                continue;
            }
            if c.user.is_empty() {
                return Err(format!(
                    "channels.{name}.user: the user its messages belong to"
                ));
            }
            let scheme = match name {
                "sms" if c.public_url.is_empty() => {
                    return Err("channels.sms.public_url: the URL Twilio calls and signs".into());
                }
                "sms" => Scheme::Sms {
                    auth_token: c.auth_token.expose().to_owned(),
                    url: c.public_url.clone(),
                },
                "slack" => Scheme::Slack {
                    signing_secret: c.signing_secret.expose().to_owned(),
                },
                "discord" => Scheme::Discord {
                    public_key: verify::discord_key(&c.public_key)
                        .map_err(|e| format!("channels.discord.{e}"))?,
                },
                "telegram" => Scheme::Telegram {
                    secret_token: c.secret_token.expose().to_owned(),
                },
                _ => Scheme::Email {
                    hmac_secret: c.hmac_secret.expose().to_owned(),
                },
            };
            let per_minute = match c.per_sender_per_minute {
                0 => DEFAULT_PER_SENDER_PER_MINUTE,
                n => n,
            };

            let channel = Channel {
                scheme,
                user: c.user.clone(),
                per_sender: KeyedLimit::new(per_minute, Duration::from_secs(60)),
            };
            on.insert(name, channel);
        }
        Ok(Channels {
            on,
            seen: Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(REMEMBER)
                .build(),
        })
    }

    /// The names of the channels that are on.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.on.keys().copied()
    }
}

/// A request as the signature schemes see it.
struct Request<'a> {
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &'static str) -> Result<&str, Unsigned> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(Unsigned::Missing(name))
    }
}

/// Twilio's form fields, in the order sent.
fn form(body: &[u8]) -> Result<Vec<(String, String)>, GatewayError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| GatewayError::BadRequest(format!("malformed form body: {e}")))
}

fn now_secs() -> u64 {
    actors::store::now_ms() / 1000
}

/// Checks `request`'s signature by `scheme`; returns the payload read.
fn verify_and_parse(scheme: &Scheme, request: &Request<'_>) -> Result<Parsed, GatewayError> {
    let unsigned = |e: Unsigned| GatewayError::BadSignature(e.to_string());
    let malformed = GatewayError::BadRequest;
    match scheme {
        Scheme::Sms { auth_token, url } => {
            let params = form(request.body)?;
            let signed_url = match request.query {
                // A configured URL with a query is the whole URL Twilio calls; else the
                // query it called with is part of what it signed.
                Some(query) if !query.is_empty() && !url.contains('?') => format!("{url}?{query}"),
                _ => url.clone(),
            };
            let signature = request.header("x-twilio-signature").map_err(unsigned)?;
            verify::twilio(auth_token, &signed_url, &params, signature).map_err(unsigned)?;
            parse::sms(&params).map_err(malformed)
        }
        Scheme::Slack { signing_secret } => {
            let timestamp = request
                .header("x-slack-request-timestamp")
                .map_err(unsigned)?;
            let signature = request.header("x-slack-signature").map_err(unsigned)?;
            verify::slack(
                signing_secret,
                timestamp,
                request.body,
                signature,
                now_secs(),
            )
            .map_err(unsigned)?;
            parse::slack(request.body).map_err(malformed)
        }
        Scheme::Discord { public_key } => {
            let timestamp = request.header("x-signature-timestamp").map_err(unsigned)?;
            let signature = request.header("x-signature-ed25519").map_err(unsigned)?;
            verify::discord(public_key, timestamp, request.body, signature).map_err(unsigned)?;
            parse::discord(request.body).map_err(malformed)
        }
        Scheme::Telegram { secret_token } => {
            let token = request
                .header("x-telegram-bot-api-secret-token")
                .map_err(unsigned)?;
            verify::telegram(secret_token, token).map_err(unsigned)?;
            parse::telegram(request.body).map_err(malformed)
        }
        Scheme::Email { hmac_secret } => {
            let signature = request.header(verify::EMAIL_SIGNATURE).map_err(unsigned)?;
            verify::hmac_relay(hmac_secret, request.body, signature).map_err(unsigned)?;
            parse::email(request.body).map_err(malformed)
        }
    }
}

/// The message id a provider's message travels under: the same for a resent webhook and on
/// every node, and one no API key holder can guess and take first (a MAC of the provider's
/// id under the channel's secret), since message ids are one namespace.
fn message_id(channel: &str, secret: &[u8], provider_id: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(provider_id.as_bytes());
    format!(
        "{channel}-{}",
        hex::encode(&mac.finalize().into_bytes()[..16])
    )
}

/// What the provider expects back once a message is taken.
fn accepted(channel: &str, id: &str, duplicate: bool) -> Response {
    match channel {
        // Twilio reads TwiML; an empty response sends no reply.
        "sms" => (
            [(header::CONTENT_TYPE, "text/xml")],
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
        )
            .into_response(),
        "discord" => Json(parse::discord_ack()).into_response(),
        _ => Json(json!({ "ok": true, "id": id, "duplicate": duplicate })).into_response(),
    }
}

/// `POST /v1/channels/{channel}`.
pub async fn receive(
    State(ctx): State<GatewayContext>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let Some((&name, channel)) = ctx.channels.on.get_key_value(name.as_str()) else {
        return Err(GatewayError::NotFound(format!(
            "no channel `{name}` is configured"
        )));
    };
    let request = Request {
        headers: &headers,
        query: query.as_deref(),
        body: &body,
    };
    let parsed = verify_and_parse(&channel.scheme, &request).inspect_err(|e| {
        metrics::webhook_rejected(name, e);
    })?;
    let received = match parsed {
        Parsed::Answer(answer) => return Ok(Json(answer).into_response()),
        Parsed::Ignored(why) => {
            return Ok(
                (StatusCode::OK, Json(json!({ "ok": true, "ignored": why }))).into_response(),
            );
        }
        Parsed::Message(received) => received,
    };
    if let Err(wait) = channel
        .per_sender
        .check(&format!("{name}/{}", received.sender))
    {
        metrics::rate_limited(name);
        return Err(GatewayError::TooManyRequests(wait));
    }
    let id = message_id(name, channel.scheme.id_key(), &received.provider_id);
    // Remembered before publishing, so two copies arriving at once publish once; forgotten
    // again if the publish fails, so the provider's retry is taken.
    let fresh = ctx
        .channels
        .seen
        .entry(id.clone())
        .or_insert(())
        .await
        .is_fresh();
    if !fresh {
        return Ok(accepted(name, &id, true));
    }
    let mut envelope = envelope(&ctx, name, &channel.user, &id, received);
    let span = tracing::info_span!("http.ingest", route = "/v1/channels", channel = name, id = %id);
    crate::http::trace_under(
        &span,
        &mut envelope,
        crate::http::traceparent_header(&headers),
    );
    // In a task of its own: a request dropped mid-publish (a timeout, a provider hanging up)
    // still publishes or forgets the id, so the provider's retry is not taken as a copy.
    let node = ctx.node.clone();
    let seen = ctx.channels.seen.clone();
    let published = tokio::spawn(
        async move {
            let published = node.publish(&envelope).await;
            if published.is_err() {
                seen.invalidate(&envelope.id).await;
            }
            published
        }
        .instrument(span),
    )
    .await
    .map_err(|e| GatewayError::Internal(format!("publishing a webhook's message: {e}")))?;
    published?;
    Ok(accepted(name, &id, false))
}

fn envelope(
    ctx: &GatewayContext,
    channel: &str,
    user: &str,
    id: &str,
    received: Received,
) -> Envelope {
    let now = ctx.node.now_ms();
    let message = Message::MessageReceived(MessageReceived {
        channel: channel.to_owned(),
        conversation: received.conversation,
        sender: received.sender,
        text: received.text,
        provider_id: received.provider_id,
        received: now,
        attachments: received.attachments,
    });
    Envelope::new(
        id.to_owned(),
        format!("gateway/{channel}"),
        now,
        user.to_owned(),
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_the_same_for_a_provider_id_and_unguessable_without_the_secret() {
        let id = message_id("slack", b"secret", "Ev1");
        assert_eq!(id, message_id("slack", b"secret", "Ev1"));
        assert!(
            id.starts_with("slack-") && id.len() == "slack-".len() + 32,
            "{id}"
        );
        assert_ne!(id, message_id("slack", b"other", "Ev1"));
        assert_ne!(id, message_id("slack", b"secret", "Ev2"));
        let long = "x".repeat(300);
        assert!(message_id("email", b"k", &long).len() <= schemas::MAX_ID_BYTES);
    }

    #[test]
    fn form_bodies_keep_their_order_and_decode() {
        assert_eq!(
            form(b"To=%2B1800&Body=hi+there").unwrap(),
            vec![
                ("To".to_owned(), "+1800".to_owned()),
                ("Body".to_owned(), "hi there".to_owned())
            ]
        );
    }
}
