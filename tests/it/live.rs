//! The edge's live-path NATS connection (`herald_edge::live`) against a
//! real nats-server: messages reach their own subscription whole and in
//! order, unsubscribing reaches the server, a restart is survived with every
//! subscription back and `on_connect` told, a full queue drops and says up
//! to which seq, and the server's credentials are checked.

use std::{sync::Arc, time::Duration};

use async_nats::{HeaderMap, header::NATS_SEQUENCE};
use bytes::Bytes;
use herald_edge::live::{LiveClient, QUEUE_BOUND, Received, Subscription};
use herald_shared::nats::NatsAuth;
use herald_tests::{WAIT, nats::NatsServer};
use tokio::sync::Notify;

const NAME: &str = "live-test";

async fn live(url: &str, on_connect: Option<Arc<Notify>>) -> LiveClient {
    LiveClient::connect(url, &NatsAuth::default(), NAME, on_connect)
        .await
        .expect("live connect")
}

async fn publisher(nats: &NatsServer) -> async_nats::Client {
    async_nats::connect(&nats.url).await.expect("connect")
}

fn seq_headers(seq: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_SEQUENCE, seq.to_string().as_str());
    headers
}

/// The next message, within [`WAIT`].
async fn next(subscription: &mut Subscription) -> Received {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
}

async fn next_message(subscription: &mut Subscription) -> herald_edge::live::Message {
    match next(subscription).await {
        Received::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn seq_of(message: &herald_edge::live::Message) -> u64 {
    message
        .headers
        .as_ref()
        .unwrap()
        .get_last(NATS_SEQUENCE)
        .unwrap()
        .as_str()
        .parse()
        .unwrap()
}

/// The subjects the server holds for the client named [`NAME`].
async fn server_subscriptions(nats: &NatsServer) -> Vec<String> {
    nats.connz(true).await["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == NAME)
        .flat_map(|c| {
            c["subscriptions_list"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_reach_their_own_subscription_whole_and_in_order() {
    let nats = NatsServer::start();
    let live = live(&nats.url, None).await;
    let mut subscriptions = Vec::new();
    for i in 0..50 {
        subscriptions.push(live.subscribe(&format!("live.user.u{i}")).await.unwrap());
    }
    let client = publisher(&nats).await;
    for seq in 1..=20u64 {
        for i in 0..50 {
            let payload = Bytes::from(format!("u{i}:{seq}"));
            client
                .publish_with_headers(format!("live.user.u{i}"), seq_headers(seq), payload)
                .await
                .unwrap();
        }
    }
    // One message without headers, and one too large for a single read.
    client
        .publish("live.user.u0", Bytes::from_static(b"plain"))
        .await
        .unwrap();
    let large = Bytes::from(vec![b'x'; 900 * 1024]);
    client.publish("live.user.u1", large.clone()).await.unwrap();
    client.flush().await.unwrap();
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        for seq in 1..=20u64 {
            let message = next_message(subscription).await;
            assert_eq!(seq_of(&message), seq);
            assert_eq!(message.payload, format!("u{i}:{seq}").as_bytes());
        }
    }
    let plain = next_message(&mut subscriptions[0]).await;
    assert!(plain.headers.is_none());
    assert_eq!(&plain.payload[..], b"plain");
    assert_eq!(next_message(&mut subscriptions[1]).await.payload, large);
    for subscription in &mut subscriptions {
        assert!(
            tokio::time::timeout(Duration::from_millis(100), subscription.next())
                .await
                .is_err(),
            "nothing more"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_subscription_unsubscribes_at_the_server() {
    let nats = NatsServer::start();
    let live = live(&nats.url, None).await;
    let kept = live.subscribe("live.user.kept").await.unwrap();
    let dropped = live.subscribe("live.user.dropped").await.unwrap();
    let mut subjects = server_subscriptions(&nats).await;
    subjects.sort();
    assert_eq!(subjects, ["live.user.dropped", "live.user.kept"]);
    drop(dropped);
    tokio::time::timeout(WAIT, async {
        while server_subscriptions(&nats).await != ["live.user.kept"] {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server drops the subscription");
    drop(kept);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_is_survived_with_every_subscription_back() {
    let mut nats = NatsServer::start();
    let connects = Arc::new(Notify::new());
    let live = live(&nats.url, Some(connects.clone())).await;
    tokio::time::timeout(WAIT, connects.notified())
        .await
        .expect("told of the first connect");
    let mut before = live.subscribe("live.user.before").await.unwrap();

    nats.stop();
    tokio::time::timeout(WAIT, async {
        while live.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("sees the connection lost");
    // Subscribing while down completes once the server is back.
    let subscribing = {
        let live = live.clone();
        tokio::spawn(async move { live.subscribe("live.user.during").await })
    };
    nats.start_again();
    tokio::time::timeout(WAIT, connects.notified())
        .await
        .expect("told of the reconnect");
    let mut during = tokio::time::timeout(WAIT, subscribing)
        .await
        .expect("subscribed after the reconnect")
        .unwrap()
        .unwrap();
    assert!(live.is_connected());

    let client = publisher(&nats).await;
    client
        .publish_with_headers("live.user.before", seq_headers(1), "b".into())
        .await
        .unwrap();
    client
        .publish_with_headers("live.user.during", seq_headers(2), "d".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(seq_of(&next_message(&mut before).await), 1);
    assert_eq!(seq_of(&next_message(&mut during).await), 2);
    let mut subjects = server_subscriptions(&nats).await;
    subjects.sort();
    assert_eq!(subjects, ["live.user.before", "live.user.during"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_drops_new_messages_and_says_up_to_which_seq() {
    let nats = NatsServer::start();
    let live = live(&nats.url, None).await;
    let mut slow = live.subscribe("live.user.slow").await.unwrap();
    let mut marker = live.subscribe("live.user.marker").await.unwrap();
    let client = publisher(&nats).await;
    let n = QUEUE_BOUND as u64 + 5;
    for seq in 1..=n {
        client
            .publish_with_headers("live.user.slow", seq_headers(seq), "m".into())
            .await
            .unwrap();
    }
    client
        .publish("live.user.marker", "done".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    // One reader, in order: the marker arrives after every slow message was queued or dropped.
    next_message(&mut marker).await;
    for seq in 1..=QUEUE_BOUND as u64 {
        assert_eq!(seq_of(&next_message(&mut slow).await), seq);
    }
    match next(&mut slow).await {
        Received::Dropped { upto } => assert_eq!(upto, n),
        other => panic!("expected the drop, got {other:?}"),
    }
    // Delivery goes on.
    client
        .publish_with_headers("live.user.slow", seq_headers(n + 1), "m".into())
        .await
        .unwrap();
    assert_eq!(seq_of(&next_message(&mut slow).await), n + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_s_credentials_are_checked() {
    let nats = NatsServer::start_with_config("authorization { token: \"s3cret\" }\n");
    let port = nats.url.rsplit(':').next().unwrap();
    let wrong = format!("nats://nope@127.0.0.1:{port}");
    let err = LiveClient::connect(&wrong, &NatsAuth::default(), NAME, None)
        .await
        .expect_err("a wrong token is refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("Authorization Violation") && !text.contains("nope"),
        "{text}"
    );
    let live = live(&format!("nats://s3cret@127.0.0.1:{port}"), None).await;
    assert!(live.is_connected());
    let mut subscription = live.subscribe("live.user.a").await.unwrap();
    let client = async_nats::ConnectOptions::with_token("s3cret".into())
        .connect(&nats.url)
        .await
        .unwrap();
    client.publish("live.user.a", "hi".into()).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(&next_message(&mut subscription).await.payload[..], b"hi");
}
