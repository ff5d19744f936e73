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

/// Radicale (a CalDAV server, from PyPI) on loopback, port 0, printing its port.
const RADICALE: &str = r#"
import sys, socketserver, wsgiref.simple_server
import radicale, radicale.config

configuration = radicale.config.load()
configuration.update({"auth": {"type": "none"}, "rights": {"type": "owner_only"},
                      "storage": {"filesystem_folder": sys.argv[1]}}, "test", privileged=True)
app = radicale.Application(configuration)

class Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True

class Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, server_class=Server,
                                           handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_caldav_bookings_overlap_neither_each_other_nor_the_servers_own_events() {
    use actors::domain::calendar::Request;
    use actors::providers::Limit;
    use actors::providers::caldav::{CalDav, CalDavConfig};
    const REQUESTS: u64 = 100;
    const QUARTER: u64 = 15 * 60_000;
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dav = tempfile::tempdir().unwrap();
    let server = PythonServer::start(RADICALE, &[dav.path().as_os_str()], "radicale").await;
    let port = server.port;
    let config = CalDavConfig {
        url: format!("http://127.0.0.1:{port}/switchyard/"),
        username: "switchyard".into(),
        password: gateways::channels::Secret("unused".into()),
        limit: Limit {
            per_second: 1000,
            burst: 50,
            queue: 1000,
        },
    };
    let caldav = CalDav::new(&config, reqwest::Client::new());
    // Someone else's event, already on the calendar.
    let day = 1_795_500_000_000;
    let dentist = Request {
        request_id: "dentist-outside".into(),
        title: "dentist".into(),
        start: day + 40 * QUARTER,
        end: day + 42 * QUARTER,
    };
    caldav.book(CALENDAR, &dentist).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) =
        in_process_with(dir.path(), |c| c.calendar.caldav = Some(config)).await;
    let client = Client::new(dir.path(), http, grpc).await;
    let store = state_store(dir.path()).await;
    // First, alone: the dentist's slot, taken on the server only.
    let over = book_requested(REQUESTS, (dentist.start, dentist.end));
    assert_eq!(client.post(&over).await, Some(202));
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.calendar_decisions(CALENDAR).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never decided");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let posts = (0..REQUESTS).map(|i| {
        let client = &client;
        async move { client.post(&book_requested(i, slot(i))).await }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == Some(202)), "{statuses:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let decisions = loop {
        let decisions = store.calendar_decisions(CALENDAR).await.unwrap();
        if decisions.len() as u64 == REQUESTS + 1 {
            break decisions;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {REQUESTS} and one decided",
            decisions.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let booked = store.bookings(CALENDAR, None).await.unwrap();
    let overlaps = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
    for pair in booked.windows(2) {
        assert!(pair[0].end <= pair[1].start, "double-booked: {pair:?}");
    }
    for b in &booked {
        assert!(
            !overlaps((b.start, b.end), (dentist.start, dentist.end)),
            "{b:?} over the dentist"
        );
    }
    use actors::domain::calendar::Decision;
    let blocked_by_dentist = decisions
        .iter()
        .filter(|(_, d)| *d == Decision::Conflict("dentist-outside".into()))
        .count();
    assert!(blocked_by_dentist > 0, "nothing met the outside event");

    // The server holds exactly the booked slots, besides its own event.
    let on_server = |caldav: CalDav| async move {
        let mut uids: Vec<String> = caldav
            .busy(CALENDAR, day - 86_400_000, day + 2 * 86_400_000)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.uid)
            .collect();
        uids.sort();
        uids
    };
    let mut expected: Vec<String> = booked.iter().map(|b| b.request_id.clone()).collect();
    expected.push(dentist.request_id.clone());
    expected.sort();
    assert_eq!(on_server(caldav.clone()).await, expected);

    // A request resent under a new message id changes nothing, here or there.
    let first = booked[0].request_id.clone();
    let i: u64 = first.trim_start_matches("req-").parse().unwrap();
    let mut resent = book_requested(i, slot(i));
    resent["id"] = json!("book-resent");
    assert_eq!(client.post(&resent).await, Some(202));
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.outcome("book-resent").await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resend was never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.calendar_decisions(CALENDAR).await.unwrap(), decisions);
    assert_eq!(on_server(caldav).await, expected);
    node.shutdown().await.unwrap();
}
