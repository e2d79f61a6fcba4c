//! Presence across edges, on a real nats-server: joins and leaves seen on
//! the other edge, one member per user however many connections, a
//! SIGKILLed edge's users leaving within the TTL plus a second, the claim,
//! hostile ids, the member cap, a NATS restart, and the publisher's endpoint.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use herald_shared::{error_code::ErrorCode, frames::ServerFrame};
use herald_tests::{
    WAIT,
    apps::{Stack, TestEdge, edge_config},
    clients::{
        TEST_SECRET, WsClient, percent_encode, service_claims, service_token, sign, user_claims,
    },
    edge_process::EdgeProcess,
};
use serde_json::{Value, json};

/// The TTL of the killed edge's presence: short, so the test is.
const SHORT_TTL_MS: u64 = 3000;

/// A user token allowed to join `ns` and see its presence.
fn token(sub: &str, ns: &[&str], presence: &[&str]) -> String {
    let mut claims = user_claims(sub, ns);
    claims["presence"] = json!(presence);
    sign(&claims, TEST_SECRET)
}

fn query(sub: &str, ns: &str) -> String {
    format!(
        "token={}&ns={}",
        token(sub, &[ns], &[ns]),
        percent_encode(ns)
    )
}

/// `user`, joined to `ns` at connect, on the edge at `ws_url`.
async fn join(ws_url: String) -> WsClient {
    WsClient::connect_welcomed(&ws_url).await.0
}

/// A socket of `user` subscribed to `ns` with `presence: true`.
async fn watcher(edge: &TestEdge, user: &str, ns: &str) -> Watcher {
    let url = edge.ws_url(&format!("token={}", token(user, &[ns], &[ns])));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;
    client
        .send_json(&json!({"type": "subscribe", "ref": "w", "namespace": ns, "presence": true}))
        .await;
    loop {
        match client.next_frame().await {
            ServerFrame::Subscribed { r#ref, .. } if r#ref.as_deref() == Some("w") => break,
            ServerFrame::Error { code, message, .. } => panic!("{code:?}: {message}"),
            _ => {}
        }
    }
    Watcher {
        client,
        seen: BTreeSet::new(),
        left: Vec::new(),
    }
}

/// A socket's view of a namespace, built from its `presence_diff` frames.
struct Watcher {
    client: WsClient,
    seen: BTreeSet<String>,
    /// Every user ever reported `left`, in order.
    left: Vec<String>,
}

impl Watcher {
    /// Applies diffs until the view is `expected`; panics past the bound.
    async fn until(&mut self, expected: &[&str]) {
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.seen != expected {
            let frame = tokio::time::timeout_at(deadline, self.client.next_frame())
                .await
                .unwrap_or_else(|_| panic!("view {:?}, expected {expected:?}", self.seen));
            self.apply(frame);
        }
    }

    fn apply(&mut self, frame: ServerFrame) {
        if let ServerFrame::PresenceDiff { joined, left, .. } = frame {
            for user in joined {
                assert!(self.seen.insert(user.to_string()), "{user} joined twice");
            }
            for user in left {
                assert!(self.seen.remove(user.as_str()), "{user} left unseen");
                self.left.push(user.to_string());
            }
        }
    }

    /// Applies every diff that arrives within `quiet`.
    async fn drain(&mut self, quiet: Duration) {
        for frame in self.client.frames_until_end(quiet).await {
            self.apply(frame);
        }
    }
}

/// Sends a `presence` frame and returns its answer: (user, connections), truncated.
async fn presence(client: &mut WsClient, ns: &str) -> (Vec<(String, u32)>, bool) {
    client
        .send_json(&json!({"type": "presence", "ref": "p", "namespace": ns}))
        .await;
    loop {
        match client.next_frame().await {
            ServerFrame::Presence {
                r#ref,
                members,
                truncated,
                channel,
            } if r#ref.as_deref() == Some("p") => {
                assert_eq!(channel.to_string(), format!("ns:{ns}"));
                let members = members
                    .into_iter()
                    .map(|m| (m.user.to_string(), m.connections))
                    .collect();
                return (members, truncated);
            }
            ServerFrame::Error { code, message, .. } => panic!("{code:?}: {message}"),
            _ => {}
        }
    }
}

/// Asks until the answer is `expected` (writes reach the stream within a tick).
async fn until_presence(client: &mut WsClient, ns: &str, expected: &[(&str, u32)]) {
    let expected: Vec<(String, u32)> = expected.iter().map(|(u, n)| (u.to_string(), *n)).collect();
    let started = Instant::now();
    loop {
        let (members, _) = presence(client, ns).await;
        if members == expected {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "presence {members:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn joins_and_leaves_are_seen_on_the_other_edge_and_a_user_is_one_member() {
    let stack = Stack::start(2).await;
    let (a, b) = (&stack.edges[0], &stack.edges[1]);
    let mut w = watcher(a, "watcher", "team").await;
    w.until(&["watcher"]).await;

    let carol_b = join(b.ws_url(&query("carol", "team"))).await;
    w.until(&["carol", "watcher"]).await;
    until_presence(&mut w.client, "team", &[("carol", 1), ("watcher", 1)]).await;

    // A second connection on the other edge: still one member, two connections.
    let carol_a = join(a.ws_url(&query("carol", "team"))).await;
    until_presence(&mut w.client, "team", &[("carol", 2), ("watcher", 1)]).await;

    // One of the two goes: carol stays.
    carol_b.close().await;
    until_presence(&mut w.client, "team", &[("carol", 1), ("watcher", 1)]).await;
    w.drain(Duration::from_millis(800)).await;
    assert!(w.left.is_empty(), "nobody left yet: {:?}", w.left);

    // Both gone: carol leaves.
    carol_a.close().await;
    w.until(&["watcher"]).await;
    assert_eq!(w.left, ["carol"]);
    until_presence(&mut w.client, "team", &[("watcher", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_edges_users_leave_within_the_ttl_and_a_second() {
    let stack = Stack::start(1).await;
    let ttl = SHORT_TTL_MS.to_string();
    let mut killed = EdgeProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_herald-edge-process")),
        &stack.nats.url,
        "edge-k",
        &[("HERALD_PRESENCE_TTL_MS", &ttl)],
    )
    .await;
    let mut w = watcher(stack.edge(), "watcher", "team").await;
    let _dave = join(killed.ws_url(&query("dave", "team"))).await;
    let _erin = join(killed.ws_url(&query("erin", "team"))).await;
    w.until(&["dave", "erin", "watcher"]).await;
    // Let a heartbeat or two pass, so the kill lands anywhere in a period.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    w.drain(Duration::from_millis(100)).await;

    killed.kill();
    let killed_at = Instant::now();
    w.until(&["watcher"]).await;
    let latency = killed_at.elapsed();
    eprintln!("presence: a SIGKILLed edge's users left after {latency:?} (TTL {SHORT_TTL_MS} ms)");
    assert!(
        latency <= Duration::from_millis(SHORT_TTL_MS + 1000),
        "left after {latency:?}"
    );
    // The stream agrees: the killed edge's set is gone from reads too.
    until_presence(&mut w.client, "team", &[("watcher", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_needs_the_claim() {
    let stack = Stack::start(1).await;
    // Joined to `team`, but allowed the presence of `other` only.
    let url = stack.edge().ws_url(&format!(
        "token={}&ns=team",
        token("mallory", &["team"], &["other"])
    ));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;
    client
        .send_json(&json!({"type": "presence", "ref": "1", "namespace": "team"}))
        .await;
    client
        .send_json(&json!({"type": "subscribe", "ref": "2", "namespace": "team", "presence": true}))
        .await;
    let frames = client.round_trip("3").await;
    let refused: Vec<(Option<String>, ErrorCode)> = frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Error { code, r#ref, .. } => Some((r#ref.clone(), *code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        [
            (Some("1".into()), ErrorCode::ForbiddenNamespace),
            (Some("2".into()), ErrorCode::ForbiddenNamespace)
        ],
        "{frames:?}"
    );
    assert!(
        !frames.iter().any(|f| matches!(
            f,
            ServerFrame::Presence { .. } | ServerFrame::PresenceDiff { .. }
        )),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_ids_appear_as_themselves_and_never_as_others() {
    let stack = Stack::start(2).await;
    let (a, b) = (&stack.edges[0], &stack.edges[1]);
    // `n.*` and `n` are different namespaces, and `*`, `>`, `a.b` are users,
    // not subject wildcards or tokens.
    let mut w = watcher(a, "a", "n.*").await;
    let _star = join(b.ws_url(&query("*", "n.*"))).await;
    let _gt = join(a.ws_url(&query(">", "n.*"))).await;
    let _dotted = join(b.ws_url(&query("a.b", "n.*"))).await;
    let _other = join(b.ws_url(&query("b", "n"))).await;
    w.until(&["*", ">", "a", "a.b"]).await;
    until_presence(
        &mut w.client,
        "n.*",
        &[("*", 1), (">", 1), ("a", 1), ("a.b", 1)],
    )
    .await;
    let url = a.ws_url(&format!("token={}", token("b", &["n"], &["n"])));
    let (mut in_n, _) = WsClient::connect_welcomed(&url).await;
    until_presence(&mut in_n, "n", &[("b", 1)]).await;
    w.drain(Duration::from_millis(600)).await;
    assert!(!w.seen.contains("b"), "a user of `n` showed up in `n.*`");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_members_are_listed_and_the_next_is_truncated() {
    let stack = Stack::start(2).await;
    let urls: Vec<String> = (0..1001)
        .map(|i| stack.edges[i % 2].ws_url(&query(&format!("u{i:04}"), "big")))
        .collect();
    let mut clients = Vec::new();
    for batch in urls[..1000].chunks(50) {
        clients.extend(join_all(batch.iter().cloned().map(join)).await);
    }
    let mut asker = clients.pop().expect("a client");
    let check = |members: &[(String, u32)]| {
        let expected: Vec<(String, u32)> = (0..1000).map(|i| (format!("u{i:04}"), 1)).collect();
        assert_eq!(members, expected);
    };
    let started = Instant::now();
    loop {
        let (members, truncated) = presence(&mut asker, "big").await;
        if members.len() == 1000 {
            check(&members);
            assert!(!truncated);
            break;
        }
        assert!(started.elapsed() < WAIT, "{} members", members.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _last = join(urls[1000].clone()).await;
    loop {
        let (members, truncated) = presence(&mut asker, "big").await;
        if truncated {
            check(&members);
            break;
        }
        assert!(started.elapsed() < WAIT * 2, "never truncated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_restart_neither_loses_nor_invents_members() {
    let mut stack = Stack::start(2).await;
    let (a, b) = (stack.edges[0].addr, stack.edges[1].addr);
    let url = |addr, user| format!("ws://{addr}/v1/ws?{}", query(user, "team"));
    let mut w = watcher(&stack.edges[0], "watcher", "team").await;
    let _e = join(url(b, "erin")).await;
    let _f = join(url(b, "frank")).await;
    let _g = join(url(a, "grace")).await;
    w.until(&["erin", "frank", "grace", "watcher"]).await;

    stack.nats.restart();
    // Reads answer again once the edges are back; the members are all there.
    let expected = [("erin", 1), ("frank", 1), ("grace", 1), ("watcher", 1)];
    let started = Instant::now();
    loop {
        w.client
            .send_json(&json!({"type": "presence", "ref": "p", "namespace": "team"}))
            .await;
        let answer = loop {
            match w.client.next_frame().await {
                ServerFrame::Presence { members, .. } => break Some(members),
                ServerFrame::Error { r#ref, .. } if r#ref.as_deref() == Some("p") => break None,
                other => w.apply(other),
            }
        };
        let listed: Option<Vec<(String, u32)>> = answer.map(|members| {
            members
                .into_iter()
                .map(|m| (m.user.to_string(), m.connections))
                .collect()
        });
        let wanted: Vec<(String, u32)> =
            expected.iter().map(|(u, n)| (u.to_string(), *n)).collect();
        if listed.as_ref() == Some(&wanted) {
            break;
        }
        assert!(
            started.elapsed() < WAIT * 2,
            "after the restart: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A join after the restart is seen; nobody left or came in between.
    let _h = join(url(b, "heidi")).await;
    w.until(&["erin", "frank", "grace", "heidi", "watcher"])
        .await;
    w.drain(Duration::from_millis(800)).await;
    assert!(w.left.is_empty(), "invented leaves: {:?}", w.left);
    assert_eq!(w.seen.len(), 5, "{:?}", w.seen);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_publisher_answers_presence_to_the_presence_scope_only() {
    let stack = Stack::start(1).await;
    let _ivan = join(stack.edge().ws_url(&query("ivan", "team-42"))).await;
    let http = herald_tests::http_client(WAIT);
    let url = format!("{}/v1/presence/team-42", stack.publisher.url());
    let get = |token: String| {
        let request = http.get(&url).bearer_auth(token);
        async move {
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("a JSON body"))
        }
    };
    let (status, body) = get(service_token()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "FORBIDDEN");

    let mut claims = service_claims();
    claims["scope"] = json!("presence:read");
    let reader = sign(&claims, TEST_SECRET);
    let started = Instant::now();
    loop {
        let (status, body) = get(reader.clone()).await;
        assert_eq!(status, 200, "{body}");
        if body
            == json!({"channel": "ns:team-42", "members": [{"user": "ivan", "connections": 1}], "truncated": false})
        {
            break;
        }
        assert!(started.elapsed() < WAIT, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_counts_its_presence_writes() {
    let stack = Stack::start(0).await;
    let edge = TestEdge::spawn_with(herald_edge::Config {
        presence_ttl: Duration::from_secs(3),
        ..edge_config(&stack.nats, "edge-m")
    })
    .await;
    let _clients =
        join_all((0..20).map(|i| join(edge.ws_url(&query(&format!("m{i}"), "team"))))).await;
    let metrics = format!("http://{}/metrics", edge.addr);
    let http = herald_tests::http_client(WAIT);
    let writes = || async {
        let text = http
            .get(&metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("herald_edge_presence_writes_total "))
            .expect("the counter")
            .parse::<u64>()
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = writes().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = writes().await - before;
    // 20 sockets in one namespace: one heartbeat per second (TTL / 3), not 20.
    assert!((2..=4).contains(&during), "{during} writes in 3 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_works_with_the_least_privilege_users() {
    use herald_tests::{apps::TestPublisher, nats::NatsServer, permissions};
    let nats = NatsServer::start_with_config(&permissions::least_privilege_config());
    let publisher = TestPublisher::spawn_with(permissions::publisher_config(&nats)).await;
    let mut edges = Vec::new();
    for node in ["edge-a", "edge-b"] {
        edges.push(TestEdge::spawn_with(permissions::edge_config(&nats, node)).await);
    }
    let mut w = watcher(&edges[0], "watcher", "team").await;
    let _judy = join(edges[1].ws_url(&query("judy", "team"))).await;
    w.until(&["judy", "watcher"]).await;
    until_presence(&mut w.client, "team", &[("judy", 1), ("watcher", 1)]).await;

    let mut claims = service_claims();
    claims["scope"] = json!("presence:read");
    let response = herald_tests::http_client(WAIT)
        .get(format!("{}/v1/presence/team", publisher.url()))
        .bearer_auth(sign(&claims, TEST_SECRET))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["members"].as_array().map(Vec::len), Some(2), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refreshed_token_without_the_claim_stops_the_diffs() {
    let stack = Stack::start(1).await;
    let mut w = watcher(stack.edge(), "kim", "team").await;
    w.until(&["kim"]).await;
    // Same user, same namespace grant, no presence grant.
    w.client
        .send_json(&json!({"type": "auth", "ref": "a", "token": token("kim", &["team"], &[])}))
        .await;
    let frames = w.client.round_trip("after-auth").await;
    assert!(
        frames.iter().any(|f| matches!(
            f,
            ServerFrame::Error {
                code: ErrorCode::ForbiddenNamespace,
                r#ref: None,
                ..
            }
        )),
        "{frames:?}"
    );
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, ServerFrame::Authenticated { .. }))
    );
    let _lee = join(stack.edge().ws_url(&query("lee", "team"))).await;
    let later = w.client.frames_until_end(Duration::from_millis(800)).await;
    assert!(
        !later
            .iter()
            .any(|f| matches!(f, ServerFrame::PresenceDiff { .. })),
        "{later:?}"
    );
    // Still joined to the namespace, and still counted in it.
    let url = stack
        .edge()
        .ws_url(&format!("token={}", token("max", &[], &["team"])));
    let (mut asker, _) = WsClient::connect_welcomed(&url).await;
    until_presence(&mut asker, "team", &[("kim", 1), ("lee", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_works_across_the_nodes_of_a_cluster_with_three_replicas() {
    use herald_shared::stream::{NOTIFY_STREAM, PRESENCE_STREAM};
    use herald_tests::{
        apps::{TestPublisher, edge_config_on},
        cluster::{NatsCluster, replicated_publisher, wait_for_replicas},
    };
    let cluster = NatsCluster::start().await;
    let _publisher = TestPublisher::spawn_with(replicated_publisher(&cluster.nodes[0].url)).await;
    let js = async_nats::jetstream::new(
        async_nats::connect(cluster.nodes[0].url.clone())
            .await
            .unwrap(),
    );
    // Both streams led and at three replicas before any edge joins a channel:
    // on a cluster just formed, a stream without a leader yet answers no read,
    // and an edge refuses a socket whose channels it cannot join (1013).
    wait_for_replicas(&js, NOTIFY_STREAM, 3).await;
    wait_for_replicas(&js, PRESENCE_STREAM, 3).await;
    // Edges on the two other nodes; a short TTL so a write lost to interest
    // that has not crossed the routes yet comes again within a second.
    let mut edges = Vec::new();
    for (node, id) in [(1, "edge-b"), (2, "edge-c")] {
        edges.push(
            TestEdge::spawn_with(herald_edge::Config {
                presence_ttl: Duration::from_secs(3),
                ..edge_config_on(&cluster.nodes[node].url, id)
            })
            .await,
        );
    }
    let mut w = watcher(&edges[0], "watcher", "team").await;
    let nina = join(edges[1].ws_url(&query("nina", "team"))).await;
    w.until(&["nina", "watcher"]).await;
    until_presence(&mut w.client, "team", &[("nina", 1), ("watcher", 1)]).await;
    nina.close().await;
    w.until(&["watcher"]).await;
    until_presence(&mut w.client, "team", &[("watcher", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_of_an_edge_that_shuts_down_leave_at_once() {
    let mut stack = Stack::start(2).await;
    let mut w = watcher(&stack.edges[0], "watcher", "team").await;
    let _olga = join(stack.edges[1].ws_url(&query("olga", "team"))).await;
    w.until(&["olga", "watcher"]).await;
    let stopping = stack.edges.remove(1);
    let started = Instant::now();
    stopping.stop().await.expect("a clean stop");
    w.until(&["watcher"]).await;
    // Far under the 30 s TTL: the edge wrote its sets empty on the way out.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
