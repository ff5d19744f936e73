//! A calendar's mailbox: books slots one request at a time, so no two bookings overlap, and
//! tells each request's outcome (`calendar.booked` or `calendar.conflict`).
//!
//! Durability: the outcome is published before the decision is recorded, under an id derived
//! from the request, so a crash between the two decides the same again and publishes the same
//! message, which this mailbox then finds applied; a resent request is decided as before and
//! not told again.

use schemas::{Envelope, Message};

use crate::NodeContext;
use crate::domain::Effect;
use crate::domain::calendar::{Calendar, Decision, Request};
use crate::shells::entity::{ApplyError, Kind, applied_message, misrouted};
use crate::shells::relay::derived_id;
use crate::store::{Applied, Store, StoreError, now_ms};

/// Calendars: `domain::calendar` per `calendar/<calendar_id>` key.
pub struct CalendarMailbox;

impl Kind for CalendarMailbox {
    type State = Calendar;

    async fn load(store: &Store, id: &str) -> Result<Option<Calendar>, StoreError> {
        // Every calendar exists: one never asked for is empty.
        store.calendar(id).await.map(Some)
    }

    async fn apply(
        ctx: &NodeContext,
        state: Option<&Calendar>,
        envelope: &Envelope,
    ) -> Result<(Calendar, Vec<Effect>, Applied), ApplyError> {
        let mut calendar = state.cloned().unwrap_or_default();
        let message = applied_message(envelope);
        let requested = match &envelope.message {
            Message::CalendarBookRequested(m) => m,
            // Its own outcomes come back to it: recorded in the activity log, nothing more.
            Message::CalendarBooked(schemas::CalendarBooked { calendar_id, .. })
            | Message::CalendarConflict(schemas::CalendarConflict { calendar_id, .. }) => {
                let applied = ctx
                    .store
                    .save_calendar_decision(&message, calendar_id, None)
                    .await?;
                return Ok((calendar, Vec::new(), applied));
            }
            _ => return Err(misrouted(envelope)),
        };
        let request = Request {
            request_id: requested.request_id.clone(),
            title: requested.title.clone(),
            start: requested.start,
            end: requested.end,
        };
        let step = calendar
            .book(request.clone())
            .map_err(ApplyError::Refused)?;
        // A resent request was told when it was decided: recorded only after that publish.
        if step.fresh {
            let (calendar_id, request_id) = (&requested.calendar_id, &request.request_id);
            tell(ctx, envelope, calendar_id, request_id, &step.decision).await?;
        }
        let decided = step.fresh.then_some((&request, &step.decision));
        let applied = ctx
            .store
            .save_calendar_decision(&message, &requested.calendar_id, decided)
            .await?;
        Ok((calendar, Vec::new(), applied))
    }

    fn carry_out(_ctx: &NodeContext, _state: &Calendar, _effects: Vec<Effect>) {}
}

/// Publishes how request `request_id` was decided, under an id derived from it.
async fn tell(
    ctx: &NodeContext,
    cause: &Envelope,
    calendar_id: &str,
    request_id: &str,
    decision: &Decision,
) -> Result<(), ApplyError> {
    let (calendar_id, request_id) = (calendar_id.to_owned(), request_id.to_owned());
    let message = match decision {
        Decision::Booked => Message::CalendarBooked(schemas::CalendarBooked {
            calendar_id: calendar_id.clone(),
            request_id: request_id.clone(),
        }),
        Decision::Conflict(other) => Message::CalendarConflict(schemas::CalendarConflict {
            calendar_id: calendar_id.clone(),
            request_id: request_id.clone(),
            conflicts_with: other.clone(),
        }),
    };
    let mut outcome = Envelope::new(
        derived_id("decided", &[&calendar_id, &request_id]),
        format!("node/{}/calendars", ctx.node_id),
        now_ms(),
        cause.user.clone(),
        message,
    );
    outcome.corr = cause.corr.clone().or_else(|| Some(request_id.clone()));
    outcome.cause = Some(cause.id.clone());
    outcome.trace = crate::trace::traceparent(&tracing::Span::current()).or(cause.trace.clone());
    crate::publish(ctx.bus.as_ref(), &outcome)
        .await
        .map(|_| ())
        .map_err(|e| ApplyError::Store(StoreError(format!("publishing its outcome: {e}"))))
}
