//! The three-node cluster harness itself: it comes up with a meta leader,
//! holds an R3 stream, and a killed node neither loses what was stored nor
//! stops the stream.

use std::time::Duration;

use async_nats::jetstream::{self, stream::Config};
use herald_tests::{WAIT, cluster::NatsCluster};

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
