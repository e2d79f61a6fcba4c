//! Least privilege: the exact NATS permissions of each Herald service, and a
//! nats-server configuration with one account whose users `edge`,
//! `publisher` and `domain-service` have exactly those (README, "NATS
//! permissions"; a test checks the README's table is this one).

use calendar_service::config::DEFAULT_BUCKET as CALENDAR_BUCKET;
use herald_shared::{
    session_control::REVOCATIONS_BUCKET,
    stream::{DEAD_LETTER_STREAM, DOMAIN_CONSUMER, DOMAIN_STREAM, NOTIFY_STREAM, PRESENCE_STREAM},
    subject::{
        DEAD_LETTER_SUBJECTS, DOMAIN_SUBJECTS, LIVE_SUBJECTS, NOTIFY_SUBJECTS, PRESENCE_SUBJECTS,
        RPC_SUBJECTS, SESSION_CONTROL_SUBJECTS, direct_get_subject,
    },
};

/// The stream behind the revocations key-value bucket.
fn revocations_stream() -> String {
    format!("KV_{REVOCATIONS_BUCKET}")
}

use crate::nats::NatsServer;

/// The prefix of `user`'s reply subjects (`--nats-inbox-prefix`): JetStream
/// API answers, publish acks, direct-get batches and pulled domain messages
/// come back under it, and only `user` may subscribe there.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

fn inboxes(user: &str) -> String {
    format!("{}.>", inbox_prefix(user))
}

/// One NATS user's permissions.
#[derive(Debug, Clone)]
pub struct Permissions {
    pub user: &'static str,
    /// Subjects it may publish to (JetStream API requests included).
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// May answer the requests it receives (once each, on their reply
    /// subject) without publish rights on anyone's inbox.
    pub allow_responses: bool,
}

/// The edge: reads the notification stream's info (its epoch, its last seq),
/// reads history by direct get (and from the stream leader, through the
/// JetStream API, when a replica that may be behind found nothing), and
/// takes the republished live copies; takes the session-control messages
/// and watches the revocations bucket (an ordered consumer: created,
/// recreated after a gap, flow-controlled); sends clients' calls to `rpc.>`
/// (answers come back to its inbox).
/// Presence: writes its sets to the presence stream (the only stream it
/// writes), reads it by direct get, and takes every edge's writes for the
/// namespaces its sockets watch.
pub fn edge() -> Permissions {
    let revocations = revocations_stream();
    Permissions {
        user: "edge",
        publish: vec![
            format!("$JS.API.STREAM.INFO.{NOTIFY_STREAM}"),
            direct_get_subject(NOTIFY_STREAM).into(),
            format!("$JS.API.STREAM.MSG.GET.{NOTIFY_STREAM}"),
            format!("$JS.API.STREAM.INFO.{revocations}"),
            // An ordered consumer has no name: the bare subject; named, `.>`.
            format!("$JS.API.CONSUMER.CREATE.{revocations}"),
            format!("$JS.API.CONSUMER.CREATE.{revocations}.>"),
            format!("$JS.API.CONSUMER.DELETE.{revocations}.>"),
            format!("$JS.FC.{revocations}.>"),
            RPC_SUBJECTS.into(),
            PRESENCE_SUBJECTS.into(),
            direct_get_subject(PRESENCE_STREAM).into(),
        ],
        subscribe: vec![
            LIVE_SUBJECTS.into(),
            SESSION_CONTROL_SUBJECTS.into(),
            PRESENCE_SUBJECTS.into(),
            inboxes("edge"),
        ],
        allow_responses: false,
    }
}

/// The publisher: creates and updates its three streams and the domain
/// consumer, stores notifications and dead letters, pulls and acks domain
/// events.
pub fn publisher() -> Permissions {
    let mut publish = vec![NOTIFY_SUBJECTS.to_string(), DEAD_LETTER_SUBJECTS.into()];
    // Reads the info of the streams it waits for (start-up, `/readyz`); the
    // dead-letter stream is only created or updated.
    for (stream, actions) in [
        (NOTIFY_STREAM, &["INFO", "CREATE", "UPDATE"][..]),
        (DOMAIN_STREAM, &["INFO", "CREATE", "UPDATE"]),
        (DEAD_LETTER_STREAM, &["CREATE", "UPDATE"]),
        (PRESENCE_STREAM, &["CREATE", "UPDATE"]),
    ] {
        for action in actions {
            publish.push(format!("$JS.API.STREAM.{action}.{stream}"));
        }
    }
    for action in ["CREATE", "INFO", "MSG.NEXT"] {
        publish.push(format!(
            "$JS.API.CONSUMER.{action}.{DOMAIN_STREAM}.{DOMAIN_CONSUMER}"
        ));
    }
    publish.push(format!("$JS.ACK.{DOMAIN_STREAM}.{DOMAIN_CONSUMER}.>"));
    // The session API: the revocations bucket (created or updated at
    // start-up, read and written compare-and-set) and the control messages.
    let revocations = revocations_stream();
    // Creating a bucket reads the account's limits first.
    publish.push("$JS.API.INFO".into());
    for action in ["INFO", "CREATE", "UPDATE"] {
        publish.push(format!("$JS.API.STREAM.{action}.{revocations}"));
    }
    publish.push(format!("$JS.API.DIRECT.GET.{revocations}.>"));
    publish.push(format!("$JS.API.STREAM.MSG.GET.{revocations}"));
    publish.push(format!("$KV.{REVOCATIONS_BUCKET}.>"));
    publish.push(SESSION_CONTROL_SUBJECTS.into());
    // `GET /v1/presence/{namespace}`.
    publish.push(direct_get_subject(PRESENCE_STREAM).into());
    Permissions {
        user: "publisher",
        publish,
        subscribe: vec![inboxes("publisher")],
        allow_responses: false,
    }
}

/// A domain service: publishes domain events and reads the stream's acks;
/// answers clients' calls on `rpc.>` (only edges may publish there, so it
/// can trust `Herald-User`), replying through `allow_responses`: a grant to
/// publish on `_INBOX_edge.>` would let it forge the edge's JetStream answers.
/// As the example calendar service it also keeps its calendars in a
/// key-value bucket (created or updated at start-up, read by direct get,
/// written compare-and-set).
pub fn domain_service() -> Permissions {
    let calendars = format!("KV_{CALENDAR_BUCKET}");
    let mut publish = vec![DOMAIN_SUBJECTS.to_string(), "$JS.API.INFO".into()];
    for action in ["INFO", "CREATE", "UPDATE"] {
        publish.push(format!("$JS.API.STREAM.{action}.{calendars}"));
    }
    publish.push(format!("$JS.API.DIRECT.GET.{calendars}.>"));
    publish.push(format!("$JS.API.STREAM.MSG.GET.{calendars}"));
    publish.push(format!("$KV.{CALENDAR_BUCKET}.>"));
    Permissions {
        user: "domain-service",
        publish,
        subscribe: vec![RPC_SUBJECTS.into(), inboxes("domain-service")],
        allow_responses: true,
    }
}

/// Every user, in the README's order.
pub fn all() -> Vec<Permissions> {
    vec![edge(), publisher(), domain_service()]
}

/// The test password of `user` (minted per run would buy nothing: the
/// server lives only as long as the test).
pub fn password(user: &str) -> String {
    format!("{user}-test-password")
}

/// The test harness's own user in the `HERALD` account of
/// [`least_privilege_config_with_admin`]: allowed everything, so a test can
/// check streams and consumers (info, replicas, leaders) the services'
/// users may not. No Herald service connects as it.
pub const ADMIN: &str = "harness-admin";

/// nats-server configuration: one account, `HERALD`, with JetStream, and
/// the users of [`all`] with exactly their permissions. Self-contained, so it
/// can be appended to any other configuration (a cluster node's, TLS);
/// connect with [`url_for`].
pub fn least_privilege_config() -> String {
    accounts_config(false)
}

/// As [`least_privilege_config`], plus the harness's [`ADMIN`] user.
pub fn least_privilege_config_with_admin() -> String {
    accounts_config(true)
}

fn accounts_config(with_admin: bool) -> String {
    let quoted = |subjects: &[String]| {
        subjects
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let users = all()
        .iter()
        .map(|p| {
            format!(
                "      {{ user: \"{user}\", password: \"{password}\", permissions: {{ \
                 publish: {{ allow: [{publish}] }}, subscribe: {{ allow: [{subscribe}] }}, \
                 allow_responses: {responses} }} }}",
                user = p.user,
                password = password(p.user),
                publish = quoted(&p.publish),
                subscribe = quoted(&p.subscribe),
                responses = p.allow_responses,
            )
        })
        .chain(with_admin.then(|| {
            format!(
                "      {{ user: \"{ADMIN}\", password: \"{}\" }}",
                password(ADMIN)
            )
        }))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "accounts {{\n  HERALD {{\n    jetstream: enabled\n    users: [\n{users}\n    ]\n  }}\n}}\n"
    )
}

/// The connection options of `user`: its inbox prefix.
pub fn auth_for(user: &str) -> herald_shared::nats::NatsAuth {
    herald_shared::nats::NatsAuth {
        inbox_prefix: Some(inbox_prefix(user)),
        ..Default::default()
    }
}

/// The test publisher's config for `server`, connecting as the `publisher`
/// user: what a least-privilege deployment runs.
pub fn publisher_config(server: &NatsServer) -> herald_publisher::Config {
    let mut config = crate::apps::publisher_config(server);
    config.nats_url = url_for(server, "publisher");
    config.nats_auth = auth_for("publisher");
    config
}

/// The test edge's config for `server` as node `node_id`, connecting as the
/// `edge` user.
pub fn edge_config(server: &NatsServer, node_id: &str) -> herald_edge::Config {
    let mut config = crate::apps::edge_config(server, node_id);
    config.nats_url = url_for(server, "edge");
    config.nats_auth = auth_for("edge");
    config
}

/// `nats://user:password@host:port` of `server` for `user`.
pub fn url_for(server: &NatsServer, user: &str) -> String {
    with_credentials(&server.url, user)
}

/// `url` (`nats://host:port`) with `user`'s name and password in it.
pub fn with_credentials(url: &str, user: &str) -> String {
    url.replacen("://", &format!("://{user}:{}@", password(user)), 1)
}

/// The README's table of these permissions, one row per user.
pub fn readme_table() -> String {
    let code = |subjects: &[String]| {
        subjects
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut table = String::from("| user | publish | subscribe |\n| --- | --- | --- |\n");
    for p in all() {
        let responses = if p.allow_responses {
            " and the reply subjects of requests it receives (`allow_responses`)"
        } else {
            ""
        };
        table.push_str(&format!(
            "| `{}` | {}{responses} | {} |\n",
            p.user,
            code(&p.publish),
            code(&p.subscribe)
        ));
    }
    table
}
