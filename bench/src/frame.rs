//! Reads what the load generator needs from a server frame, and nothing more.
//!
//! `event` frames are the hot path: the edge builds them as
//! `{"type":"event","channel":"…","seq":N,"id":"…",…}` (see `shared::frames::encode_event_frame`),
//! so the channel kind, the seq and the publish instant in the id are found by scanning a few
//! bytes, with no allocation. Anything else (or an event in another field order) goes through
//! serde_json, which is fine for the rare frames that are not events.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Which of a socket's channels an event came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    User,
    Namespace,
}

/// The parts of an `event` frame the bench records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventMeta {
    pub(crate) channel: ChannelKind,
    pub(crate) seq: u64,
    /// The publish instant from an id of the form `b<nanos>-<counter>`.
    pub(crate) sent_ns: Option<u64>,
}

/// A server frame, as far as the bench cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Event(EventMeta),
    Welcome(Welcome),
    /// Any other frame, by its `type`.
    Other(String),
}

/// The parts of `welcome` a resume needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Welcome {
    pub(crate) epoch: String,
    /// Per channel (`user:…`, `ns:…`), the seq live delivery starts above.
    #[serde(default)]
    pub(crate) seqs: BTreeMap<String, u64>,
}

const EVENT_PREFIX: &str = r#"{"type":"event","channel":""#;

/// Parses one text frame.
pub(crate) fn parse(text: &str) -> Frame {
    if let Some(meta) = parse_event_fast(text) {
        return Frame::Event(meta);
    }
    parse_slow(text)
}

fn parse_event_fast(text: &str) -> Option<EventMeta> {
    let rest = text.strip_prefix(EVENT_PREFIX)?;
    let channel = if rest.starts_with("user:") {
        ChannelKind::User
    } else if rest.starts_with("ns:") {
        ChannelKind::Namespace
    } else {
        return None;
    };
    let after_seq = &rest[rest.find(r#""seq":"#)? + 6..];
    let seq = leading_number(after_seq)?;
    let sent_ns = after_seq
        .find(r#""id":"b"#)
        .and_then(|at| leading_number(&after_seq[at + 7..]));
    Some(EventMeta {
        channel,
        seq,
        sent_ns,
    })
}

/// The decimal number at the start of `s`.
fn leading_number(s: &str) -> Option<u64> {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    s[..end].parse().ok()
}

fn parse_slow(text: &str) -> Frame {
    #[derive(Deserialize)]
    struct Any<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(default)]
        channel: Option<String>,
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        id: Option<String>,
    }
    let Ok(any) = serde_json::from_str::<Any<'_>>(text) else {
        return Frame::Other("unparsable".into());
    };
    match any.kind.as_ref() {
        "welcome" => match serde_json::from_str::<Welcome>(text) {
            Ok(welcome) => Frame::Welcome(welcome),
            Err(_) => Frame::Other("welcome-unparsable".into()),
        },
        "event" => {
            let channel = match any.channel.as_deref() {
                Some(c) if c.starts_with("user:") => ChannelKind::User,
                _ => ChannelKind::Namespace,
            };
            let sent_ns = any
                .id
                .as_deref()
                .and_then(|id| id.strip_prefix('b'))
                .and_then(leading_number);
            Frame::Event(EventMeta {
                channel,
                seq: any.seq.unwrap_or(0),
                sent_ns,
            })
        }
        other => Frame::Other(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frames_are_read_on_the_fast_path() {
        let text = r#"{"type":"event","channel":"ns:bench","seq":41,"id":"b123456-7","event_type":"calendar.event.updated","source":"s","time":"2026-11-26T10:00:00Z","data":{"id":"b9"}}"#;
        assert_eq!(
            parse_event_fast(text),
            Some(EventMeta {
                channel: ChannelKind::Namespace,
                seq: 41,
                sent_ns: Some(123_456)
            })
        );
    }

    #[test]
    fn other_frames_fall_back_to_serde() {
        let welcome = r#"{"type":"welcome","session_id":"x","user":"u1","node":"edge-a","epoch":"e1","heartbeat_ms":25000,"channels":["user:u1"],"token_exp":1,"seqs":{"user:u1":5}}"#;
        let Frame::Welcome(parsed) = parse(welcome) else {
            panic!("not a welcome");
        };
        assert_eq!(parsed.epoch, "e1");
        assert_eq!(parsed.seqs.get("user:u1"), Some(&5));
        assert_eq!(
            parse(r#"{"type":"history_truncated","channel":"user:u1","first_seq":3}"#),
            Frame::Other("history_truncated".into())
        );
        let reordered = r#"{"seq":3,"type":"event","channel":"user:u1","id":"b10-1"}"#;
        assert_eq!(
            parse(reordered),
            Frame::Event(EventMeta {
                channel: ChannelKind::User,
                seq: 3,
                sent_ns: Some(10)
            })
        );
    }
}
