//! Each provider's native webhook payload, read into one shape: an inbound message, an answer
//! the provider expects instead (Slack's challenge, Discord's PONG), or an event to let pass.

use mail_parser::{MessageParser, MimeHeaders};
use schemas::Attachment;
use serde_json::{Value, json};

/// An inbound message in the provider-neutral shape of `message.received`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The conversation's id on its channel.
    pub conversation: String,
    /// Who wrote it.
    pub sender: String,
    /// What they wrote.
    pub text: String,
    /// The provider's id of the message.
    pub provider_id: String,
    /// Attachments' metadata.
    pub attachments: Vec<Attachment>,
}

/// What a webhook's payload is.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A message to publish.
    Message(Received),
    /// A handshake to answer with this JSON, publishing nothing.
    Answer(Value),
    /// An event that is not a message (an edit, a bot's own post): acknowledged, not published.
    Ignored(&'static str),
}

/// Why a payload could not be read; the text is the 400's reason.
pub type Malformed = String;

fn text_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// A JSON number or string at `path`, as text (ids are either, depending on the provider).
fn id_at(value: &Value, path: &[&str]) -> Option<String> {
    match path.iter().try_fold(value, |v, key| v.get(key))? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn json_body(body: &[u8]) -> Result<Value, Malformed> {
    serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))
}

fn required(value: Option<String>, what: &str) -> Result<String, Malformed> {
    value.ok_or_else(|| format!("missing `{what}`"))
}

/// Twilio's SMS webhook: form fields `MessageSid`, `From`, `Body` and `NumMedia` media.
pub fn sms(params: &[(String, String)]) -> Result<Parsed, Malformed> {
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let provider_id = required(
        field("MessageSid").or_else(|| field("SmsSid")),
        "MessageSid",
    )?;
    let from = required(field("From"), "From")?;
    let media: usize = field("NumMedia").and_then(|n| n.parse().ok()).unwrap_or(0);
    let attachments = (0..media.min(10))
        .filter_map(|i| {
            let url = field(&format!("MediaUrl{i}"))?;
            Some(Attachment {
                name: url.rsplit('/').next().unwrap_or(&url).to_owned(),
                content_type: field(&format!("MediaContentType{i}")).unwrap_or_default(),
                size: 0,
            })
        })
        .collect();
    Ok(Parsed::Message(Received {
        conversation: from.clone(),
        sender: from,
        text: field("Body").unwrap_or_default(),
        provider_id,
        attachments,
    }))
}

/// Slack message subtypes that are a person writing: with files, or a thread reply also sent
/// to the channel.
const SLACK_MESSAGE_SUBTYPES: [&str; 2] = ["file_share", "thread_broadcast"];

/// Slack's Events API: `url_verification` is answered with its challenge; an `event_callback`
/// of a person's `message` is a message; anything else (bots, edits, other events) passes.
pub fn slack(body: &[u8]) -> Result<Parsed, Malformed> {
    let payload = json_body(body)?;
    match text_at(&payload, &["type"]) {
        Some("url_verification") => {
            let challenge = required(id_at(&payload, &["challenge"]), "challenge")?;
            Ok(Parsed::Answer(json!({ "challenge": challenge })))
        }
        Some("event_callback") => {
            let event = payload.get("event").ok_or("missing `event`")?;
            if text_at(event, &["type"]) != Some("message") {
                return Ok(Parsed::Ignored("not a message event"));
            }
            // A bot's post (ours included), an edit or a join is not someone writing to us;
            // a message with files or a thread reply sent to the channel is.
            let subtype = text_at(event, &["subtype"]);
            if event.get("bot_id").is_some()
                || subtype.is_some_and(|s| !SLACK_MESSAGE_SUBTYPES.contains(&s))
            {
                return Ok(Parsed::Ignored("not a person's new message"));
            }
            let attachments = event
                .get("files")
                .and_then(Value::as_array)
                .map(|files| {
                    files
                        .iter()
                        .map(|f| Attachment {
                            name: text_at(f, &["name"]).unwrap_or("").to_owned(),
                            content_type: text_at(f, &["mimetype"]).unwrap_or("").to_owned(),
                            size: f.get("size").and_then(Value::as_u64).unwrap_or(0),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Parsed::Message(Received {
                conversation: required(id_at(event, &["channel"]), "event.channel")?,
                sender: required(id_at(event, &["user"]), "event.user")?,
                text: text_at(event, &["text"]).unwrap_or("").to_owned(),
                provider_id: required(id_at(&payload, &["event_id"]), "event_id")?,
                attachments,
            }))
        }
        Some(_) => Ok(Parsed::Ignored("not an event callback")),
        None => Err("missing `type`".into()),
    }
}

/// Discord's interactions: PING (type 1) is answered with PONG; an application command
/// (type 2) is a message whose text is its name and options; other types pass.
pub fn discord(body: &[u8]) -> Result<Parsed, Malformed> {
    let payload = json_body(body)?;
    match payload.get("type").and_then(Value::as_u64) {
        Some(1) => Ok(Parsed::Answer(json!({ "type": 1 }))),
        Some(2) => {
            let data = payload.get("data").ok_or("missing `data`")?;
            let mut words = vec![text_at(data, &["name"]).unwrap_or("").to_owned()];
            for option in data
                .get("options")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match option.get("value") {
                    Some(Value::String(s)) => words.push(s.clone()),
                    Some(other) => words.push(other.to_string()),
                    None => {}
                }
            }
            let sender = id_at(&payload, &["member", "user", "id"])
                .or_else(|| id_at(&payload, &["user", "id"]));
            Ok(Parsed::Message(Received {
                conversation: required(id_at(&payload, &["channel_id"]), "channel_id")?,
                sender: required(sender, "member.user.id")?,
                text: words.join(" ").trim().to_owned(),
                provider_id: required(id_at(&payload, &["id"]), "id")?,
                attachments: Vec::new(),
            }))
        }
        Some(_) => Ok(Parsed::Ignored("not an application command")),
        None => Err("missing `type`".into()),
    }
}

/// The answer Discord expects to an application command it delivered.
pub fn discord_ack() -> Value {
    json!({ "type": 4, "data": { "content": "Received." } })
}

/// Telegram's Update: a `message` (text or caption, a document or photo as an attachment) is
/// a message; other updates (edits, callbacks) pass. The update id is the provider's id.
pub fn telegram(body: &[u8]) -> Result<Parsed, Malformed> {
    let update = json_body(body)?;
    let provider_id = required(id_at(&update, &["update_id"]), "update_id")?;
    let Some(message) = update.get("message") else {
        return Ok(Parsed::Ignored("not a new message"));
    };
    let mut attachments = Vec::new();
    if let Some(document) = message.get("document") {
        attachments.push(Attachment {
            name: text_at(document, &["file_name"]).unwrap_or("").to_owned(),
            content_type: text_at(document, &["mime_type"]).unwrap_or("").to_owned(),
            size: document
                .get("file_size")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        });
    }
    if let Some(largest) = message
        .get("photo")
        .and_then(Value::as_array)
        .and_then(|sizes| sizes.last())
    {
        attachments.push(Attachment {
            name: text_at(largest, &["file_id"]).unwrap_or("photo").to_owned(),
            content_type: "image/jpeg".into(),
            size: largest
                .get("file_size")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        });
    }
    let text = text_at(message, &["text"])
        .or_else(|| text_at(message, &["caption"]))
        .unwrap_or("");
    Ok(Parsed::Message(Received {
        conversation: required(id_at(message, &["chat", "id"]), "message.chat.id")?,
        sender: required(id_at(message, &["from", "id"]), "message.from.id")?,
        text: text.to_owned(),
        provider_id,
        attachments,
    }))
}

/// An email as a relay forwards it (the raw RFC 5322 message): from, subject and text body;
/// the subject is the text's first line, so a task prefix works on it.
pub fn email(body: &[u8]) -> Result<Parsed, Malformed> {
    let mail = MessageParser::default()
        .parse(body)
        .filter(|m| m.headers().iter().next().is_some())
        .ok_or("not a MIME message")?;
    let from = mail
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .ok_or("missing `From` address")?
        .to_ascii_lowercase();
    let provider_id = mail
        .message_id()
        .filter(|id| !id.trim().is_empty())
        .ok_or("missing `Message-ID`")?
        .to_owned();
    let subject = mail.subject().unwrap_or("").trim();
    let text = mail.body_text(0).unwrap_or_default();
    let attachments = mail
        .attachments()
        .map(|part| Attachment {
            name: part.attachment_name().unwrap_or("").to_owned(),
            content_type: part
                .content_type()
                .map(|t| match t.subtype() {
                    Some(sub) => format!("{}/{sub}", t.ctype()),
                    None => t.ctype().to_owned(),
                })
                .unwrap_or_default(),
            size: part.contents().len() as u64,
        })
        .collect();
    Ok(Parsed::Message(Received {
        conversation: from.clone(),
        sender: from,
        text: format!("{subject}\n\n{}", text.trim()).trim().to_owned(),
        provider_id,
        attachments,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(parsed: Result<Parsed, Malformed>) -> Received {
        match parsed {
            Ok(Parsed::Message(m)) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn slack_messages_challenges_and_bots() {
        let event = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message",
            "subtype":"file_share","channel":"C1","user":"U1","text":"task: x","ts":"1.2",
            "files":[{"name":"a.png","mimetype":"image/png","size":3}]}}"#;
        let m = message(slack(event));
        assert_eq!(
            (
                m.conversation.as_str(),
                m.sender.as_str(),
                m.provider_id.as_str()
            ),
            ("C1", "U1", "Ev1")
        );
        assert_eq!(m.attachments[0].size, 3);
        assert_eq!(
            slack(br#"{"type":"url_verification","challenge":"abc"}"#),
            Ok(Parsed::Answer(json!({"challenge": "abc"})))
        );
        let bot = br#"{"type":"event_callback","event_id":"Ev2","event":{"type":"message","bot_id":"B1","channel":"C1","text":"hi"}}"#;
        assert!(matches!(slack(bot), Ok(Parsed::Ignored(_))));
        let edit = br#"{"type":"event_callback","event_id":"Ev4","event":{"type":"message","subtype":"message_changed","channel":"C1","user":"U1"}}"#;
        assert!(matches!(slack(edit), Ok(Parsed::Ignored(_))));
        assert!(slack(b"{").unwrap_err().contains("malformed JSON"));
        let no_user = br#"{"type":"event_callback","event_id":"Ev3","event":{"type":"message","channel":"C1"}}"#;
        assert!(slack(no_user).unwrap_err().contains("event.user"));
    }

    #[test]
    fn discord_pings_and_commands() {
        assert_eq!(
            discord(br#"{"type":1}"#),
            Ok(Parsed::Answer(json!({"type": 1})))
        );
        let command = br#"{"type":2,"id":"123","channel_id":"9","member":{"user":{"id":"42"}},
            "data":{"name":"task","options":[{"name":"title","value":"water the plants"}]}}"#;
        let m = message(discord(command));
        assert_eq!(m.text, "task water the plants");
        assert_eq!((m.sender.as_str(), m.provider_id.as_str()), ("42", "123"));
    }

    #[test]
    fn telegram_messages_and_other_updates() {
        let update = br#"{"update_id":7,"message":{"message_id":1,"chat":{"id":-100},"from":{"id":5},
            "text":"hello","document":{"file_name":"a.pdf","mime_type":"application/pdf","file_size":9}}}"#;
        let m = message(telegram(update));
        assert_eq!(
            (
                m.conversation.as_str(),
                m.sender.as_str(),
                m.provider_id.as_str()
            ),
            ("-100", "5", "7")
        );
        assert_eq!(m.attachments[0].name, "a.pdf");
        assert!(matches!(
            telegram(br#"{"update_id":8,"edited_message":{}}"#),
            Ok(Parsed::Ignored(_))
        ));
        assert!(
            telegram(br#"{"message":{}}"#)
                .unwrap_err()
                .contains("update_id")
        );
    }

    #[test]
    fn sms_form_fields() {
        let params: Vec<(String, String)> = [
            ("MessageSid", "SM1"),
            ("From", "+15551234"),
            ("Body", "task: call mum"),
            ("NumMedia", "1"),
            ("MediaUrl0", "https://api.twilio.com/x/Media/ME1"),
            ("MediaContentType0", "image/jpeg"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let m = message(sms(&params));
        assert_eq!(
            (m.sender.as_str(), m.text.as_str()),
            ("+15551234", "task: call mum")
        );
        assert_eq!(m.attachments[0].name, "ME1");
        assert!(sms(&params[1..]).unwrap_err().contains("MessageSid"));
    }

    #[test]
    fn email_from_subject_text_and_attachments() {
        let mail = b"From: Ada <Ada@Example.org>\r\nTo: inbox@switchyard.test\r\n\
Subject: task: renew the passport\r\nMessage-ID: <m1@example.org>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nBefore June.\r\n\
--b\r\nContent-Type: application/pdf; name=\"form.pdf\"\r\n\
Content-Disposition: attachment; filename=\"form.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let m = message(email(mail));
        assert_eq!(m.sender, "ada@example.org");
        assert_eq!(m.text, "task: renew the passport\n\nBefore June.");
        assert_eq!(m.provider_id, "m1@example.org");
        assert_eq!(
            (
                m.attachments[0].name.as_str(),
                m.attachments[0].content_type.as_str()
            ),
            ("form.pdf", "application/pdf")
        );
        assert!(email(b"no headers at all").is_err());
    }
}
