//! A calendar's mailbox: books slots one request at a time, so no two bookings overlap, and
//! tells each request's outcome (`calendar.booked` or `calendar.conflict`).
//!
//! Durability: the outcome is published before the decision is recorded, under an id derived
//! from the request, so a crash between the two decides the same again and publishes the same
//! message, which this mailbox then finds applied; a resent request is decided as before and
//! not told again.
//!
//! With a CalDAV backend, the server's events count as taken time too, and a booking is
//! written to the server (as an event named by the request) before it is told: a write resent
//! after a crash finds its own event and goes on.

use schemas::{Envelope, Message};

use crate::NodeContext;
use crate::domain::Effect;
use crate::domain::Refusal;
use crate::domain::calendar::{Busy, Calendar, Decision, Request};
use crate::providers::SendError;
use crate::providers::caldav::CalDav;
use crate::shells::entity::{ApplyError, Kind, applied_message, misrouted};
use crate::shells::provider::{CallError, ProviderHandle};
use crate::shells::relay::derived_id;
use crate::store::{Applied, Store, StoreError, now_ms};

/// A CalDAV server holding the calendars, every call to it through its provider mailbox.
#[derive(Clone)]
pub struct CalDavBackend {
    /// The server's client.
    pub client: CalDav,
    /// The mailbox its calls go through.
    pub mailbox: ProviderHandle,
}

impl CalDavBackend {
    /// The server's events overlapping `request`'s slot on `calendar_id`.
    async fn busy(&self, calendar_id: &str, request: &Request) -> Result<Vec<Busy>, ApplyError> {
        let (client, calendar_id) = (self.client.clone(), calendar_id.to_owned());
        let (start, end) = (request.start, request.end);
        let answer = self
            .mailbox
            .run(move || Box::pin(async move { client.busy(&calendar_id, start, end).await }))
            .await;
        settle(answer)
    }

    /// Writes the booking of `request` to `calendar_id` on the server.
    async fn book(&self, calendar_id: &str, request: &Request) -> Result<(), ApplyError> {
        let (client, calendar_id, request) =
            (self.client.clone(), calendar_id.to_owned(), request.clone());
        let answer = self
            .mailbox
            .run(move || Box::pin(async move { client.book(&calendar_id, &request).await }))
            .await;
        settle(answer)
    }
}

/// A server's answer as the mailbox takes it: refused for good, or to be tried again.
fn settle<T>(answer: Result<Result<T, SendError>, CallError>) -> Result<T, ApplyError> {
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(SendError::Permanent(reason))) => Err(ApplyError::Refused(Refusal(format!(
            "calendar.book_requested: the calendar server refused: {reason}"
        )))),
        Ok(Err(SendError::Transient(reason))) => Err(ApplyError::Store(StoreError(reason))),
        Err(error) => Err(ApplyError::Store(StoreError(error.to_string()))),
    }
}

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
        let calendar_id = &requested.calendar_id;
        let busy = match &ctx.caldav {
            // A request decided before is answered from the decision: nothing to look up.
            Some(backend) if !calendar.decided(&request.request_id) => {
                backend.busy(calendar_id, &request).await?
            }
            _ => Vec::new(),
        };
        let step = calendar
            .book_around(request.clone(), &busy)
            .map_err(ApplyError::Refused)?;
        if let Some(backend) = &ctx.caldav
            && step.fresh
            && step.decision == Decision::Booked
        {
            backend.book(calendar_id, &request).await?;
        }
        // A resent request was told when it was decided: recorded only after that publish.
        if step.fresh {
            tell(
                ctx,
                envelope,
                calendar_id,
                &request.request_id,
                &step.decision,
            )
            .await?;
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
