//! The only place that builds or parses NATS subjects.
//!
//! Stored notifications live on `notify.user.<token>` and `notify.ns.<token>`;
//! the stream republishes each stored message to the same subject under
//! `live.` for edges. Domain events arrive on `domain.<event type>`. Edges
//! send a client's calls to `rpc.<method>` (a registered method's name).
//!
//! User ids and namespace names become a single subject token through a
//! reversible escaping: ASCII letters, digits, `-` and `_` stay as they are,
//! every other byte becomes `~XX` (uppercase hex). The output therefore never
//! holds `.`, `*`, `>` or whitespace, so no id can add tokens or wildcards,
//! and since the escaping is injective, distinct ids never share a subject.

use std::fmt;

use time::OffsetDateTime;

use crate::{
    channel::{Channel, ChannelKind},
    events::EventType,
    ids::{Namespace, UserId},
    rpc::RpcMethod,
};

/// Subjects of the notification stream.
pub const NOTIFY_SUBJECTS: &str = "notify.>";
/// Where the notification stream republishes every stored message.
pub const LIVE_SUBJECTS: &str = "live.>";
/// Subjects domain services publish events to.
pub const DOMAIN_SUBJECTS: &str = "domain.>";
/// Subjects of the dead-letter stream.
pub const DEAD_LETTER_SUBJECTS: &str = "deadletter.>";
/// Session control for every user: each edge holds one subscription to it,
/// however many users it serves.
pub const SESSION_CONTROL_SUBJECTS: &str = "session.*";
/// Subjects of the presence stream: `presence.<namespace>.<node>`.
pub const PRESENCE_SUBJECTS: &str = "presence.>";

/// Every RPC method: only edges may publish here, domain services subscribe.
pub const RPC_SUBJECTS: &str = "rpc.>";

const NOTIFY_PREFIX: &str = "notify";
const RPC_PREFIX: &str = "rpc";
const LIVE_PREFIX: &str = "live";
const DOMAIN_PREFIX: &str = "domain";
const DEAD_LETTER_PREFIX: &str = "deadletter";
const SESSION_PREFIX: &str = "session";
const PRESENCE_PREFIX: &str = "presence";
/// Stands for [`ESCAPE`] in key-value keys, which may not hold `~`; `=` is
/// never left as it is by [`escape_token`], so the mapping stays one-to-one.
const KEY_ESCAPE: char = '=';
const USER_TOKEN: &str = "user";
const NAMESPACE_TOKEN: &str = "ns";
const ESCAPE: u8 = b'~';

/// A NATS subject built by this module.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject(String);

impl Subject {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Subject> for String {
    fn from(subject: Subject) -> String {
        subject.0
    }
}

/// The subject a channel's notifications are stored on: `notify.user.alice~40example~2Ecom`.
pub fn stored_subject(channel: &Channel) -> Subject {
    channel_subject(NOTIFY_PREFIX, channel)
}

/// The subject the stream republishes a channel's notifications to: `live.ns.team-42`.
pub fn live_subject(channel: &Channel) -> Subject {
    channel_subject(LIVE_PREFIX, channel)
}

/// The channel of a stored (`notify.…`) or republished (`live.…`) subject.
///
/// Returns `None` for any subject this module did not build.
pub fn channel_from_subject(subject: &str) -> Option<Channel> {
    let rest = subject
        .strip_prefix(NOTIFY_PREFIX)
        .or_else(|| subject.strip_prefix(LIVE_PREFIX))?
        .strip_prefix('.')?;
    let (kind, token) = rest.split_once('.')?;
    let id = unescape_token(token)?;
    match kind {
        USER_TOKEN => UserId::parse(id).ok().map(Channel::user),
        NAMESPACE_TOKEN => Namespace::parse(id).ok().map(Channel::namespace),
        _ => None,
    }
}

/// The subject a domain service publishes an event of this type to: `domain.calendar.event.updated`.
pub fn domain_subject(event_type: EventType) -> Subject {
    Subject(format!("{DOMAIN_PREFIX}.{}", event_type.as_str()))
}

/// The registered event type a domain subject names: `domain.calendar.event.updated` →
/// `CalendarEventUpdated`.
///
/// `None` for a subject outside `domain.` or a tail that is not a registered type;
/// NATS ingest refuses an envelope whose `type` differs from this.
pub fn event_type_from_domain_subject(subject: &str) -> Option<EventType> {
    domain_tail(subject).and_then(EventType::parse)
}

/// The dead-letter subject for a rejected domain message: `deadletter.calendar.event.updated`.
///
/// `original` is the domain subject the message came on; only its tail is kept.
pub fn dead_letter_subject(original: &str) -> Subject {
    Subject(format!(
        "{DEAD_LETTER_PREFIX}.{}",
        domain_tail(original).unwrap_or("unknown")
    ))
}

/// The subject a call of `method` is requested on: `rpc.calendar.event.rsvp`.
///
/// Only registered methods have one; their names are fixed literals, so no
/// client input reaches the subject.
pub fn rpc_subject(method: RpcMethod) -> Subject {
    Subject(format!("{RPC_PREFIX}.{}", method.as_str()))
}

/// The registered method an rpc subject names; `None` for any subject
/// [`rpc_subject`] did not build.
pub fn method_from_rpc_subject(subject: &str) -> Option<RpcMethod> {
    RpcMethod::parse(subject.strip_prefix(RPC_PREFIX)?.strip_prefix('.')?)
}

/// What follows `domain.` in a domain subject.
fn domain_tail(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(DOMAIN_PREFIX)?
        .strip_prefix('.')
        .filter(|tail| !tail.is_empty())
}

/// The direct-get API subject of a stream: `$JS.API.DIRECT.GET.HERALD_NOTIFY`.
///
/// Direct get is stateless and answered by any replica; edges read the
/// notification stream only through it.
pub fn direct_get_subject(stream: &str) -> Subject {
    Subject(format!("$JS.API.DIRECT.GET.{stream}"))
}

/// The `Nats-Msg-Id` of one stored notification: the stored subject, `|`, the event id.
///
/// Subjects never contain `|`, so the pair is unambiguous, and the id is unique
/// per (event, channel), which is what the stream's dedup window needs.
pub fn message_id(stored: &Subject, event_id: &str) -> String {
    format!("{stored}|{event_id}")
}

/// The `Nats-Msg-Id` of the dead letter of a domain message: `dead-<stream seq>-<stored at, Unix ns>`.
///
/// Every redelivery of the domain message gets the same id, so the dead-letter
/// stream's dedup window keeps one record however often it is rejected; the
/// timestamp tells apart messages of a recreated domain stream, whose sequences
/// restart at 1. See [`EventId::for_domain_message`](crate::ids::EventId::for_domain_message).
pub fn dead_letter_message_id(stream_seq: u64, stored_at: OffsetDateTime) -> String {
    format!("dead-{stream_seq}-{}", stored_at.unix_timestamp_nanos())
}

/// The subject a user's session control messages go to: `session.alice~40example~2Ecom`.
pub fn session_control_subject(user: &UserId) -> Subject {
    Subject(format!("{SESSION_PREFIX}.{}", escape_token(user.as_str())))
}

/// The user a session control subject names; `None` for any subject
/// [`session_control_subject`] did not build.
pub fn user_from_session_control_subject(subject: &str) -> Option<UserId> {
    let token = subject.strip_prefix(SESSION_PREFIX)?.strip_prefix('.')?;
    UserId::parse(unescape_token(token)?).ok()
}

/// A user's key in the revocations bucket: the escaped id with `=` for `~`
/// (`alice=40example=2Ecom`), one key-value token whatever the id holds.
pub fn revocation_key(user: &UserId) -> String {
    key_token(user.as_str())
}

/// A calendar's key in the example calendar service's bucket
/// (`examples/calendar-service`): escaped as [`revocation_key`], so a
/// calendar id with `.`, `*` or `>` is still one key.
pub fn calendar_key(calendar_id: &str) -> String {
    key_token(calendar_id)
}

/// [`escape_token`] with `=` for `~`, which key-value keys may not hold.
fn key_token(raw: &str) -> String {
    escape_token(raw).replace(ESCAPE as char, &KEY_ESCAPE.to_string())
}

/// The user a revocations key names; `None` for a key [`revocation_key`]
/// did not build.
pub fn user_from_revocation_key(key: &str) -> Option<UserId> {
    if key.contains(ESCAPE as char) {
        return None;
    }
    let token = key.replace(KEY_ESCAPE, &(ESCAPE as char).to_string());
    UserId::parse(unescape_token(&token)?).ok()
}

/// Where an edge writes its members of a namespace: `presence.team-42.edge-1`.
/// Both the namespace and the node id are escaped into one token each.
pub fn presence_subject(namespace: &Namespace, node: &str) -> Subject {
    Subject(format!(
        "{PRESENCE_PREFIX}.{}.{}",
        escape_token(namespace.as_str()),
        escape_token(node)
    ))
}

/// Every edge's members of a namespace: `presence.team-42.*`, to subscribe
/// to and to read the last message of each.
pub fn presence_filter(namespace: &Namespace) -> Subject {
    Subject(format!(
        "{PRESENCE_PREFIX}.{}.*",
        escape_token(namespace.as_str())
    ))
}

/// The namespace and node of a subject [`presence_subject`] built; `None`
/// for any other.
pub fn presence_from_subject(subject: &str) -> Option<(Namespace, String)> {
    let rest = subject.strip_prefix(PRESENCE_PREFIX)?.strip_prefix('.')?;
    let (namespace, node) = rest.split_once('.')?;
    let namespace = Namespace::parse(unescape_token(namespace)?).ok()?;
    Some((namespace, unescape_token(node)?))
}

fn channel_subject(prefix: &str, channel: &Channel) -> Subject {
    let (kind, id) = match channel.kind() {
        ChannelKind::User(user) => (USER_TOKEN, user.as_str()),
        ChannelKind::Namespace(ns) => (NAMESPACE_TOKEN, ns.as_str()),
    };
    Subject(format!("{prefix}.{kind}.{}", escape_token(id)))
}

/// Escapes an arbitrary string into one safe subject token.
///
/// ```text
/// escape_token("alice@example.com") == "alice~40example~2Ecom"
/// escape_token("bob.>")             == "bob~2E~3E"
/// ```
pub fn escape_token(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for &byte in raw.as_bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(byte as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push(ESCAPE as char);
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xF)] as char);
        }
    }
    out
}

/// Reverses [`escape_token`]; `None` for anything it could not have produced.
pub fn unescape_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == ESCAPE {
            let hex = token.get(i + 1..i + 3)?;
            // Only uppercase hex is produced, so only uppercase is accepted:
            // that keeps the mapping one-to-one.
            if !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            {
                return None;
            }
            let decoded = u8::from_str_radix(hex, 16).ok()?;
            if decoded.is_ascii_alphanumeric() || decoded == b'-' || decoded == b'_' {
                return None;
            }
            out.push(decoded);
            i += 3;
        } else if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(byte);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn presence_subjects_hold_hostile_ids_in_one_token_each() {
        let ns = Namespace::parse("a.b").unwrap();
        let subject = presence_subject(&ns, "edge.*");
        assert_eq!(subject.as_str(), "presence.a~2Eb.edge~2E~2A");
        assert_eq!(presence_filter(&ns).as_str(), "presence.a~2Eb.*");
        assert_eq!(
            presence_from_subject(subject.as_str()),
            Some((ns, "edge.*".to_string()))
        );
        assert_eq!(presence_from_subject("presence.a.b.c"), None);
        assert_eq!(presence_from_subject("live.ns.a"), None);
    }

    #[test]
    fn escaping_examples() {
        assert_eq!(escape_token("alice@example.com"), "alice~40example~2Ecom");
        assert_eq!(escape_token("bob.>"), "bob~2E~3E");
        assert_eq!(escape_token("*"), "~2A");
        assert_eq!(escape_token("a b"), "a~20b");
        assert_eq!(escape_token("~"), "~7E");
        assert_eq!(escape_token("Zoë"), "Zo~C3~AB");
        assert_eq!(escape_token("u_1-x"), "u_1-x");
    }

    #[test]
    fn subjects_for_channels() {
        let alice = Channel::user(UserId::parse("alice@example.com").unwrap());
        assert_eq!(
            stored_subject(&alice).as_str(),
            "notify.user.alice~40example~2Ecom"
        );
        assert_eq!(
            live_subject(&alice).as_str(),
            "live.user.alice~40example~2Ecom"
        );
        let team = Channel::namespace(Namespace::parse("team-42").unwrap());
        assert_eq!(live_subject(&team).as_str(), "live.ns.team-42");
        assert_eq!(channel_from_subject("live.ns.team-42"), Some(team));
        assert_eq!(
            channel_from_subject("notify.user.alice~40example~2Ecom"),
            Some(alice)
        );
        assert_eq!(channel_from_subject("live.user.a.b"), None);
        assert_eq!(channel_from_subject("live.room.x"), None);
        assert_eq!(channel_from_subject("other.user.x"), None);
    }

    #[test]
    fn domain_subjects_name_their_event_type() {
        for &event_type in EventType::ALL {
            let subject = domain_subject(event_type);
            assert_eq!(
                event_type_from_domain_subject(subject.as_str()),
                Some(event_type)
            );
        }
        assert_eq!(
            event_type_from_domain_subject("domain.calendar.event.exploded"),
            None
        );
        assert_eq!(event_type_from_domain_subject("domain."), None);
        assert_eq!(event_type_from_domain_subject("domain"), None);
        assert_eq!(
            event_type_from_domain_subject("domainx.calendar.event.updated"),
            None
        );
        assert_eq!(
            event_type_from_domain_subject("live.calendar.event.updated"),
            None
        );
        assert_eq!(
            dead_letter_subject("domain.calendar.event.exploded").as_str(),
            "deadletter.calendar.event.exploded"
        );
        assert_eq!(
            dead_letter_subject("elsewhere").as_str(),
            "deadletter.unknown"
        );
    }

    #[test]
    fn rpc_subjects_name_their_method() {
        for &method in RpcMethod::ALL {
            let subject = rpc_subject(method);
            assert!(subject.as_str().starts_with("rpc."));
            assert_eq!(method_from_rpc_subject(subject.as_str()), Some(method));
        }
        assert_eq!(
            rpc_subject(RpcMethod::CalendarEventRsvp).as_str(),
            "rpc.calendar.event.rsvp"
        );
        assert_eq!(method_from_rpc_subject("rpc.calendar.event.*"), None);
        assert_eq!(method_from_rpc_subject("rpccalendar.event.rsvp"), None);
        assert_eq!(method_from_rpc_subject("domain.calendar.event.rsvp"), None);
    }

    #[test]
    fn unescape_refuses_what_escape_never_emits() {
        assert_eq!(unescape_token("a.b"), None);
        assert_eq!(unescape_token("~2e"), None, "lowercase hex");
        assert_eq!(unescape_token("~41"), None, "an escaped letter");
        assert_eq!(unescape_token("~4"), None, "truncated");
        assert_eq!(unescape_token("~FF"), None, "not UTF-8");
    }

    #[test]
    fn session_subjects_and_keys_name_one_user() {
        for id in ["alice", "a.b", "a.*", "a.>", "*", ">", "a~b", "a=b", "Zoë"] {
            let user = UserId::parse(id).unwrap();
            let subject = session_control_subject(&user);
            assert!(!subject.as_str()[SESSION_PREFIX.len() + 1..].contains(['.', '*', '>']));
            assert_eq!(
                user_from_session_control_subject(subject.as_str()),
                Some(user.clone())
            );
            let key = revocation_key(&user);
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
                "{key}"
            );
            assert_eq!(user_from_revocation_key(&key), Some(user));
        }
        assert_eq!(revocation_key(&UserId::parse("a.b").unwrap()), "a=2Eb");
        assert_ne!(
            revocation_key(&UserId::parse("a=2Eb").unwrap()),
            revocation_key(&UserId::parse("a.b").unwrap())
        );
        assert_eq!(user_from_session_control_subject("session.a.b"), None);
        assert_eq!(user_from_session_control_subject("sessionx.a"), None);
        assert_eq!(user_from_revocation_key("a~2Eb"), None);
    }

    fn any_id() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]{1,12}",
            "[ -~]{1,40}", // every printable ASCII character, `.`, `*` and `>` among them
            "\\PC{1,40}",  // any non-control Unicode
            Just("bob.>".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn escaping_round_trips(id in any_id()) {
            prop_assert_eq!(unescape_token(&escape_token(&id)), Some(id));
        }

        #[test]
        fn escaped_tokens_hold_no_separator_wildcard_or_whitespace(id in any_id()) {
            let token = escape_token(&id);
            prop_assert!(!token.is_empty());
            prop_assert!(!token.contains(['.', '*', '>']));
            prop_assert!(!token.chars().any(char::is_whitespace));
        }

        #[test]
        fn revocation_keys_round_trip(id in "[ -~]{1,40}") {
            let user = UserId::parse(id).unwrap();
            prop_assert_eq!(user_from_revocation_key(&revocation_key(&user)), Some(user));
        }

        #[test]
        fn distinct_ids_never_collide(a in any_id(), b in any_id()) {
            prop_assume!(a != b);
            prop_assert_ne!(escape_token(&a), escape_token(&b));
        }
    }
}
