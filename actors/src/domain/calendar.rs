//! A calendar's bookings: a request for a time slot is booked only if it overlaps no booking,
//! else answered with the booking it conflicts with; a request decided before is answered the
//! same again and changes nothing.

use std::collections::{BTreeMap, HashMap};

use super::Refusal;

/// A request for the slot `[start, end)` (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The requester's id for it: a resent request has the same one.
    pub request_id: String,
    /// What the slot is for.
    pub title: String,
    /// Its first millisecond.
    pub start: u64,
    /// The millisecond after its last.
    pub end: u64,
}

/// How a request was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Its slot is the requester's.
    Booked,
    /// Its slot overlaps the booking of this request id.
    Conflict(String),
}

/// Time already taken on the calendar by someone other than this writer (an event on its
/// CalDAV calendar, say), `[start, end)` in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The event's id (its iCalendar UID).
    pub uid: String,
    /// Its first millisecond.
    pub start: u64,
    /// The millisecond after its last.
    pub end: u64,
}

/// A calendar's bookings and every decision made for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    /// The booked requests by start; no two overlap.
    bookings: BTreeMap<u64, Request>,
    /// Every request decided, by id.
    decided: HashMap<String, Decision>,
}

/// What `book` did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How it was decided.
    pub decision: Decision,
    /// Whether it was decided just now (`false`: a resent request, answered as before).
    pub fresh: bool,
}

impl Calendar {
    /// A calendar holding `bookings`, which must not overlap, and `decided`.
    pub fn from_parts(
        bookings: impl IntoIterator<Item = Request>,
        decided: impl IntoIterator<Item = (String, Decision)>,
    ) -> Calendar {
        Calendar {
            bookings: bookings.into_iter().map(|b| (b.start, b)).collect(),
            decided: decided.into_iter().collect(),
        }
    }

    /// The bookings in time order.
    pub fn bookings(&self) -> impl Iterator<Item = &Request> {
        self.bookings.values()
    }

    /// The booking `[start, end)` would overlap, if any. Bookings do not overlap each other,
    /// so only the last one starting before `end` can.
    fn overlapping(&self, start: u64, end: u64) -> Option<&Request> {
        self.bookings
            .range(..end)
            .next_back()
            .map(|(_, booking)| booking)
            .filter(|booking| booking.end > start)
    }

    /// Decides `request`: booked if its slot is free, else a conflict naming the booking in
    /// the way; a request decided before is answered as then.
    pub fn book(&mut self, request: Request) -> Result<Step, Refusal> {
        self.book_around(request, &[])
    }

    /// Whether request `request_id` was decided before.
    pub fn decided(&self, request_id: &str) -> bool {
        self.decided.contains_key(request_id)
    }

    /// `book`, with `busy` time taken by others as well: a request overlapping it is a
    /// conflict naming that event. An event that is this calendar's own booking is not busy.
    pub fn book_around(&mut self, request: Request, busy: &[Busy]) -> Result<Step, Refusal> {
        if let Some(decision) = self.decided.get(&request.request_id) {
            return Ok(Step {
                decision: decision.clone(),
                fresh: false,
            });
        }
        if request.end <= request.start {
            return Err(Refusal(format!(
                "calendar.book_requested: `{}` ends ({}) before it starts ({})",
                request.request_id, request.end, request.start
            )));
        }
        let taken = busy.iter().find(|b| {
            b.start < request.end
                && request.start < b.end
                && b.uid != request.request_id
                && self.decided.get(&b.uid) != Some(&Decision::Booked)
        });
        let decision = match (self.overlapping(request.start, request.end), taken) {
            (Some(booking), _) => Decision::Conflict(booking.request_id.clone()),
            (None, Some(event)) => Decision::Conflict(event.uid.clone()),
            (None, None) => {
                self.bookings.insert(request.start, request.clone());
                Decision::Booked
            }
        };
        self.decided
            .insert(request.request_id.clone(), decision.clone());
        Ok(Step {
            decision,
            fresh: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn request(id: &str, start: u64, end: u64) -> Request {
        Request {
            request_id: id.into(),
            title: format!("slot {id}"),
            start,
            end,
        }
    }

    #[test]
    fn overlaps_conflict_and_touching_slots_do_not() {
        let mut calendar = Calendar::default();
        assert_eq!(
            calendar.book(request("a", 10, 20)).unwrap().decision,
            Decision::Booked
        );
        assert_eq!(
            calendar.book(request("b", 15, 25)).unwrap().decision,
            Decision::Conflict("a".into())
        );
        assert_eq!(
            calendar.book(request("c", 20, 30)).unwrap().decision,
            Decision::Booked
        );
        assert_eq!(
            calendar.book(request("d", 0, 10)).unwrap().decision,
            Decision::Booked
        );
        assert_eq!(
            calendar.book(request("e", 5, 35)).unwrap().decision,
            Decision::Conflict("c".into()),
            "the last booking starting before its end is named"
        );
        assert!(calendar.book(request("f", 9, 9)).is_err(), "an empty slot");
    }

    #[test]
    fn a_resent_request_is_answered_as_before() {
        let mut calendar = Calendar::default();
        calendar.book(request("a", 10, 20)).unwrap();
        let again = calendar.book(request("a", 10, 20)).unwrap();
        assert_eq!((again.decision, again.fresh), (Decision::Booked, false));
        let before = calendar.clone();
        // Even with another slot: the id was decided.
        calendar.book(request("a", 50, 60)).unwrap();
        assert_eq!(calendar, before);
    }

    fn requests() -> impl Strategy<Value = Vec<Request>> {
        prop::collection::vec((0u8..30, 0u64..200, 1u64..40), 1..60).prop_map(|raw| {
            raw.into_iter()
                .map(|(id, start, length)| request(&format!("r{id}"), start, start + length))
                .collect()
        })
    }

    proptest! {
        /// No sequence of requests, resends among them, books two overlapping slots; each
        /// fresh request is booked exactly when it overlaps nothing booked before it.
        #[test]
        fn no_sequence_double_books(sequence in requests()) {
            let mut calendar = Calendar::default();
            let mut booked: Vec<Request> = Vec::new();
            for request in sequence {
                let step = calendar.book(request.clone()).unwrap();
                if step.fresh {
                    let free = booked.iter().all(|b| b.end <= request.start || request.end <= b.start);
                    prop_assert_eq!(step.decision == Decision::Booked, free);
                    if free {
                        booked.push(request);
                    }
                }
            }
            let all: Vec<&Request> = calendar.bookings().collect();
            for pair in all.windows(2) {
                prop_assert!(pair[0].end <= pair[1].start, "{:?}", pair);
            }
            prop_assert_eq!(all.len(), booked.len());
        }

        /// Beside others' events, no booking overlaps one of them either.
        #[test]
        fn nothing_is_booked_over_others_events(
            sequence in requests(),
            events in prop::collection::vec((0u64..200, 1u64..40), 0..8),
        ) {
            let busy: Vec<Busy> = events
                .iter()
                .enumerate()
                .map(|(i, (start, length))| Busy { uid: format!("outside-{i}"), start: *start, end: start + length })
                .collect();
            let mut calendar = Calendar::default();
            for request in sequence {
                calendar.book_around(request, &busy).unwrap();
            }
            for booking in calendar.bookings() {
                for event in &busy {
                    prop_assert!(booking.end <= event.start || event.end <= booking.start,
                        "{:?} over {:?}", booking, event);
                }
            }
        }
    }
}
