//! The calendar writer: many producers ask one calendar for overlapping slots at once; its
//! mailbox books exactly the requests that overlap nothing booked before them, tells each
//! outcome once, and answers a resent request as before.

use std::time::Duration;

use schemas::Message;
use schemas::proto::ListBookingsRequest;
use schemas::proto::calendar_client::CalendarClient;
use serde_json::json;

use crate::harness::*;

const CALENDAR: &str = "family";

/// Request `i`: a slot of 30 to 90 minutes somewhere in one day, many of them overlapping.
fn slot(i: u64) -> (u64, u64) {
    let start = 1_795_500_000_000 + (i * 37 % 96) * 15 * 60_000;
    (start, start + (30 + i * 13 % 61) * 60_000)
}

fn book_requested(i: u64, slot: (u64, u64)) -> serde_json::Value {
    event(
        &format!("book-{i}"),
        "calendar.book_requested",
        &format!("calendar/{CALENDAR}"),
        json!({"calendar_id": CALENDAR, "request_id": format!("req-{i}"),
               "title": format!("slot {i}"), "start": slot.0, "end": slot.1}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_book_only_free_slots_and_a_resend_changes_nothing() {
    const REQUESTS: u64 = 100;
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) = in_process(dir.path()).await;
    let client = Client::new(dir.path(), http, grpc).await;
    let posts = (0..REQUESTS).map(|i| {
        let client = &client;
        async move { client.post(&book_requested(i, slot(i))).await }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == Some(202)), "{statuses:?}");

    let store = state_store(dir.path()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let decisions = loop {
        let decisions = store.calendar_decisions(CALENDAR).await.unwrap();
        if decisions.len() as u64 == REQUESTS {
            break decisions;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {REQUESTS} decided",
            decisions.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let booked = store.bookings(CALENDAR, None).await.unwrap();
    for pair in booked.windows(2) {
        assert!(pair[0].end <= pair[1].start, "double-booked: {pair:?}");
    }
    let overlaps = |a: &actors::domain::calendar::Request,
                    b: &actors::domain::calendar::Request| {
        a.start < b.end && b.start < a.end
    };
    use actors::domain::calendar::Decision;
    for (request, decision) in &decisions {
        if let Decision::Conflict(other) = decision {
            let blocker = booked
                .iter()
                .find(|b| &b.request_id == other)
                .unwrap_or_else(|| {
                    panic!("{} conflicts with unbooked {other}", request.request_id)
                });
            assert!(overlaps(request, blocker), "{request:?} and {blocker:?}");
        }
    }
    assert!(
        booked.len() > 5 && booked.len() < 90,
        "{} booked",
        booked.len()
    );

    // Over gRPC: the bookings in time order for their user (and the admin), none for another.
    let mut calendar = CalendarClient::new(channel(&client.grpc_url).await);
    let listed = |token: &str| {
        let mut request = tonic::Request::new(ListBookingsRequest {
            calendar_id: CALENDAR.into(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let over_grpc: Vec<(String, u64, u64)> = calendar
        .list_bookings(listed(&client.token))
        .await
        .unwrap()
        .into_inner()
        .bookings
        .into_iter()
        .map(|b| (b.request_id, b.start, b.end))
        .collect();
    let stored: Vec<(String, u64, u64)> = booked
        .iter()
        .map(|b| (b.request_id.clone(), b.start, b.end))
        .collect();
    assert_eq!(over_grpc, stored);
    let other = actors::credentials::new_token().unwrap();
    store
        .add_key(&other, "u2", actors::credentials::Role::User, None)
        .await
        .unwrap();
    let theirs = calendar.list_bookings(listed(&other)).await.unwrap();
    assert!(
        theirs.into_inner().bookings.is_empty(),
        "another user's bookings"
    );

    // Each outcome is told once on the bus.
    let outcomes = || async {
        let mut replay = node
            .bus()
            .replay(schemas::EVENTS_TOPIC, broker_adapters::ReplayFrom::Start)
            .await
            .unwrap();
        let (mut booked, mut conflicts) = (0, 0);
        while let Some(record) = replay.next().await.unwrap() {
            match schemas::decode(&record.payload).unwrap().message {
                Message::CalendarBooked(_) => booked += 1,
                Message::CalendarConflict(_) => conflicts += 1,
                _ => {}
            }
        }
        (booked, conflicts)
    };
    let (told_booked, told_conflicts) = outcomes().await;
    assert_eq!(
        (told_booked, told_booked + told_conflicts),
        (booked.len(), REQUESTS as usize)
    );

    // Resent requests (one even for another slot) are answered as before and change nothing.
    let entity = format!("calendar/{CALENDAR}");
    let applied_before = store.activity(&entity).await.unwrap().len();
    for i in 0..10 {
        let resend = book_requested(i, if i == 0 { (1, 2) } else { slot(i) });
        let mut resend = resend;
        resend["id"] = json!(format!("resend-{i}"));
        assert_eq!(client.post(&resend).await, Some(202));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.activity(&entity).await.unwrap().len() < applied_before + 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "resends not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.calendar_decisions(CALENDAR).await.unwrap(), decisions);
    assert_eq!(store.bookings(CALENDAR, None).await.unwrap(), booked);
    assert_eq!(outcomes().await, (told_booked, told_conflicts), "told once");
    node.shutdown().await.unwrap();
}
