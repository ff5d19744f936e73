//! The notification outbox: what is due, claimed by a sender for a lease (so two senders,
//! on one node or several, never hold one notification at once), and how each delivery went.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::notifications::{self, Column as C};
use super::{Applied, AppliedMessage, Store, StoreError, batch};
use crate::domain::task::NotificationDraft;

/// A notification's delivery status, as stored and shown.
pub mod status {
    /// Waiting to be sent (or retried).
    pub const PENDING: &str = "pending";
    /// Held by the user's quiet hours until `due_at`.
    pub const HELD: &str = "held";
    /// Delivered to its provider.
    pub const SENT: &str = "sent";
    /// Given up: a permanent error or every attempt spent.
    pub const FAILED: &str = "failed";
}

use status::{FAILED, HELD, PENDING, SENT};

/// A recorded notification and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Its number in the outbox.
    pub id: i64,
    /// Whose it is.
    pub user: String,
    /// Channel asked for.
    pub channel: String,
    /// Recipient asked for.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Message text.
    pub text: String,
    /// Its deduplication key.
    pub dedupe_key: String,
    /// The task it is about, if any.
    pub task_id: Option<String>,
    /// `pending`, `held`, `sent` or `failed`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it is (or was) next due, ms.
    pub due_at: u64,
    /// Lease held by a sender until then (ms); 0 when none.
    pub lease_until: u64,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// When it was sent, ms.
    pub sent_at: Option<u64>,
    /// Where it went, `<channel>:<recipient>`.
    pub destination: Option<String>,
    /// The provider's reference for it.
    pub provider_ref: Option<String>,
    /// When it was recorded (its cause's time), ms.
    pub created_at: u64,
}

/// How one delivery attempt (or a decision not to try yet) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The provider took it.
    Sent {
        /// `<channel>:<recipient>`.
        destination: String,
        /// The provider's reference.
        provider_ref: String,
        /// When, ms.
        at: u64,
    },
    /// It failed and is tried again at `due_at`.
    Retry {
        /// Why it failed.
        error: String,
        /// When to try again, ms.
        due_at: u64,
    },
    /// Not tried (its provider is busy, or not configured here): due again at `due_at`,
    /// with no attempt counted.
    Deferred {
        /// Why.
        error: String,
        /// When to look again, ms.
        due_at: u64,
    },
    /// Quiet hours: not tried, due again at `until`.
    Held {
        /// When the quiet hours end, ms.
        until: u64,
    },
    /// Given up.
    Failed {
        /// Why.
        error: String,
        /// Whether an attempt was made (not so for an undeliverable one).
        attempted: bool,
    },
}

impl Store {
    /// Records a requested notification as the effect of `message`.
    pub async fn save_notification(
        &self,
        message: &AppliedMessage<'_>,
        draft: &NotificationDraft,
    ) -> Result<Applied, StoreError> {
        let mut changes = batch::Changes::new(message.id, message.activity());
        changes
            .notifications
            .push(notification_row(message.id, draft, message.time));
        self.writes.write(changes).await
    }

    /// Notifications in the order they were recorded, optionally only one user's.
    pub async fn notifications(&self, user: Option<&str>) -> Result<Vec<Notification>, StoreError> {
        let mut query = notifications::Entity::find().order_by_asc(C::Id);
        if let Some(user) = user {
            query = query.filter(C::User.eq(user));
        }
        Ok(query
            .all(self.connection())
            .await?
            .into_iter()
            .map(from_row)
            .collect())
    }

    /// Up to `limit` notifications after number `after`, in order, of `user` (everyone's if
    /// `None`) and with `status` (any if `None`).
    pub async fn notifications_page(
        &self,
        user: Option<&str>,
        status: Option<&str>,
        after: i64,
        limit: u64,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut query = notifications::Entity::find()
            .filter(C::Id.gt(after))
            .order_by_asc(C::Id)
            .limit(limit);
        if let Some(user) = user {
            query = query.filter(C::User.eq(user));
        }
        if let Some(status) = status {
            query = query.filter(C::Status.eq(status));
        }
        Ok(query
            .all(self.connection())
            .await?
            .into_iter()
            .map(from_row)
            .collect())
    }

    /// Up to `limit` notifications due at `now` and held by no sender, oldest due first.
    pub async fn due_notifications(
        &self,
        now: u64,
        limit: u64,
    ) -> Result<Vec<Notification>, StoreError> {
        Ok(notifications::Entity::find()
            .filter(C::Status.is_in([PENDING, HELD]))
            .filter(C::DueAt.lte(now as i64))
            .filter(C::LeaseUntil.lte(now as i64))
            .order_by_asc(C::DueAt)
            .order_by_asc(C::Id)
            .limit(limit)
            .all(self.connection())
            .await?
            .into_iter()
            .map(from_row)
            .collect())
    }

    /// Takes `notification` (as read by `due_notifications`) for `lease_ms` from `now`: false
    /// if another sender took it, or it changed, since.
    pub async fn claim_notification(
        &self,
        notification: &Notification,
        now: u64,
        lease_ms: u64,
    ) -> Result<bool, StoreError> {
        let claimed = notifications::Entity::update_many()
            .col_expr(C::LeaseUntil, Expr::value((now + lease_ms) as i64))
            .filter(C::Id.eq(notification.id))
            .filter(C::LeaseUntil.eq(notification.lease_until as i64))
            .filter(C::Status.is_in([PENDING, HELD]))
            .exec(self.connection())
            .await?;
        Ok(claimed.rows_affected == 1)
    }

    /// Records how delivering notification `id`, claimed until `claimed`, went, and releases
    /// its lease: false if the claim passed to another sender meanwhile.
    pub async fn record_delivery(
        &self,
        id: i64,
        claimed: u64,
        delivery: &Delivery,
    ) -> Result<bool, StoreError> {
        use sea_orm::sea_query::ExprTrait;
        let attempted = || Expr::col(C::Attempts).add(1);
        let mut update = notifications::Entity::update_many()
            .col_expr(C::LeaseUntil, Expr::value(0i64))
            .filter(C::Id.eq(id))
            .filter(C::LeaseUntil.eq(claimed as i64));
        update = match delivery {
            Delivery::Sent {
                destination,
                provider_ref,
                at,
            } => update
                .col_expr(C::Status, Expr::value(SENT))
                .col_expr(C::Attempts, attempted())
                .col_expr(C::SentAt, Expr::value(*at as i64))
                .col_expr(C::Destination, Expr::value(destination.clone()))
                .col_expr(C::ProviderRef, Expr::value(provider_ref.clone()))
                .col_expr(C::LastError, Expr::value(Option::<String>::None)),
            Delivery::Retry { error, due_at } => update
                .col_expr(C::Status, Expr::value(PENDING))
                .col_expr(C::Attempts, attempted())
                .col_expr(C::DueAt, Expr::value(*due_at as i64))
                .col_expr(C::LastError, Expr::value(error.clone())),
            Delivery::Deferred { error, due_at } => update
                .col_expr(C::Status, Expr::value(PENDING))
                .col_expr(C::DueAt, Expr::value(*due_at as i64))
                .col_expr(C::LastError, Expr::value(error.clone())),
            Delivery::Held { until } => update
                .col_expr(C::Status, Expr::value(HELD))
                .col_expr(C::DueAt, Expr::value(*until as i64)),
            Delivery::Failed {
                error,
                attempted: tried,
            } => {
                let attempts = if *tried {
                    attempted()
                } else {
                    Expr::col(C::Attempts)
                };
                update
                    .col_expr(C::Status, Expr::value(FAILED))
                    .col_expr(C::Attempts, attempts)
                    .col_expr(C::LastError, Expr::value(error.clone()))
            }
        };
        Ok(update.exec(self.connection()).await?.rows_affected == 1)
    }
}

fn from_row(n: notifications::Model) -> Notification {
    Notification {
        id: n.id,
        user: n.user,
        channel: n.channel,
        to: n.recipient,
        subject: n.subject,
        text: n.text,
        dedupe_key: n.dedupe_key,
        task_id: n.task_id,
        status: n.status,
        attempts: n.attempts.max(0) as u32,
        due_at: n.due_at.max(0) as u64,
        lease_until: n.lease_until.max(0) as u64,
        last_error: n.last_error,
        sent_at: n.sent_at.map(|t| t.max(0) as u64),
        destination: n.destination,
        provider_ref: n.provider_ref,
        created_at: n.created_at.max(0) as u64,
    }
}

/// The row of a notification caused by message `cause` at `at` (the message's time).
pub(super) fn notification_row(
    cause: &str,
    draft: &NotificationDraft,
    at: u64,
) -> notifications::ActiveModel {
    notifications::ActiveModel {
        user: Set(draft.user.clone()),
        channel: Set(draft.channel.clone()),
        recipient: Set(draft.to.clone()),
        subject: Set(draft.subject.clone()),
        text: Set(draft.text.clone()),
        dedupe_key: Set(draft.dedupe_key.clone()),
        status: Set("pending".into()),
        cause: Set(cause.to_owned()),
        created_at: Set(at as i64),
        task_id: Set(draft.task_id.clone()),
        attempts: Set(0),
        due_at: Set(at as i64),
        lease_until: Set(0),
        ..Default::default()
    }
}
