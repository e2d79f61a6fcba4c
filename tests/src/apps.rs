//! The real publisher and edge, in-process on `127.0.0.1:0`, each stopped
//! through the shutdown future its `run` was given.

use std::{net::SocketAddr, time::Duration};

use herald_shared::{
    config::HttpLimits,
    jwt::{Expectations, KeySet},
};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{WAIT, clients::TEST_SECRET, nats::NatsServer};

/// A running publisher.
#[derive(Debug)]
pub struct TestPublisher {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A running edge.
#[derive(Debug)]
pub struct TestEdge {
    pub addr: SocketAddr,
    pub node_id: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The publisher configuration the tests use, for tweaking.
pub fn publisher_config(nats: &NatsServer) -> herald_publisher::Config {
    publisher_config_on(&nats.url)
}

/// As [`publisher_config`], connecting to `nats_url` (e.g. a cluster node's).
pub fn publisher_config_on(nats_url: &str) -> herald_publisher::Config {
    herald_publisher::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        nats_url: nats_url.into(),
        nats_auth: Default::default(),
        keys: KeySet::hs256(TEST_SECRET.as_bytes()).into(),
        expect: Expectations {
            audience: "herald-publisher".into(),
            issuer: None,
        },
        http: HttpLimits::default(),
        stream: herald_publisher::streams::StreamLimits {
            max_age: Duration::from_secs(3600),
            max_bytes: 256 << 20,
            dedup_window: Duration::from_secs(120),
            replicas: 1,
        },
        publish_window: 256,
        limits: herald_publisher::config::PublishLimits::default(),
        // A short ack wait: a message a killed publisher held comes back soon.
        ingest: Some(herald_publisher::streams::IngestLimits {
            ack_wait: Duration::from_secs(2),
            max_attempts: 10,
            window: 512,
            replicas: 1,
        }),
        max_token_lifetime: Duration::from_secs(3600),
        dev_mode: false,
        presence_max_members: 1000,
    }
}

/// The edge configuration the tests use, for tweaking.
pub fn edge_config(nats: &NatsServer, node_id: &str) -> herald_edge::Config {
    edge_config_on(&nats.url, node_id)
}

/// As [`edge_config`], connecting to `nats_url` (e.g. a cluster node's).
pub fn edge_config_on(nats_url: &str, node_id: &str) -> herald_edge::Config {
    herald_edge::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        nats_url: nats_url.into(),
        nats_auth: Default::default(),
        keys: KeySet::hs256(TEST_SECRET.as_bytes()).into(),
        expect: Expectations {
            audience: "herald".into(),
            issuer: None,
        },
        max_token_grants: 256,
        http: HttpLimits::default(),
        node_id: node_id.into(),
        heartbeat: Duration::from_secs(25),
        max_namespaces_per_socket: 100,
        outbound_queue_bytes: 1 << 20,
        socket_send_buffer_bytes: Some(64 * 1024),
        write_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(5),
        reconcile_interval: Duration::from_secs(30),
        client_frames_per_sec: 20,
        client_frame_burst: 40,
        rate_limit_violations: 10,
        max_connections: None,
        max_connections_per_user: None,
        allowed_origins: None,
        rpc_timeout: Duration::from_secs(5),
        max_rpc_in_flight: 8,
        replay_page_bytes: 512 * 1024,
        replay_concurrency: 8,
        dev_mode: false,
        // Used only when a test turns `dev_mode` on.
        dev_secret: Some(herald_shared::secret::Secret::new(TEST_SECRET)),
        dev_publisher_url: "http://127.0.0.1:8090".into(),
        presence_ttl: Duration::from_secs(30),
        presence_max_members: 1000,
    }
}

impl TestPublisher {
    pub async fn spawn(nats: &NatsServer) -> Self {
        Self::spawn_with(publisher_config(nats)).await
    }

    pub async fn spawn_with(config: herald_publisher::Config) -> Self {
        herald_shared::telemetry::init_for_tests();
        let listener = herald_shared::net::bind(config.listen).expect("bind publisher");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(herald_publisher::run(config, listener, async move {
            let _ = stopped.await;
        }));
        wait_ready(addr).await;
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().map(|stop| stop.send(()));
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("publisher stops in time")?
    }
}

impl TestEdge {
    pub async fn spawn(nats: &NatsServer, node_id: &str) -> Self {
        Self::spawn_with(edge_config(nats, node_id)).await
    }

    pub async fn spawn_with(config: herald_edge::Config) -> Self {
        herald_shared::telemetry::init_for_tests();
        let node_id = config.node_id.clone();
        let listener = herald_shared::net::bind(config.listen).expect("bind edge");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(herald_edge::run(config, listener, async move {
            let _ = stopped.await;
        }));
        wait_ready(addr).await;
        Self {
            addr,
            node_id,
            stop: Some(stop),
            task,
        }
    }

    /// `ws://addr/v1/ws?<query>`
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/v1/ws?{query}", self.addr)
    }

    /// A WebSocket of user `sub` (a token granting `ns`), past its `welcome`,
    /// which it returns too.
    pub async fn connect_as(
        &self,
        sub: &str,
        ns: &[&str],
    ) -> (crate::clients::WsClient, herald_shared::frames::ServerFrame) {
        let token = crate::clients::user_token(sub, ns);
        crate::clients::WsClient::connect_welcomed(&self.ws_url(&format!("token={token}"))).await
    }

    /// Starts a drain and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().map(|stop| stop.send(()));
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("edge stops in time")?
    }
}

impl Drop for TestPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running replica of the example calendar service
/// (`examples/calendar-service`), answering `rpc.calendar.*`.
#[derive(Debug)]
pub struct TestCalendarService {
    /// Requests it has answered so far.
    pub answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The calendar service configuration the tests use: no members, no auto-join.
pub fn calendar_config(nats: &NatsServer) -> calendar_service::Config {
    calendar_service::Config::new(nats.url.clone())
}

impl TestCalendarService {
    /// Starts a replica; it is subscribed when this returns.
    pub async fn spawn_with(config: calendar_service::Config) -> Self {
        herald_shared::telemetry::init_for_tests();
        let service = tokio::time::timeout(READY_WITHIN, calendar_service::Service::start(config))
            .await
            .expect("calendar service starts in time")
            .expect("calendar service starts");
        let answered = service.answered();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(service.serve(async move {
            let _ = stopped.await;
        }));
        Self {
            answered,
            stop: Some(stop),
            task,
        }
    }

    /// Ends it at once, as a crash would: requests in hand get no reply, its
    /// NATS connection closes.
    pub async fn kill(mut self) {
        self.task.abort();
        // Its futures (and with them its NATS connection) are dropped by now.
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
    }

    /// Drains it and waits for `serve` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().map(|stop| stop.send(()));
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("calendar service stops in time")?
    }
}

impl Drop for TestCalendarService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a service may take to become ready: on a cluster that has just
/// started, the publisher creates its streams, bucket and consumer through
/// JetStream's meta leader before `/readyz` answers, which took over 10 s
/// once in 15 runs on a loaded two-core machine.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Polls `/readyz` until it answers 200.
pub async fn wait_ready(addr: SocketAddr) {
    let url = format!("http://{addr}/readyz");
    let ready = async {
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(READY_WITHIN, ready)
        .await
        .unwrap_or_else(|_| panic!("{url} not ready in time"));
}

/// A whole pipeline: nats-server, a publisher, and `n_edges` edges
/// (`edge-a`, `edge-b`, …).
#[derive(Debug)]
pub struct Stack {
    pub publisher: TestPublisher,
    pub edges: Vec<TestEdge>,
    /// Last, so it outlives the services when dropped.
    pub nats: NatsServer,
}

impl Stack {
    pub async fn start(n_edges: usize) -> Self {
        let nats = NatsServer::start();
        let publisher = TestPublisher::spawn(&nats).await;
        let mut edges = Vec::new();
        for i in 0..n_edges {
            let node_id = format!("edge-{}", (b'a' + i as u8) as char);
            edges.push(TestEdge::spawn(&nats, &node_id).await);
        }
        Self {
            publisher,
            edges,
            nats,
        }
    }

    pub fn edge(&self) -> &TestEdge {
        &self.edges[0]
    }

    /// Publishes with the test service token; panics unless it is accepted.
    pub async fn publish(&self, body: &serde_json::Value) -> herald_shared::api::PublishAccepted {
        let answer = crate::clients::post_event(
            &self.publisher.url(),
            &crate::clients::service_token(),
            body,
        )
        .await;
        assert_eq!(answer.status, 202, "publish refused: {:?}", answer.body);
        serde_json::from_value(answer.body).expect("a 202 body")
    }
}
