//! The HTTP routes without a socket (`oneshot`): ingest, content types, keys, probes.

use std::sync::Arc;
use std::time::Duration;

use actors::credentials::{Role, new_token};
use actors::{NodeApi, NodeContext, Ownership};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use broker_adapters::{Bus, EmbeddedBus, ReplayFrom};
use gateways::{Auth, GatewayContext, app};
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    _store: actors::testkit::TempStore,
    ctx: GatewayContext,
    admin: String,
    user: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(&dir.path().join("bus.sqlite"))
        .await
        .unwrap();
    bus.create_topic(schemas::EVENTS_TOPIC, 4).await.unwrap();
    let temp = actors::testkit::sqlite().await;
    let store = temp.store.clone();
    let (admin, user) = (new_token().unwrap(), new_token().unwrap());
    store
        .add_key(&admin, "admin", Role::Admin, None)
        .await
        .unwrap();
    store.add_key(&user, "u2", Role::User, None).await.unwrap();
    let node = NodeContext {
        store: store.clone(),
        bus: Arc::new(bus),
        node_id: "n1".into(),
        root: "node".into(),
        tree: Default::default(),
        partitions: 8,
        passivate_after: Duration::from_secs(60),
        assign_interval: Duration::from_secs(5),
        ownership: Ownership::default(),
        agent_timeout: Duration::from_secs(30),
        agent_signals: Default::default(),
        outcomes: Default::default(),
        cascades: Default::default(),
        assign_request: Default::default(),
        channels: Default::default(),
        notifier: Default::default(),
        budgets: Default::default(),
        clock: Default::default(),
        automation_grace: Duration::from_secs(60),
        caldav: None,
        models: Default::default(),
    };
    let ctx = GatewayContext {
        auth: Auth::new(store),
        node: NodeApi::new(&node),
        tree: supervisor::Tree::default(),
        root: "node".into(),
        node_id: "n1".into(),
        channels: Arc::new(gateways::channels::Channels::new(&Default::default()).unwrap()),
        http: Default::default(),
    };
    Fixture {
        _dir: dir,
        _store: temp,
        ctx,
        admin,
        user,
    }
}

async fn post(
    ctx: &GatewayContext,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let request = Request::post("/v1/events")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let response = app(ctx.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn a_cbor_envelope_from_an_outside_client_lands_on_the_bus_with_cloudevents_headers() {
    let f = fixture().await;
    let cbor = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/tests/vectors/outside/task_created.cbor"
    ))
    .unwrap();
    let (status, answer) = post(&f.ctx, &f.admin, "application/cbor", cbor).await;
    assert_eq!(
        (status, answer["id"].as_str()),
        (
            StatusCode::ACCEPTED,
            Some("0192f0c8-0000-7000-8000-000000000002")
        )
    );
    let mut replay = f
        .ctx
        .node
        .bus()
        .replay(schemas::EVENTS_TOPIC, ReplayFrom::Start)
        .await
        .unwrap();
    let record = replay.next().await.unwrap().unwrap();
    assert_eq!(record.key, "task/t1");
    assert_eq!(record.header("ce_type"), Some("task.created"));
    assert_eq!(
        record.header("ce_id"),
        Some("0192f0c8-0000-7000-8000-000000000002")
    );
    assert_eq!(record.header("content-type"), Some("application/cbor"));
    assert_eq!(schemas::decode(&record.payload).unwrap().user, "u1");
}

#[tokio::test]
async fn json_envelopes_get_defaults_and_user_keys_stay_in_their_lane() {
    let f = fixture().await;
    let body = |user: &str| {
        serde_json::to_vec(&serde_json::json!({
            "type": "agent.heartbeat", "key": "agent/a1", "user": user, "body": {"agent_id": "a1"}
        }))
        .unwrap()
    };
    let (status, answer) = post(
        &f.ctx,
        &f.user,
        "application/json; charset=utf-8",
        body("u2"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        answer["id"].as_str().map(str::len),
        Some(36),
        "a UUIDv7 was filled in"
    );
    let (status, answer) = post(&f.ctx, &f.user, "application/json", body("u1")).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("this key may not publish for user `u1`")
        )
    );
    let (status, _) = post(&f.ctx, &f.admin, "application/json", body("u1")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn probes_answer_without_a_key() {
    let f = fixture().await;
    for path in ["/health", "/ready"] {
        let response = app(f.ctx.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn cluster_status_and_peers_list_live_members_for_the_admin_key() {
    let f = fixture().await;
    let now = actors::store::now_ms();
    let member = |node_id: &str, partitions: Vec<u32>, seen_at: u64| actors::store::Member {
        node_id: node_id.into(),
        instance: format!("{node_id}-instance"),
        http: "127.0.0.1:1".into(),
        grpc: "127.0.0.1:2".into(),
        partitions,
        started_at: now - 60_000,
        seen_at,
    };
    let store = f.ctx.node.store();
    store
        .record_member(&member("n1", vec![0, 1], now))
        .await
        .unwrap();
    store
        .record_member(&member("n2", vec![2], now))
        .await
        .unwrap();
    store
        .record_member(&member("gone", vec![3], now - 60_000))
        .await
        .unwrap();
    let get = |token: &str| {
        Request::get("/cluster/status")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let refused = app(f.ctx.clone()).oneshot(get(&f.user)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let response = app(f.ctx.clone()).oneshot(get(&f.admin)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let members: Vec<(&str, bool, Vec<u64>)> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let partitions = m["partitions"].as_array().unwrap();
            (
                m["node_id"].as_str().unwrap(),
                m["this_node"].as_bool().unwrap(),
                partitions.iter().map(|p| p.as_u64().unwrap()).collect(),
            )
        })
        .collect();
    assert_eq!(members, [("n1", true, vec![0, 1]), ("n2", false, vec![2])]);
    assert_eq!(status["partitions"], 4);
    assert_eq!(
        status["unowned"],
        serde_json::json!([3]),
        "a stale member owns nothing"
    );

    let peers_of = |token: Option<&str>, path: &str| {
        let mut request = Request::get(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    let response = app(f.ctx.clone())
        .oneshot(peers_of(Some(&f.admin), "/cluster/peers"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let peers: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let ids: Vec<&str> = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n2"], "live members other than this node");
    for (token, path, want) in [
        (
            Some(f.user.as_str()),
            "/cluster/peers",
            StatusCode::FORBIDDEN,
        ),
        (None, "/cluster/peers", StatusCode::UNAUTHORIZED),
        (None, "/metrics", StatusCode::UNAUTHORIZED),
    ] {
        let response = app(f.ctx.clone())
            .oneshot(peers_of(token, path))
            .await
            .unwrap();
        assert_eq!(response.status(), want, "{path}");
    }
    let open = GatewayContext {
        http: Arc::new(gateways::HttpPolicy::new(Default::default(), true)),
        ..f.ctx.clone()
    };
    for path in ["/cluster/peers", "/cluster/status"] {
        let response = app(open.clone())
            .oneshot(peers_of(None, path))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path} configured open");
    }
}
