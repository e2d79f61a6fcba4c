//! Herald on a production NATS: seed lists, TLS only (with client
//! certificates), nkey users, `.creds` on an operator-mode server, users and
//! passwords in URLs, and least-privilege users that suffice for publishing,
//! live delivery and resume while the edge's user can neither write a
//! stream nor change one.
//!
//! Certificates, nkeys and operator-mode JWTs are minted per run; nothing
//! secret is committed.

use std::{collections::HashMap, path::PathBuf};

use async_nats::{Event, ServerError, jetstream};
use herald_shared::{
    channel::Channel,
    error_code::ErrorCode,
    events::EventType,
    frames::ServerFrame,
    ids::{Namespace, UserId},
    nats::NatsAuth,
    stream::{DOMAIN_CONSUMER, DOMAIN_STREAM, NOTIFY_STREAM},
    subject::{dead_letter_subject, domain_subject, live_subject, stored_subject},
};
use herald_tests::{
    WAIT,
    apps::{Stack, TestEdge, TestPublisher, edge_config, publisher_config},
    clients::{
        TEST_SECRET, WsClient, calendar_event, now, service_claims, service_token, sign, user_token,
    },
    nats::NatsServer,
    permissions,
    resume::{ResumingClient, Seqs},
};
use tempfile::TempDir;
use tokio::sync::mpsc;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in a temporary directory.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn mint() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = TempDir::new().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        write("ca.pem", ca.pem());
        for (name, names) in [
            ("server", vec!["127.0.0.1".to_string(), "localhost".into()]),
            ("client", vec!["herald".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// TLS required on the client port, client certificates verified.
    fn server_config(&self) -> String {
        self.tls_config(true)
    }

    /// TLS required on the client port; clients show no certificate (they
    /// authenticate otherwise).
    fn server_config_without_client_certs(&self) -> String {
        self.tls_config(false)
    }

    fn tls_config(&self, verify: bool) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n}}\n",
            self.path("server.pem").display(),
            self.path("server-key.pem").display(),
            self.path("ca.pem").display(),
        )
    }

    fn client_auth(&self) -> NatsAuth {
        NatsAuth {
            tls_ca: Some(self.path("ca.pem")),
            tls_cert: Some(self.path("client.pem")),
            tls_key: Some(self.path("client-key.pem")),
            ..NatsAuth::default()
        }
    }
}

/// Starts a publisher and an edge on `url` with their `auth`; one event
/// published over HTTP must reach a socket. Returns both, still running.
async fn publish_and_deliver(
    nats: &NatsServer,
    url: &str,
    edge_auth: NatsAuth,
    pub_auth: NatsAuth,
) -> (TestPublisher, TestEdge) {
    let mut config = publisher_config(nats);
    config.nats_url = url.into();
    config.nats_auth = pub_auth;
    let publisher = TestPublisher::spawn_with(config).await;
    let mut config = edge_config(nats, "edge-a");
    config.nats_url = url.into();
    config.nats_auth = edge_auth;
    let edge = TestEdge::spawn_with(config).await;
    let (mut alice, _) =
        WsClient::connect_welcomed(&edge.ws_url(&format!("token={}", user_token("alice", &[]))))
            .await;
    let answer = herald_tests::clients::post_event(
        &publisher.url(),
        &service_token(),
        &calendar_event("e1", &["alice"], &[]),
    )
    .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let ServerFrame::Event { id, .. } = alice.next_event().await else {
        unreachable!()
    };
    assert_eq!(id.to_string(), "e1");
    (publisher, edge)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_and_the_publisher_run_on_a_tls_only_nats_that_verifies_clients() {
    let pki = Pki::mint();
    let nats = NatsServer::start_with_config(&pki.server_config());
    let url = nats.url.replacen("nats://", "tls://", 1);

    // Without a client certificate the server refuses the handshake.
    let no_cert = NatsAuth {
        tls_ca: Some(pki.path("ca.pem")),
        ..NatsAuth::default()
    };
    let refused = tokio::time::timeout(
        WAIT,
        herald_shared::nats::connect(&url, &no_cert, "no cert", None),
    )
    .await
    .expect("an answer in time");
    assert!(refused.is_err(), "connected without a client certificate");

    publish_and_deliver(&nats, &url, pki.client_auth(), pki.client_auth()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_and_the_publisher_authenticate_with_nkeys() {
    let dir = TempDir::new().unwrap();
    let mut seeds = HashMap::new();
    let mut users = Vec::new();
    for name in ["edge", "publisher"] {
        let key = nkeys::KeyPair::new_user();
        let path = dir.path().join(format!("{name}.nk"));
        std::fs::write(&path, format!("{}\n", key.seed().unwrap())).unwrap();
        users.push(format!("{{ nkey: \"{}\" }}", key.public_key()));
        seeds.insert(name, path);
    }
    let nats = NatsServer::start_with_config(&format!(
        "authorization {{ users: [ {} ] }}\n",
        users.join(", ")
    ));

    // An nkey the server does not know is refused.
    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let auth = NatsAuth {
        nkey: Some(stranger),
        ..NatsAuth::default()
    };
    let refused = tokio::time::timeout(
        WAIT,
        herald_shared::nats::connect(&nats.url, &auth, "stranger", None),
    )
    .await
    .expect("an answer in time");
    assert!(refused.is_err(), "an unknown nkey connected");

    let nkey = |name: &str| NatsAuth {
        nkey: Some(seeds[name].clone()),
        ..NatsAuth::default()
    };
    publish_and_deliver(&nats, &nats.url, nkey("edge"), nkey("publisher")).await;
}

#[test]
fn the_readme_lists_exactly_the_permissions_the_tests_grant() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let table = permissions::readme_table();
    assert!(
        readme.contains(&table),
        "README.md should hold this table:\n{table}"
    );
}

/// A client of `user` that reports the server's errors (permission
/// violations) on the returned channel.
async fn watched_client(
    nats: &NatsServer,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), permissions::password(user))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(ServerError::Other(error)) = event {
                    let _ = tx.send(error);
                }
            }
        })
        .connect(&nats.url)
        .await
        .expect("connect");
    (client, rx)
}

/// Waits for the server to report a permission violation on `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let wanted = format!("\"{subject}\"");
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(error) = errors.recv().await {
            if error.to_lowercase().contains("permissions violation") && error.contains(&wanted) {
                return;
            }
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "no permission violation reported for {subject}"
    );
}

/// Adds each channel's seq of `published` to `expected`.
fn record(expected: &mut Seqs, published: herald_shared::api::PublishAccepted) {
    for p in published.published {
        expected
            .entry(p.channel.to_string())
            .or_default()
            .push(p.seq);
    }
}

/// Connects as Herald does as `user`: its password in the URL, its own
/// inbox prefix.
async fn connect_as(nats: &NatsServer, user: &str) -> async_nats::Client {
    let url = permissions::url_for(nats, user);
    herald_shared::nats::connect(&url, &permissions::auth_for(user), user, None)
        .await
        .expect("connect")
}

/// Last seq of the notification and domain streams, read as the publisher
/// (which may; the dead-letter stream it only writes).
async fn last_seqs(nats: &NatsServer) -> Vec<(String, u64)> {
    let client = connect_as(nats, "publisher").await;
    let js = jetstream::new(client);
    let mut seqs = Vec::new();
    for name in [NOTIFY_STREAM, DOMAIN_STREAM] {
        let stream = js.get_stream(name).await.expect("the stream exists");
        seqs.push((name.to_string(), stream.cached_info().state.last_sequence));
    }
    seqs
}

#[tokio::test(flavor = "multi_thread")]
async fn least_privilege_users_suffice_and_the_edge_user_cannot_write_or_change_streams() {
    let nats = NatsServer::start_with_config(&permissions::least_privilege_config());
    let publisher = TestPublisher::spawn_with(permissions::publisher_config(&nats)).await;
    let mut edges = Vec::new();
    for node in ["edge-a", "edge-b"] {
        edges.push(TestEdge::spawn_with(permissions::edge_config(&nats, node)).await);
    }
    // A second replica finds the streams and the consumer there: the update path.
    TestPublisher::spawn_with(permissions::publisher_config(&nats))
        .await
        .stop()
        .await
        .expect("a second publisher starts and stops cleanly");
    let stack = Stack {
        publisher,
        edges,
        nats,
    };
    // async-nats 0.51 alone ignores credentials in a URL (which is why
    // `herald_shared::nats::connect` takes them out and passes them on).
    let ignored = tokio::time::timeout(
        WAIT,
        async_nats::connect(permissions::url_for(&stack.nats, "publisher")),
    )
    .await
    .expect("an answer in time");
    assert!(ignored.is_err(), "async-nats used the URL's credentials");
    let ws = |i: usize| format!("ws://{}/v1/ws", stack.edges[i].addr);

    // Live: over HTTP and over NATS ingest, as the domain service.
    let mut expected = Seqs::new();
    let mut client = ResumingClient::new("u1", &["team"]);
    client.connect(&ws(0)).await.unwrap();
    record(
        &mut expected,
        stack
            .publish(&calendar_event("h1", &["u1"], &["team"]))
            .await,
    );
    let domain = jetstream::new(connect_as(&stack.nats, "domain-service").await);
    let body = calendar_event("n1", &["u1"], &[]).to_string();
    tokio::time::timeout(WAIT, async {
        domain
            .publish(
                domain_subject(EventType::CalendarEventUpdated).to_string(),
                body.into(),
            )
            .await?
            .await
    })
    .await
    .expect("stored in time")
    .expect("the domain-service user may publish domain events");
    // The NATS-ingested event takes the next seq on user:u1.
    let mut seen = 0;
    tokio::time::timeout(WAIT, async {
        while seen < 3 {
            client.next().await.expect("connected");
            seen = client.received.lock().unwrap().values().map(Vec::len).sum();
        }
    })
    .await
    .expect("three events live");
    let user_seqs = client.received.lock().unwrap()["user:u1"].clone();
    assert_eq!(user_seqs.len(), 2, "h1 then n1 on user:u1");
    assert_eq!(user_seqs[0], expected["user:u1"][0]);
    expected.insert("user:u1".into(), user_seqs);
    // Delivered live, not only by the edge's repairs: its subscriptions stand.
    let live = stack.nats.edge_subscriptions().await;
    for channel in [
        Channel::user(UserId::parse("u1").unwrap()),
        Channel::namespace(Namespace::parse("team").unwrap()),
    ] {
        let subject = live_subject(&channel).to_string();
        assert!(live.contains(&subject), "{subject} not in {live:?}");
    }
    // A malformed domain event is dead-lettered and acked: the work queue
    // empties (the publisher may store dead letters and ack).
    domain
        .publish(
            domain_subject(EventType::CalendarEventUpdated).to_string(),
            "not json".into(),
        )
        .await
        .unwrap()
        .await
        .expect("the domain stream stores it");
    let domain_stream = jetstream::new(connect_as(&stack.nats, "publisher").await);
    let emptied = tokio::time::timeout(WAIT, async {
        loop {
            let info = domain_stream.get_stream(DOMAIN_STREAM).await.unwrap();
            if info.cached_info().state.messages == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(emptied.is_ok(), "the domain stream kept its messages");

    // Resume on the other edge from the cursors: replay by direct get.
    client.disconnect();
    for i in 0..20 {
        record(
            &mut expected,
            stack
                .publish(&calendar_event(&format!("away-{i}"), &["u1"], &["team"]))
                .await,
        );
    }
    client.connect(&ws(1)).await.unwrap();
    let want: usize = expected.values().map(Vec::len).sum();
    let _ = tokio::time::timeout(WAIT, async {
        while client.tally(&expected).delivered < want {
            client.next().await.expect("connected");
        }
    })
    .await;
    let tally = client.tally(&expected);
    eprintln!("least privilege resume: {tally:?}");
    tally.assert_exact("resumed with the least-privilege users");

    // A cursor past everything a replica holds (as one behind the leader
    // sees a client's cursor): the edge asks the stream leader, then goes
    // live. Without the leader read in its permissions the read is refused,
    // the replay times out and the socket is closed.
    let stream_last = last_seqs(&stack.nats).await[0].1;
    let ahead = stack.edges[0].ws_url(&format!(
        "token={}&since={}",
        user_token("u3", &[]),
        stream_last + 1
    ));
    let (mut ahead, _) = WsClient::connect_welcomed(&ahead).await;
    // The first takes the cursor's seq: the client has it, by its cursor.
    for id in ["at-cursor", "after-cursor"] {
        stack.publish(&calendar_event(id, &["u3"], &[])).await;
    }
    assert!(
        matches!(ahead.next_event().await, ServerFrame::Event { seq, .. } if seq == stream_last + 2),
        "the event after the cursor, live"
    );

    // The session API with these users: the publisher writes the revocation
    // to its key-value bucket and sends the control message; the edge takes
    // it and ends the user's socket with REVOKED.
    let mut doomed =
        WsClient::connect(&stack.edges[0].ws_url(&format!("token={}", user_token("u2", &[]))))
            .await;
    assert!(matches!(
        doomed.next_frame().await,
        ServerFrame::Welcome { .. }
    ));
    let mut claims = service_claims();
    claims["scope"] = serde_json::json!("sessions:manage");
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/users/u2/disconnect", stack.publisher.url()))
        .bearer_auth(sign(&claims, TEST_SECRET))
        .json(&serde_json::json!({ "revoke_tokens_issued_before": now() + 5 }))
        .send()
        .await
        .expect("the publisher answers");
    assert_eq!(answer.status(), 202, "the revocation is stored and sent");
    let (frames, _) = tokio::time::timeout(WAIT, doomed.until_closed())
        .await
        .expect("the revoked socket is closed in time");
    assert!(
        matches!(
            frames.last(),
            Some(ServerFrame::Error {
                code: ErrorCode::Revoked,
                ..
            })
        ),
        "{frames:?}"
    );

    // The edge's user writes nothing and changes no stream.
    let before = last_seqs(&stack.nats).await;
    let (edge_user, mut errors) = watched_client(&stack.nats, "edge").await;
    let domain = domain_subject(EventType::CalendarEventUpdated).to_string();
    for subject in [
        stored_subject(&Channel::user(UserId::parse("u1").unwrap())).to_string(),
        dead_letter_subject(&domain).to_string(),
        domain,
    ] {
        edge_user
            .publish(
                subject.clone(),
                calendar_event("forged", &["u1"], &[]).to_string().into(),
            )
            .await
            .unwrap();
        violation(&mut errors, &subject).await;
    }
    for subject in [
        format!("$JS.API.STREAM.DELETE.{NOTIFY_STREAM}"),
        format!("$JS.API.STREAM.UPDATE.{NOTIFY_STREAM}"),
        format!("$JS.API.STREAM.PURGE.{NOTIFY_STREAM}"),
        format!("$JS.API.STREAM.MSG.DELETE.{NOTIFY_STREAM}"),
        "$JS.API.STREAM.CREATE.HERALD_EVIL".to_string(),
        format!("$JS.API.CONSUMER.DELETE.{DOMAIN_STREAM}.{DOMAIN_CONSUMER}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{DOMAIN_STREAM}.{DOMAIN_CONSUMER}"),
    ] {
        edge_user
            .publish_with_reply(subject.clone(), edge_user.new_inbox(), "{}".into())
            .await
            .unwrap();
        violation(&mut errors, &subject).await;
    }
    // Nor may a domain service read the edge's or the publisher's replies
    // (history reads, pulled domain events).
    let (domain_user, mut errors) = watched_client(&stack.nats, "domain-service").await;
    for user in ["edge", "publisher"] {
        let subject = format!("{}.>", permissions::inbox_prefix(user));
        let _denied = domain_user.subscribe(subject.clone()).await.unwrap();
        violation(&mut errors, &subject).await;
    }
    // Nor may a domain service store a notification past the publisher's
    // checks, or forge a dead letter.
    for subject in [
        stored_subject(&Channel::user(UserId::parse("u1").unwrap())).to_string(),
        dead_letter_subject(domain_subject(EventType::CalendarEventUpdated).as_str()).to_string(),
    ] {
        domain_user
            .publish(subject.clone(), "{}".into())
            .await
            .unwrap();
        violation(&mut errors, &subject).await;
    }
    assert_eq!(last_seqs(&stack.nats).await, before, "a stream changed");
    // Nothing forged reached the client either.
    let marker = stack.publish(&calendar_event("marker", &["u1"], &[])).await;
    let frame = tokio::time::timeout(WAIT, async {
        loop {
            if let frame @ ServerFrame::Event { .. } = client.next().await.unwrap() {
                return frame;
            }
        }
    })
    .await
    .expect("the marker in time");
    let ServerFrame::Event { id, seq, .. } = frame else {
        unreachable!()
    };
    assert_eq!(
        (id.to_string(), seq),
        ("marker".to_string(), marker.published[0].seq)
    );
}

/// A NATS JWT (`ed25519-nkey`) with `nats` claims about `subject`, signed
/// by `issuer`: what `nsc` would write, minted per run.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let encode = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let header = encode(serde_json::json!({ "typ": "JWT", "alg": "ed25519-nkey" }));
    let claims = encode(serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": herald_tests::clients::now(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    }));
    let signed = format!("{header}.{claims}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An operator, a system account, the account `HERALD` with JetStream, and
/// a `.creds` file per user of [`permissions::all`] with its least
/// privilege in its JWT.
struct Operator {
    dir: TempDir,
    config: String,
}

impl Operator {
    fn mint() -> Self {
        use nkeys::KeyPair;
        let dir = TempDir::new().unwrap();
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let herald = KeyPair::new_account();
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        let mut with_jetstream = unlimited.clone();
        for (key, value) in [
            ("mem_storage", -1),
            ("disk_storage", -1),
            ("streams", -1),
            ("consumer", -1),
        ] {
            with_jetstream[key] = value.into();
        }
        let account = |key: &KeyPair, name: &str, limits: &serde_json::Value| {
            nats_jwt(
                &operator,
                &key.public_key(),
                name,
                serde_json::json!({ "limits": limits, "type": "account", "version": 2 }),
            )
        };
        let config = format!(
            "operator: \"{operator_jwt}\"\nsystem_account: \"{sys}\"\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{sys_jwt}\"\n  {herald_pub}: \"{herald_jwt}\"\n}}\n",
            operator_jwt = nats_jwt(
                &operator,
                &operator.public_key(),
                "herald-test",
                serde_json::json!({
                    "type": "operator", "version": 2, "system_account": system.public_key(),
                }),
            ),
            sys = system.public_key(),
            sys_jwt = account(&system, "SYS", &unlimited),
            herald_pub = herald.public_key(),
            herald_jwt = account(&herald, "HERALD", &with_jetstream),
        );
        for user in permissions::all() {
            let key = KeyPair::new_user();
            let jwt = nats_jwt(
                &herald,
                &key.public_key(),
                user.user,
                serde_json::json!({
                    "pub": { "allow": user.publish },
                    "sub": { "allow": user.subscribe },
                    "subs": -1, "data": -1, "payload": -1,
                    "type": "user", "version": 2,
                }),
            );
            let creds = format!(
                "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n",
                seed = key.seed().unwrap(),
            );
            std::fs::write(dir.path().join(format!("{}.creds", user.user)), creds).unwrap();
        }
        Self { dir, config }
    }

    fn creds(&self, user: &str) -> NatsAuth {
        NatsAuth {
            creds: Some(self.dir.path().join(format!("{user}.creds"))),
            ..permissions::auth_for(user)
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_and_the_publisher_authenticate_with_creds_on_an_operator_mode_nats() {
    let operator = Operator::mint();
    let nats = NatsServer::start_with_config(&operator.config);

    // No credentials: refused.
    let refused = tokio::time::timeout(
        WAIT,
        herald_shared::nats::connect(&nats.url, &NatsAuth::default(), "anonymous", None),
    )
    .await
    .expect("an answer in time");
    assert!(refused.is_err(), "connected without credentials");

    publish_and_deliver(
        &nats,
        &nats.url,
        operator.creds("edge"),
        operator.creds("publisher"),
    )
    .await;
}

/// Issue 12, "done when": the edge and the publisher start against a NATS
/// that takes TLS only and authenticated users only (operator mode, a
/// `.creds` file per least-privilege user), with `--nats-tls-ca` and
/// `--nats-creds`, and an event published over HTTP reaches a socket. A
/// plain-text connection is refused, and so is a TLS one without
/// credentials: a test that passed with either would not show that Herald
/// used both.
#[tokio::test(flavor = "multi_thread")]
async fn the_edge_and_the_publisher_run_on_a_tls_only_credentials_only_nats() {
    let pki = Pki::mint();
    let operator = Operator::mint();
    let nats = NatsServer::start_with_config(&format!(
        "{}{}",
        operator.config,
        pki.server_config_without_client_certs()
    ));
    let url = nats.url.replacen("nats://", "tls://", 1);
    let tls_and_creds = |user: &str| NatsAuth {
        tls_ca: Some(pki.path("ca.pem")),
        ..operator.creds(user)
    };

    // Plain text: the server asks for TLS in its INFO and closes the
    // connection on a plain CONNECT, without a PONG.
    let plain = plain_text_exchange(&nats.url).await;
    assert!(plain.contains("\"tls_required\":true"), "{plain}");
    assert!(
        !plain.contains("PONG"),
        "a plain-text client was served: {plain}"
    );

    // TLS, but no credentials: refused. (The CA alone makes the handshake
    // succeed, so this is the authentication failing.)
    let tls_only = NatsAuth {
        tls_ca: Some(pki.path("ca.pem")),
        ..NatsAuth::default()
    };
    let refused = tokio::time::timeout(
        WAIT,
        herald_shared::nats::connect(&url, &tls_only, "anonymous", None),
    )
    .await
    .expect("an answer in time");
    let error = format!("{:#}", refused.expect_err("connected without credentials"));
    assert!(
        error.to_lowercase().contains("authorization"),
        "not refused for its credentials: {error}"
    );
    // Credentials over a connection that does not trust the server's CA:
    // refused too (the TLS flags are not decoration).
    let untrusting = tokio::time::timeout(
        WAIT,
        herald_shared::nats::connect(&url, &operator.creds("edge"), "untrusting", None),
    )
    .await
    .expect("an answer in time");
    assert!(untrusting.is_err(), "connected without trusting the CA");

    let _running = publish_and_deliver(
        &nats,
        &url,
        tls_and_creds("edge"),
        tls_and_creds("publisher"),
    )
    .await;
    // Both are connected over TLS as the users their credentials name.
    let connz: serde_json::Value = reqwest::get(format!("{}/connz?auth=true", nats.monitoring))
        .await
        .expect("connz")
        .json()
        .await
        .expect("connz json");
    let connections = connz["connections"].as_array().cloned().unwrap_or_default();
    for name in ["herald-publisher", "herald-edge"] {
        let conn = connections
            .iter()
            .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(name)))
            .unwrap_or_else(|| panic!("{name} not connected"));
        assert!(
            conn["tls_version"].as_str().is_some_and(|v| !v.is_empty()),
            "{name} not on TLS: {conn}"
        );
        assert!(
            conn["authorized_user"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "{name} not authenticated: {conn}"
        );
    }
}

/// What a plain-text client sees: the server's INFO, then whatever it
/// answers a plain `CONNECT` and `PING` with, until it closes the
/// connection (bounded).
async fn plain_text_exchange(url: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // A TLS-only server reports `tls://` URLs.
    let addr = url.rsplit("://").next().expect("an address");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The INFO line comes first, in plain text.
    while !seen.ends_with(b"\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("INFO in time")
            .expect("read");
        assert!(n > 0, "closed before INFO");
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = stream
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")
        .await;
    let _ = tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&seen).into_owned()
}

/// Names of the clients connected to `nats`.
async fn client_names(nats: &NatsServer) -> Vec<String> {
    nats.connz(false).await["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seed_list_is_tried_in_its_order_past_a_dead_node() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("nats://{}", listener.local_addr().unwrap())
    };
    let first = NatsServer::start();
    let second = NatsServer::start();
    let url = format!("{dead}, {},{}", first.url, second.url);
    let _running =
        publish_and_deliver(&first, &url, NatsAuth::default(), NatsAuth::default()).await;
    // In the given order, not shuffled: every client is on the first live
    // node (the edge's three: control and calls, live, history).
    let names = client_names(&first).await;
    assert!(
        names.iter().any(|n| n == "herald-publisher")
            && names
                .iter()
                .filter(|n| n.starts_with("herald-edge"))
                .count()
                == 3,
        "{names:?}"
    );
    assert_eq!(client_names(&second).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_in_the_url_authenticates() {
    let nats = NatsServer::start_with_config("authorization { token: \"t0ken-of-this-run\" }\n");
    let with = |token: &str| nats.url.replacen("://", &format!("://{token}@"), 1);
    let refused = tokio::time::timeout(
        WAIT,
        herald_shared::nats::connect(&with("wrong"), &NatsAuth::default(), "wrong", None),
    )
    .await
    .expect("an answer in time");
    let error = format!("{:#}", refused.expect_err("a wrong token connected"));
    assert!(
        !error.contains("wrong@"),
        "the token is in the error: {error}"
    );
    let url = with("t0ken-of-this-run");
    let _running = publish_and_deliver(&nats, &url, NatsAuth::default(), NatsAuth::default()).await;
}
