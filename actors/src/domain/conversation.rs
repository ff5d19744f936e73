//! Conversations on inbound channels: each message is recorded, and a message the channel's
//! rules pick out (its task prefix, or any message of an allow-listed sender) asks for a task.

/// What a channel's configuration says its messages may become.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// The switchyard user that tasks from this channel belong to.
    pub user: String,
    /// A message starting with it creates a task titled with the rest.
    pub task_prefix: Option<String>,
    /// Senders every message of whom creates a task, titled with its first line.
    pub allow_senders: Vec<String>,
}

/// What a conversation's mailbox knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The channel's name.
    pub channel: String,
    /// The conversation's id on that channel.
    pub conversation: String,
    /// Messages received in it.
    pub messages: u64,
    /// Tasks its messages became.
    pub tasks: u64,
    /// When its first message was received (ms).
    pub first_at: u64,
    /// When its latest message was received (ms).
    pub last_at: u64,
}

/// One inbound message, as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The channel's name.
    pub channel: String,
    /// The conversation's id on that channel.
    pub conversation: String,
    /// Who wrote it.
    pub sender: String,
    /// What they wrote.
    pub text: String,
    /// When it was received (ms).
    pub received: u64,
}

/// A task an inbound message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// Its owner: the channel's configured user.
    pub user: String,
    /// Its title.
    pub title: String,
    /// Its spec: the whole message.
    pub spec: String,
}

/// Longest title taken from a message, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// Records `inbound` in `conversation` (`None`: its first message) and says which task it asks
/// for under `rules` (`None`: the channel makes no tasks).
pub fn step(
    conversation: Option<&Conversation>,
    inbound: &Inbound,
    rules: Option<&Rules>,
) -> (Conversation, Option<TaskRequest>) {
    let request = rules.and_then(|rules| task_request(rules, inbound));
    let mut next = conversation.cloned().unwrap_or(Conversation {
        channel: inbound.channel.clone(),
        conversation: inbound.conversation.clone(),
        messages: 0,
        tasks: 0,
        first_at: inbound.received,
        last_at: inbound.received,
    });
    next.messages += 1;
    next.tasks += u64::from(request.is_some());
    next.first_at = next.first_at.min(inbound.received);
    next.last_at = next.last_at.max(inbound.received);
    (next, request)
}

/// The task `inbound` asks for under `rules`, if any: the prefix wins over the allow-list, and
/// a message that is only the prefix asks for nothing.
pub fn task_request(rules: &Rules, inbound: &Inbound) -> Option<TaskRequest> {
    let text = inbound.text.trim();
    let prefixed = rules
        .task_prefix
        .as_deref()
        .filter(|prefix| !prefix.is_empty())
        .and_then(|prefix| text.strip_prefix(prefix));
    let title_source = match prefixed {
        Some(rest) => rest.trim(),
        None if rules.allow_senders.contains(&inbound.sender) => text,
        None => return None,
    };
    let title: String = title_source
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(MAX_TITLE_CHARS)
        .collect();
    if title.is_empty() {
        return None;
    }
    Some(TaskRequest {
        user: rules.user.clone(),
        title,
        spec: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            user: "u1".into(),
            task_prefix: Some("task:".into()),
            allow_senders: vec!["boss".into()],
        }
    }

    fn inbound(sender: &str, text: &str, received: u64) -> Inbound {
        Inbound {
            channel: "slack".into(),
            conversation: "C1".into(),
            sender: sender.into(),
            text: text.into(),
            received,
        }
    }

    #[test]
    fn the_prefix_makes_a_task_titled_with_the_rest() {
        let (conversation, request) = step(
            None,
            &inbound("U1", "task: book the dentist\nTuesday", 5),
            Some(&rules()),
        );
        let request = request.unwrap();
        assert_eq!(request.title, "book the dentist");
        assert_eq!(request.spec, "task: book the dentist\nTuesday");
        assert_eq!(request.user, "u1");
        assert_eq!((conversation.messages, conversation.tasks), (1, 1));
    }

    #[test]
    fn other_messages_are_recorded_without_a_task() {
        let first = step(None, &inbound("U1", "hello", 9), Some(&rules())).0;
        let (second, request) = step(Some(&first), &inbound("U1", "task:  ", 4), Some(&rules()));
        assert_eq!(request, None, "only the prefix asks for nothing");
        assert_eq!((second.messages, second.tasks), (2, 0));
        assert_eq!((second.first_at, second.last_at), (4, 9));
        let (_, none) = step(None, &inbound("U1", "task: x", 1), None);
        assert_eq!(none, None, "a channel without rules makes no tasks");
    }

    #[test]
    fn an_allow_listed_sender_makes_a_task_of_every_message() {
        let request = task_request(
            &rules(),
            &inbound("boss", "call the bank\nabout the loan", 1),
        );
        assert_eq!(request.unwrap().title, "call the bank");
        let long = "x".repeat(500);
        let request = task_request(&rules(), &inbound("boss", &long, 1)).unwrap();
        assert_eq!(request.title.chars().count(), MAX_TITLE_CHARS);
    }
}
