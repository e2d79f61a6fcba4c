//! Fault tests on the three-node cluster with R3 streams (issue 12, item 5),
//! counted exactly: every client ends with every event of its channels, once,
//! in order. Each prints its counts (`-- --nocapture`).
//!
//! The cluster runs least privilege: the publisher, the edges and the domain
//! service connect as the users `publisher`, `edge` and `domain-service` of
//! the README's permissions table, with nothing more, so a permission that a
//! failover, a move to another node or a replica catching up needs shows up
//! here. The tests' own checks connect as the harness's admin.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::{HeaderMap, header::NATS_MESSAGE_ID, jetstream};
use herald_shared::{
    events::EventType,
    frames::ServerFrame,
    stream::{DOMAIN_STREAM, NOTIFY_STREAM},
    subject::domain_subject,
};
use herald_tests::{
    WAIT,
    apps::{TestEdge, TestPublisher},
    clients::{WsClient, calendar_event, user_token},
    cluster::{NatsCluster, wait_for_replicas},
    load::{client, expected_for, keep_reading, publish_steadily, publish_until, settle},
    resume::Seqs,
};
use tokio_util::sync::CancellationToken;

/// Starts the cluster with the least-privilege users and has a publisher
/// create every stream at R3.
async fn cluster_with_r3_streams() -> NatsCluster {
    let cluster = NatsCluster::start_least_privilege().await;
    let setup = TestPublisher::spawn_with(cluster.publisher_on(&["n1"])).await;
    let js = cluster.admin().await;
    for stream in [NOTIFY_STREAM, DOMAIN_STREAM] {
        wait_for_replicas(&js, stream, 3).await;
    }
    setup.stop().await.unwrap();
    cluster
}

/// The leader of `stream` and the two other nodes.
async fn leader_and_others(cluster: &NatsCluster, stream: &str) -> (String, String, String) {
    let leader = cluster
        .stream_leader(stream)
        .await
        .expect("a stream leader");
    let others: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| *n != leader)
        .collect();
    (leader, others[0].clone(), others[1].clone())
}

/// An edge on the seed list of `names` that reconciles every second, so a
/// live copy lost while its connection moves is repaired soon.
async fn edge_on(cluster: &NatsCluster, names: &[&str], node_id: &str) -> TestEdge {
    TestEdge::spawn_with(herald_edge::Config {
        reconcile_interval: Duration::from_secs(1),
        ..cluster.edge_on(names, node_id)
    })
    .await
}

/// Item 5a: the notification stream's leader is SIGKILLed while 200 events/s
/// are published over HTTP (503s retried with the same id); 100 clients on
/// two edges on the two other nodes.
#[tokio::test(flavor = "multi_thread")]
async fn the_stream_leader_killed_under_load_loses_and_repeats_nothing() {
    const N_CLIENTS: usize = 100;
    const N_EVENTS: usize = 1000;
    let mut cluster = cluster_with_r3_streams().await;
    let (leader, a, b) = leader_and_others(&cluster, NOTIFY_STREAM).await;
    let publisher = TestPublisher::spawn_with(cluster.publisher_on(&[&a, &b, &leader])).await;
    let edges = [
        edge_on(&cluster, &[&a, &b, &leader], "edge-a").await,
        edge_on(&cluster, &[&b, &a, &leader], "edge-b").await,
    ];
    let ws: Vec<String> = edges
        .iter()
        .map(|e| format!("ws://{}/v1/ws", e.addr))
        .collect();

    let stop = CancellationToken::new();
    let reconnects = Arc::new(AtomicUsize::new(0));
    let (mut tasks, mut progress, mut users) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..N_CLIENTS {
        let mut client = client(i);
        client.connect(&ws[i % 2]).await.unwrap();
        progress.push(client.received.clone());
        users.push((client.user.clone(), client.namespaces[0].clone()));
        let mine = vec![ws[i % 2].clone(), ws[(i + 1) % 2].clone()];
        tasks.push(keep_reading(client, mine, reconnects.clone(), stop.clone()));
    }

    let expected = Arc::new(Mutex::new(Seqs::new()));
    let publishing = tokio::spawn(publish_steadily(
        publisher.url(),
        N_EVENTS,
        N_CLIENTS,
        200,
        expected.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.node(&leader).kill();
    let retried = tokio::time::timeout(WAIT * 3, publishing)
        .await
        .expect("all events published in time")
        .unwrap();
    let new_leader = cluster.stream_leader(NOTIFY_STREAM).await;

    let all = expected.lock().unwrap().clone();
    let tally = settle(&progress, &users, &all).await;
    stop.cancel();
    for task in tasks {
        let client = task.await.unwrap();
        assert_eq!(
            *client.received.lock().unwrap(),
            expected_for(&client, &all),
            "{} in order",
            client.user
        );
    }
    eprintln!(
        "leader {leader} killed, new leader {new_leader:?}, {retried} publishes answered 503 \
         and retried, client reconnections {}",
        reconnects.load(Ordering::Relaxed)
    );
    tally.assert_exact("the stream leader killed under load");
    cluster.assert_no_permission_violations();
    drop((publisher, edges));
}

/// Item 5b: the node an edge and its 50 clients are connected to is
/// SIGKILLed while events flow: no client is disconnected, the edge moves to
/// another node of its seed list, and everything published meanwhile arrives.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_whose_node_dies_moves_to_another_and_its_clients_miss_nothing() {
    const N_CLIENTS: usize = 50;
    const N_EVENTS: usize = 800;
    let mut cluster = cluster_with_r3_streams().await;
    // The edge's node is a follower, so this is the edge's move alone.
    let (leader, doomed, other) = leader_and_others(&cluster, NOTIFY_STREAM).await;
    let publisher = TestPublisher::spawn_with(cluster.publisher_on(&[&leader, &other])).await;
    let edge = edge_on(&cluster, &[&doomed, &other, &leader], "edge-a").await;
    let ws = format!("ws://{}/v1/ws", edge.addr);

    let stop = CancellationToken::new();
    let reconnects = Arc::new(AtomicUsize::new(0));
    let (mut tasks, mut progress, mut users) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..N_CLIENTS {
        let mut client = client(i);
        client.connect(&ws).await.unwrap();
        progress.push(client.received.clone());
        users.push((client.user.clone(), client.namespaces[0].clone()));
        tasks.push(keep_reading(
            client,
            vec![ws.clone()],
            reconnects.clone(),
            stop.clone(),
        ));
    }

    let expected = Arc::new(Mutex::new(Seqs::new()));
    let publishing = tokio::spawn(publish_steadily(
        publisher.url(),
        N_EVENTS,
        N_CLIENTS,
        200,
        expected.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.node(&doomed).kill();
    let retried = tokio::time::timeout(WAIT * 3, publishing)
        .await
        .expect("all events published in time")
        .unwrap();

    let all = expected.lock().unwrap().clone();
    let tally = settle(&progress, &users, &all).await;
    stop.cancel();
    for task in tasks {
        let client = task.await.unwrap();
        assert_eq!(
            *client.received.lock().unwrap(),
            expected_for(&client, &all),
            "{} in order",
            client.user
        );
    }
    let reconnects = reconnects.load(Ordering::Relaxed);
    eprintln!(
        "the edge's node {doomed} killed, {retried} publishes answered 503 and retried, \
         client reconnections {reconnects}"
    );
    tally.assert_exact("the edge's node killed under load");
    assert_eq!(reconnects, 0, "the clients stay connected");
    cluster.assert_no_permission_violations();
    drop((publisher, edge));
}

/// Item 5d: a domain service publishes 600 events on JetStream `domain.>`
/// (about 200/s, each with its id as `Nats-Msg-Id`, retried with it) while
/// the domain stream's leader is SIGKILLed: each is stored in the
/// notification stream exactly once, in publish order, and delivered so.
#[tokio::test(flavor = "multi_thread")]
async fn nats_ingest_survives_the_domain_stream_leader_killed() {
    let cluster = cluster_with_r3_streams().await;
    ingest_while_a_stream_leader_is_killed(cluster, DOMAIN_STREAM).await;
}

/// As 5d, but the notification stream's leader is killed, on a node that
/// does not lead the domain stream: domain messages keep coming while the
/// stores in hand are lost with the leader, and none taken after them may be
/// stored first once a new leader is elected.
#[tokio::test(flavor = "multi_thread")]
async fn nats_ingest_keeps_publish_order_when_the_notification_stream_leader_is_killed() {
    let cluster = cluster_with_r3_streams().await;
    let admin = cluster.admin().await;
    let notify_leader = cluster.stream_leader(NOTIFY_STREAM).await;
    let moved = tokio::time::timeout(WAIT * 2, async {
        loop {
            let domain_leader = cluster.stream_leader(DOMAIN_STREAM).await;
            if domain_leader.is_some() && domain_leader != notify_leader {
                return;
            }
            if domain_leader.is_some() {
                let _: Result<serde_json::Value, _> = admin
                    .request(format!("STREAM.LEADER.STEPDOWN.{DOMAIN_STREAM}"), &())
                    .await;
            }
            // Time for the monitoring endpoint to show the new leader.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(moved.is_ok(), "the domain stream's leader did not move");
    wait_for_replicas(&admin, DOMAIN_STREAM, 3).await;
    ingest_while_a_stream_leader_is_killed(cluster, NOTIFY_STREAM).await;
}

/// Publishes on `domain.>` as the domain service while `stream`'s leader is
/// SIGKILLed a third of the way through; asserts each event is stored once
/// and delivered once, in publish order.
async fn ingest_while_a_stream_leader_is_killed(mut cluster: NatsCluster, stream: &str) {
    const N: usize = 600;
    let (leader, a, b) = leader_and_others(&cluster, stream).await;
    let _publisher = TestPublisher::spawn_with(cluster.publisher_on(&[&a, &b, &leader])).await;
    let edge = edge_on(&cluster, &[&b, &a], "edge-a").await;
    let url = edge.ws_url(&format!("token={}", user_token("u_1", &[])));
    let mut alice = WsClient::connect_welcomed(&url).await.0;
    let reading = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < N {
            match tokio::time::timeout(WAIT * 2, alice.try_next_frame()).await {
                Ok(Ok(ServerFrame::Event { id, .. })) => ids.push(id.to_string()),
                Ok(Ok(_)) => {}
                Ok(Err(closed)) => panic!("alice's socket ended: {closed}"),
                Err(_) => break,
            }
        }
        ids
    });

    let domain = jetstream::new(cluster.connect_as("domain-service", &[&a, &b]).await);
    let subject = domain_subject(EventType::CalendarEventUpdated).to_string();
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    let mut retried = 0;
    let mut published = Vec::new();
    for k in 0..N {
        ticks.tick().await;
        if k == N / 3 {
            cluster.node(&leader).kill();
        }
        let id = format!("nats-{k}");
        let payload = calendar_event(&id, &["u_1"], &[]).to_string();
        let stored = tokio::time::timeout(WAIT * 2, async {
            loop {
                let mut headers = HeaderMap::new();
                headers.insert(NATS_MESSAGE_ID, id.as_str());
                let ack = match domain
                    .publish_with_headers(subject.clone(), headers, payload.clone().into())
                    .await
                {
                    Ok(ack) => ack.await,
                    Err(err) => Err(err),
                };
                match ack {
                    Ok(ack) => return ack,
                    Err(_) => {
                        retried += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
        .await
        .expect("the domain stream stores it again in time");
        assert_eq!(stored.stream, DOMAIN_STREAM);
        published.push(id);
    }

    let delivered = tokio::time::timeout(WAIT * 3, reading)
        .await
        .expect("read in time")
        .unwrap();
    let mut unique = delivered.clone();
    unique.sort();
    unique.dedup();
    let lost = published
        .iter()
        .filter(|id| unique.binary_search(id).is_err())
        .count();
    let duplicated = delivered.len() - unique.len();
    let in_order = delivered == published;
    // Where the order first differs, for the message.
    let first_out_of_order = delivered
        .iter()
        .zip(&published)
        .position(|(d, p)| d != p)
        .map(|at| (at, &delivered[at..(at + 8).min(delivered.len())]));
    // Stored once: the notification stream holds exactly one message per
    // event (read as the admin: the domain service may not).
    let mut notify = cluster
        .admin()
        .await
        .get_stream(NOTIFY_STREAM)
        .await
        .unwrap();
    let stored = notify.info().await.unwrap().state.messages;
    let counts = format!(
        "{stream} leader {leader} killed: published {N} (publishes retried {retried}), \
         stored {stored}, delivered {}, lost {lost}, duplicated {duplicated}, in order {in_order} \
         (first out of order at, and from there: {first_out_of_order:?})",
        delivered.len()
    );
    eprintln!("{counts}");
    assert_eq!(
        (stored, lost, duplicated, in_order),
        (N as u64, 0, 0, true),
        "{counts}"
    );
    cluster.assert_no_permission_violations();
}

/// Item 5c: a rolling restart under load. Each node in turn is stopped in
/// lame-duck mode (SIGUSR2: it hands its leaderships over, then closes its
/// clients one by one), started again on its store, and the next waits until
/// the streams are at three current replicas again; events flow at about
/// 100/s all along, to 40 clients on two edges.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_in_lame_duck_mode_loses_and_repeats_nothing() {
    const N_CLIENTS: usize = 40;
    let mut cluster = cluster_with_r3_streams().await;
    let names = cluster.names();
    let [n1, n2, n3] = [&names[0], &names[1], &names[2]];
    let publisher = TestPublisher::spawn_with(cluster.publisher_on(&[n3, n1, n2])).await;
    let edges = [
        edge_on(&cluster, &[n1, n2, n3], "edge-a").await,
        edge_on(&cluster, &[n2, n3, n1], "edge-b").await,
    ];
    let ws: Vec<String> = edges
        .iter()
        .map(|e| format!("ws://{}/v1/ws", e.addr))
        .collect();
    let stop = CancellationToken::new();
    let reconnects = Arc::new(AtomicUsize::new(0));
    let (mut tasks, mut progress, mut users) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..N_CLIENTS {
        let mut client = client(i);
        client.connect(&ws[i % 2]).await.unwrap();
        progress.push(client.received.clone());
        users.push((client.user.clone(), client.namespaces[0].clone()));
        let mine = vec![ws[i % 2].clone(), ws[(i + 1) % 2].clone()];
        tasks.push(keep_reading(client, mine, reconnects.clone(), stop.clone()));
    }

    let expected = Arc::new(Mutex::new(Seqs::new()));
    let published = CancellationToken::new();
    let publishing = tokio::spawn(publish_until(
        publisher.url(),
        10_000,
        N_CLIENTS,
        100,
        expected.clone(),
        published.clone(),
    ));
    let checker = cluster.admin().await;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in &names {
        cluster.node(name).lame_duck().await;
        cluster.node(name).restart().await;
        cluster.wait_ready().await;
        for stream in [NOTIFY_STREAM, DOMAIN_STREAM] {
            wait_for_replicas(&checker, stream, 3).await;
        }
    }
    let rolled = started.elapsed();
    published.cancel();
    let (n_published, retried) = tokio::time::timeout(WAIT * 3, publishing)
        .await
        .expect("publishing ends in time")
        .unwrap();

    let all = expected.lock().unwrap().clone();
    let tally = settle(&progress, &users, &all).await;
    stop.cancel();
    for task in tasks {
        let client = task.await.unwrap();
        assert_eq!(
            *client.received.lock().unwrap(),
            expected_for(&client, &all),
            "{} in order",
            client.user
        );
    }
    eprintln!(
        "rolling restart of 3 nodes in {rolled:?}, {n_published} events published meanwhile \
         ({retried} answered 503 and retried), client reconnections {}",
        reconnects.load(Ordering::Relaxed)
    );
    tally.assert_exact("a rolling restart in lame-duck mode under load");
    cluster.assert_no_permission_violations();
    drop((publisher, edges));
}
