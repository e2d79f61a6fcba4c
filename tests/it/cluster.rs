//! The three-node cluster harness itself: it comes up with a meta leader,
//! holds an R3 stream, and a killed node neither loses what was stored nor
//! stops the stream.

use std::time::Duration;

use async_nats::jetstream::{self, stream::Config};
use herald_shared::stream::{
    DEAD_LETTER_STREAM, DOMAIN_CONSUMER, DOMAIN_STREAM, EPOCH_METADATA_KEY, NOTIFY_STREAM,
};
use herald_tests::{
    WAIT,
    apps::{TestPublisher, publisher_config_on},
    clients::{calendar_event, post_event, service_token},
    cluster::NatsCluster,
};

#[tokio::test]
async fn an_r3_stream_survives_a_killed_node() {
    let mut cluster = NatsCluster::start().await;
    assert_eq!(cluster.urls().len(), 3);
    let client = async_nats::connect(cluster.nodes[0].url.clone())
        .await
        .unwrap();
    let js = jetstream::new(client);
    let config = Config {
        name: "SMOKE".into(),
        subjects: vec!["smoke.>".into()],
        num_replicas: 3,
        ..Default::default()
    };
    tokio::time::timeout(WAIT, js.create_stream(config))
        .await
        .expect("created in time")
        .unwrap();
    for i in 0..10 {
        js.publish("smoke.a", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let leader = cluster
        .stream_leader("SMOKE")
        .await
        .expect("a stream leader");

    // Kill the leader; the other two elect a new one and take writes.
    cluster.node(&leader).kill();
    let survivor = cluster.nodes.iter().find(|n| n.is_running()).unwrap();
    let js = jetstream::new(async_nats::connect(survivor.url.clone()).await.unwrap());
    let stored = async {
        loop {
            match js.publish("smoke.a", "10".into()).await {
                Ok(ack) => match ack.await {
                    Ok(ack) => return ack.sequence,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                },
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    let seq = tokio::time::timeout(WAIT, stored)
        .await
        .expect("a new leader takes writes in time");
    assert_eq!(seq, 11, "nothing lost, nothing stored twice");

    // Back on its store, the node catches up and the cluster is whole again.
    cluster.node(&leader).restart().await;
    cluster.wait_ready().await;
}

/// `--stream-replicas`: the publisher moves existing streams (and its domain
/// consumer) to the configured count at start-up, keeping the epoch, and
/// nothing stored before is lost on the way up or down.
#[tokio::test(flavor = "multi_thread")]
async fn the_publisher_moves_its_streams_from_one_replica_to_three_and_back() {
    let cluster = NatsCluster::start().await;
    let js = jetstream::new(
        async_nats::connect(cluster.nodes[1].url.clone())
            .await
            .unwrap(),
    );
    let mut stored = 0;
    let mut epoch = None;
    for (round, replicas) in [1, 3, 1].into_iter().enumerate() {
        let mut config = publisher_config_on(&cluster.nodes[0].url);
        config.stream.replicas = replicas;
        config.ingest.as_mut().unwrap().replicas = replicas;
        let publisher = TestPublisher::spawn_with(config).await;
        for i in 0..20 {
            let body = calendar_event(&format!("r{round}-{i}"), &["u_1", "u_2"], &[]);
            // While a stream moves, a write may be answered 503: retried
            // with the same id it is stored once.
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                let answer = post_event(&publisher.url(), &service_token(), &body).await;
                if answer.status == 202 {
                    break;
                }
                assert_eq!(answer.status, 503, "{:?}", answer.body);
                assert!(std::time::Instant::now() < deadline, "still 503");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stored += 2;
        }
        for stream in [NOTIFY_STREAM, DOMAIN_STREAM, DEAD_LETTER_STREAM] {
            wait_for_replicas(&js, stream, replicas).await;
        }
        wait_for_consumer_replicas(&js, replicas).await;

        let mut notify = js.get_stream(NOTIFY_STREAM).await.unwrap();
        let info = notify.info().await.unwrap();
        let this_epoch = info.config.metadata.get(EPOCH_METADATA_KEY).cloned();
        assert!(this_epoch.is_some());
        if epoch.is_some() {
            assert_eq!(
                this_epoch, epoch,
                "the epoch is kept at {replicas} replicas"
            );
        }
        epoch = this_epoch;
        // Everything stored so far, at every step, is still there, in order.
        assert_eq!(
            (
                info.state.first_sequence,
                info.state.last_sequence,
                info.state.messages
            ),
            (1, stored, stored)
        );
        for seq in 1..=stored {
            let message = notify.get_raw_message(seq).await.unwrap();
            assert_eq!(message.sequence, seq);
        }
        publisher.stop().await.unwrap();
    }
}

/// Waits until `stream` has `replicas` copies, each current.
async fn wait_for_replicas(js: &jetstream::Context, stream: &str, replicas: usize) {
    let settled = async {
        loop {
            if let Ok(mut s) = js.get_stream(stream).await
                && let Ok(info) = s.info().await
                && info.config.num_replicas == replicas
                && let Some(cluster) = &info.cluster
                && cluster.leader.is_some()
                && cluster.replicas.len() == replicas - 1
                && cluster.replicas.iter().all(|r| r.current)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT * 2, settled)
        .await
        .unwrap_or_else(|_| panic!("{stream} not at {replicas} replicas in time"));
}

/// Waits until the domain consumer has `replicas` copies: JetStream moves a
/// work queue's consumer along with its stream.
async fn wait_for_consumer_replicas(js: &jetstream::Context, replicas: usize) {
    let settled = async {
        loop {
            if let Ok(stream) = js.get_stream(DOMAIN_STREAM).await
                && let Ok(info) = stream.consumer_info(DOMAIN_CONSUMER).await
                && let Some(cluster) = &info.cluster
                && cluster.leader.is_some()
                && cluster.replicas.len() == replicas - 1
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT * 2, settled)
        .await
        .unwrap_or_else(|_| panic!("the domain consumer not at {replicas} replicas in time"));
}
