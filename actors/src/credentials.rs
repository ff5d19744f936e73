//! Credentials, all in one place: API keys (random bearer tokens of which only a SHA-256 hash
//! is stored), whom a key stands for, and the admin key a new node writes once to
//! `<data-dir>/admin.token`.

use std::io::Write;
use std::path::Path;

use schemas::{Envelope, Message};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use sha2::{Digest, Sha256};

use crate::store::entities::api_keys;
use crate::store::{Store, StoreError, now_ms};

/// Hex digits of a key's hash that name it (for revoking), without revealing it.
const KEY_ID_LEN: usize = 16;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, for every user.
    Admin,
    /// Everything within its own user.
    User,
    /// Only its own agent's tasks.
    Agent,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Agent => "agent",
        }
    }

    /// The role named `text`, if any.
    pub fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::User, Role::Agent]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// Whom a valid key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user the key belongs to.
    pub user: String,
    /// What it may do.
    pub role: Role,
    /// For agent keys, the agent.
    pub agent_id: Option<String>,
}

/// Message types only the node itself publishes (its orchestrator, relay and channel webhooks).
const NODE_ONLY: [&str; 6] = [
    "task.assigned",
    "task.requeued",
    "task.dependency_resolved",
    "task.dependency_failed",
    "agent.offline",
    // The channel webhooks' own, after each provider's signature is checked.
    "message.received",
];

/// Types only admin keys publish: budgets are the operator's to set.
const ADMIN_ONLY: [&str; 1] = ["budget.set"];

/// The inbound channels, whose webhooks publish under ids `<channel>-…`: ids that only they
/// use, so no key holder can take one first and have the real message found applied.
pub const CHANNELS: [&str; 5] = ["sms", "slack", "discord", "telegram", "email"];

/// The channel whose webhook ids `id` looks like, if any.
fn channel_id_prefix(id: &str) -> Option<&'static str> {
    CHANNELS
        .into_iter()
        .find(|c| id.strip_prefix(c).is_some_and(|rest| rest.starts_with('-')))
}

impl Principal {
    /// Whether this principal may act for `user`.
    pub fn may_act_for(&self, user: &str) -> bool {
        self.role == Role::Admin || self.user == user
    }

    /// Checks that this principal may publish `envelope` from outside the node, and marks an
    /// agent's completion or failure as its agent's, so the task checks who reports; the
    /// refusal's reason otherwise. Users publish for themselves only, and never what only the
    /// node publishes; an agent's key publishes only its own agent's reports.
    pub fn admit(&self, envelope: &mut Envelope) -> Result<(), String> {
        if !self.may_act_for(&envelope.user) {
            return Err(format!(
                "this key may not publish for user `{}`",
                envelope.user
            ));
        }
        let kind = envelope.type_name();
        if self.role != Role::Admin && NODE_ONLY.contains(&kind) {
            return Err(format!("`{kind}` is published by the node only"));
        }
        if self.role != Role::Admin && ADMIN_ONLY.contains(&kind) {
            return Err(format!("`{kind}` takes an admin key"));
        }
        if let Some(channel) = channel_id_prefix(&envelope.id).filter(|_| self.role != Role::Admin)
        {
            return Err(format!(
                "ids beginning `{channel}-` are the {channel} webhook's: choose another id"
            ));
        }
        if self.role != Role::Agent {
            return Ok(());
        }
        let own = self.agent_id.as_deref().unwrap_or_default();
        let reporter = match &mut envelope.message {
            // What the agent's models cost is its user's, reported by whoever ran them.
            Message::InvocationRecorded(_) => return Ok(()),
            Message::AgentRegistered(m) => Some(m.agent_id.as_str()),
            Message::AgentHeartbeat(m) => Some(m.agent_id.as_str()),
            Message::TaskStarted(m) => Some(m.agent_id.as_str()),
            Message::TaskOutput(m) => Some(m.agent_id.as_str()),
            Message::TaskPlanSubmitted(m) => Some(m.agent_id.as_str()),
            Message::TaskHelpRequested(m) => Some(m.agent_id.as_str()),
            Message::TaskReviewRequested(m) => Some(m.agent_id.as_str()),
            Message::TaskCompleted(m) => {
                Some(m.agent_id.get_or_insert_with(|| own.to_owned()).as_str())
            }
            Message::TaskFailed(m) => {
                Some(m.agent_id.get_or_insert_with(|| own.to_owned()).as_str())
            }
            _ => None,
        };
        match reporter {
            Some(agent_id) if agent_id == own => Ok(()),
            Some(agent_id) => Err(format!(
                "this agent's key reports for `{own}`, not `{agent_id}`"
            )),
            None => Err(format!(
                "an agent's key may only report on its own work, not publish `{kind}`"
            )),
        }
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random bearer key (256 bits), to hand out once and store only as a hash.
pub fn new_token() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StoreError(format!("no entropy for a key: {e}")))?;
    Ok(format!("sy_{}", hex::encode(bytes)))
}

impl Store {
    /// Stores the hash of `token` as a key for `user` with `role`; returns the key's id.
    pub async fn add_key(
        &self,
        token: &str,
        user: &str,
        role: Role,
        agent_id: Option<&str>,
    ) -> Result<String, StoreError> {
        let key_hash = hash(token);
        let key_id = key_hash[..KEY_ID_LEN].to_owned();
        api_keys::Entity::insert(api_keys::ActiveModel {
            key_hash: Set(key_hash),
            user: Set(user.to_owned()),
            role: Set(role.as_str().to_owned()),
            agent_id: Set(agent_id.map(str::to_owned)),
            created_at: Set(now_ms() as i64),
        })
        .exec_without_returning(self.connection())
        .await?;
        Ok(key_id)
    }

    /// Deletes the key whose id is `key_id`; whether there was one.
    pub async fn revoke_key(&self, key_id: &str) -> Result<bool, StoreError> {
        if key_id.len() != KEY_ID_LEN || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let deleted = api_keys::Entity::delete_many()
            .filter(api_keys::Column::KeyHash.starts_with(key_id.to_ascii_lowercase()))
            .exec(self.connection())
            .await?;
        Ok(deleted.rows_affected > 0)
    }

    /// Whether any admin key exists.
    pub async fn has_admin_key(&self) -> Result<bool, StoreError> {
        let admins = api_keys::Entity::find()
            .filter(api_keys::Column::Role.eq(Role::Admin.as_str()))
            .count(self.connection())
            .await?;
        Ok(admins > 0)
    }

    /// Whom `token` stands for, or `None` if it is not a valid key.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let row = api_keys::Entity::find_by_id(hash(token))
            .one(self.connection())
            .await?;
        Ok(row.and_then(|r| {
            Some(Principal {
                role: Role::parse(&r.role)?,
                user: r.user,
                agent_id: r.agent_id,
            })
        }))
    }
}

/// File name of the admin key in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Creates the admin key if the store has none. The file is written before the hash is
/// stored, so a crash in between leaves no key that nobody holds.
pub async fn ensure_admin_key(store: &Store, data_dir: &Path) -> Result<(), StoreError> {
    if store.has_admin_key().await? {
        return Ok(());
    }
    let token = new_token()?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_private(&path, &token)
        .map_err(|e| StoreError(format!("writing {}: {e}", path.display())))?;
    store.add_key(&token, "admin", Role::Admin, None).await?;
    tracing::info!(path = %path.display(), "created the admin key");
    Ok(())
}

fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use schemas::{TaskAssigned, TaskCompleted, TaskStarted};

    use super::*;

    fn principal(role: Role, agent_id: Option<&str>) -> Principal {
        Principal {
            user: "u1".into(),
            role,
            agent_id: agent_id.map(Into::into),
        }
    }

    fn envelope(user: &str, message: Message) -> Envelope {
        Envelope::new("m1", "test", 0, user, message)
    }

    fn started(agent_id: &str) -> Message {
        Message::TaskStarted(TaskStarted {
            task_id: "t1".into(),
            agent_id: agent_id.into(),
        })
    }

    fn completed(agent_id: Option<&str>) -> Message {
        Message::TaskCompleted(TaskCompleted {
            task_id: "t1".into(),
            result: Default::default(),
            agent_id: agent_id.map(Into::into),
        })
    }

    fn assigned() -> Message {
        Message::TaskAssigned(TaskAssigned {
            task_id: "t1".into(),
            agent_id: "a1".into(),
        })
    }

    #[test]
    fn users_publish_for_themselves_and_never_what_the_node_publishes() {
        let user = principal(Role::User, None);
        assert!(user.admit(&mut envelope("u1", started("a1"))).is_ok());
        assert_eq!(
            user.admit(&mut envelope("u2", started("a1"))),
            Err("this key may not publish for user `u2`".into())
        );
        assert_eq!(
            user.admit(&mut envelope("u1", assigned())),
            Err("`task.assigned` is published by the node only".into())
        );
        let admin = principal(Role::Admin, None);
        assert!(admin.admit(&mut envelope("u2", assigned())).is_ok());
    }

    #[test]
    fn budgets_are_set_by_admins_and_costs_reported_by_anyone_of_the_user() {
        let budget = || {
            Message::BudgetSet(schemas::BudgetSet {
                daily: Some(100.0),
                monthly: None,
            })
        };
        let user = principal(Role::User, None);
        assert_eq!(
            user.admit(&mut envelope("u1", budget())),
            Err("`budget.set` takes an admin key".into())
        );
        assert!(
            principal(Role::Admin, None)
                .admit(&mut envelope("u1", budget()))
                .is_ok()
        );
        let invocation = Message::InvocationRecorded(schemas::InvocationRecorded {
            invocation_id: "i1".into(),
            provider: "p".into(),
            model: "m".into(),
            tokens_in: 1,
            tokens_out: 1,
            cost: 0.01,
            latency_ms: 1,
            task_id: None,
        });
        let agent = principal(Role::Agent, Some("a1"));
        assert!(agent.admit(&mut envelope("u1", invocation.clone())).is_ok());
        assert!(agent.admit(&mut envelope("u2", invocation)).is_err());
        assert!(agent.admit(&mut envelope("u1", budget())).is_err());
    }

    #[test]
    fn the_webhooks_ids_are_theirs_alone() {
        let user = principal(Role::User, None);
        let mut taken = envelope("u1", started("a1"));
        taken.id = "discord-0123456789abcdef".into();
        assert_eq!(
            user.admit(&mut taken),
            Err("ids beginning `discord-` are the discord webhook's: choose another id".into())
        );
        let mut mine = envelope("u1", started("a1"));
        mine.id = "discordant-1".into();
        assert!(user.admit(&mut mine).is_ok(), "only the channel and a dash");
    }

    #[test]
    fn an_agent_key_reports_only_as_its_own_agent() {
        let agent = principal(Role::Agent, Some("a1"));
        assert!(agent.admit(&mut envelope("u1", started("a1"))).is_ok());
        assert_eq!(
            agent.admit(&mut envelope("u1", started("a2"))),
            Err("this agent's key reports for `a1`, not `a2`".into())
        );
        let mut unsigned = envelope("u1", completed(None));
        assert!(agent.admit(&mut unsigned).is_ok());
        assert_eq!(unsigned.message, completed(Some("a1")), "marked as a1's");
        assert!(
            agent
                .admit(&mut envelope("u1", completed(Some("a2"))))
                .is_err()
        );
        let cancel = Message::TaskCancelled(schemas::TaskCancelled {
            task_id: "t1".into(),
            reason: None,
        });
        assert_eq!(
            agent.admit(&mut envelope("u1", cancel)),
            Err(
                "an agent's key may only report on its own work, not publish `task.cancelled`"
                    .into()
            )
        );
    }
}
