//! Calendars: every request decided, the booked ones being the calendar's bookings.

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::batch::Changes;
use super::entities::calendar_requests;
use super::{Applied, AppliedMessage, Store, StoreError};
use crate::domain::calendar::{Calendar, Decision, Request};

impl Store {
    /// Calendar `calendar_id` as its mailbox knows it: its bookings and every decision made.
    pub async fn calendar(&self, calendar_id: &str) -> Result<Calendar, StoreError> {
        use calendar_requests::Column as C;
        let rows = calendar_requests::Entity::find()
            .filter(C::CalendarId.eq(calendar_id))
            .all(self.connection())
            .await?;
        let decided = rows
            .iter()
            .map(|r| (r.request_id.clone(), decision_of(r)))
            .collect::<Vec<_>>();
        let bookings = rows.into_iter().filter(|r| r.booked).map(request_of);
        Ok(Calendar::from_parts(bookings, decided))
    }

    /// The bookings of calendar `calendar_id` in time order; with `user`, only theirs.
    pub async fn bookings(
        &self,
        calendar_id: &str,
        user: Option<&str>,
    ) -> Result<Vec<Request>, StoreError> {
        use calendar_requests::Column as C;
        let mut query = calendar_requests::Entity::find()
            .filter(C::CalendarId.eq(calendar_id))
            .filter(C::Booked.eq(true));
        if let Some(user) = user {
            query = query.filter(C::User.eq(user));
        }
        Ok(query
            .order_by_asc(C::Start)
            .all(self.connection())
            .await?
            .into_iter()
            .map(request_of)
            .collect())
    }

    /// Every request decided for calendar `calendar_id`, with its decision.
    pub async fn calendar_decisions(
        &self,
        calendar_id: &str,
    ) -> Result<Vec<(Request, Decision)>, StoreError> {
        use calendar_requests::Column as C;
        Ok(calendar_requests::Entity::find()
            .filter(C::CalendarId.eq(calendar_id))
            .order_by_asc(C::Start)
            .all(self.connection())
            .await?
            .into_iter()
            .map(|r| (decision_of(&r), r))
            .map(|(d, r)| (request_of(r), d))
            .collect())
    }

    /// Persists the decision of `request` on `calendar_id` as the effect of `message`; a
    /// message that decided nothing new (a resend) writes only its activity row.
    pub async fn save_calendar_decision(
        &self,
        message: &AppliedMessage<'_>,
        calendar_id: &str,
        decided: Option<(&Request, &Decision)>,
    ) -> Result<Applied, StoreError> {
        let mut changes = Changes::new(message.id, message.activity());
        changes.calendar_request =
            decided.map(|(request, decision)| calendar_requests::ActiveModel {
                calendar_id: Set(calendar_id.to_owned()),
                request_id: Set(request.request_id.clone()),
                user: Set(message.user.to_owned()),
                title: Set(request.title.clone()),
                start: Set(request.start as i64),
                end: Set(request.end as i64),
                booked: Set(*decision == Decision::Booked),
                conflicts_with: Set(match decision {
                    Decision::Conflict(other) => Some(other.clone()),
                    Decision::Booked => None,
                }),
            });
        self.writes.write(changes).await
    }
}

fn decision_of(row: &calendar_requests::Model) -> Decision {
    match (&row.conflicts_with, row.booked) {
        (_, true) => Decision::Booked,
        (Some(other), false) => Decision::Conflict(other.clone()),
        (None, false) => Decision::Conflict(String::new()),
    }
}

fn request_of(row: calendar_requests::Model) -> Request {
    Request {
        request_id: row.request_id,
        title: row.title,
        start: row.start.max(0) as u64,
        end: row.end.max(0) as u64,
    }
}
