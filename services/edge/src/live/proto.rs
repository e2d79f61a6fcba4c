//! The core NATS client protocol, as far as the live path speaks it: the
//! server operations it reads (`INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`,
//! `-ERR`) and the commands it writes (`CONNECT`, `SUB`, `UNSUB`, `PING`,
//! `PONG`). Pure: bytes in, operations out.

use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName};
use bytes::{Buf, Bytes, BytesMut};

/// The longest control line accepted (an `INFO` with a cluster's URLs is
/// the longest a server sends).
const MAX_CONTROL_LINE: usize = 1 << 20;
/// The largest message accepted; servers cap payloads at 1 MiB by default
/// and 64 MiB at most.
const MAX_MESSAGE: usize = 64 << 20;

/// What the server said.
#[derive(Debug)]
pub(crate) enum ServerOp {
    Info(Box<Info>),
    Msg(Msg),
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// A delivered message: its subscription and what the live path reads.
#[derive(Debug)]
pub(crate) struct Msg {
    pub(crate) sid: u64,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) payload: Bytes,
}

/// The fields of the server's `INFO` that a client acts on.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Info {
    pub(crate) nonce: Option<String>,
    pub(crate) tls_required: bool,
    pub(crate) headers: bool,
    /// Other servers of the cluster clients may connect to (`host:port`).
    pub(crate) connect_urls: Vec<String>,
    /// Lame duck mode: the server will close its connections soon.
    pub(crate) ldm: bool,
}

/// The server broke the protocol; the connection is unusable.
#[derive(Debug, thiserror::Error)]
#[error("NATS protocol error: {0}")]
pub(crate) struct ProtoError(&'static str);

/// Takes one whole operation off the front of `buf`, or `None` when more
/// bytes are needed.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<ServerOp>, ProtoError> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n") else {
        return if buf.len() > MAX_CONTROL_LINE {
            Err(ProtoError("control line too long"))
        } else {
            Ok(None)
        };
    };
    let line = &buf[..end];
    let (verb, args) = match memchr::memchr(b' ', line) {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &line[..0]),
    };
    let op = match verb.to_ascii_uppercase().as_slice() {
        b"MSG" => return message(buf, end, false),
        b"HMSG" => return message(buf, end, true),
        b"PING" => ServerOp::Ping,
        b"PONG" => ServerOp::Pong,
        b"+OK" => ServerOp::Ok,
        b"-ERR" => {
            let text = String::from_utf8_lossy(args);
            ServerOp::Err(text.trim().trim_matches('\'').to_owned())
        }
        b"INFO" => ServerOp::Info(Box::new(
            serde_json::from_slice(args).map_err(|_| ProtoError("INFO is not valid JSON"))?,
        )),
        _ => return Err(ProtoError("unknown operation")),
    };
    buf.advance(end + 2);
    Ok(Some(op))
}

/// `MSG <subject> <sid> [reply] <size>` or
/// `HMSG <subject> <sid> [reply] <header size> <size>`, then the bytes and `\r\n`.
fn message(
    buf: &mut BytesMut,
    end: usize,
    with_headers: bool,
) -> Result<Option<ServerOp>, ProtoError> {
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| ProtoError("control line not UTF-8"))?;
    let args: Vec<&str> = line.split_ascii_whitespace().skip(1).collect();
    let n_sizes = if with_headers { 2 } else { 1 };
    if !(2 + n_sizes..=3 + n_sizes).contains(&args.len()) {
        return Err(ProtoError("wrong number of message arguments"));
    }
    let number = |s: &str| s.parse::<usize>().map_err(|_| ProtoError("bad number"));
    let sid = args[1].parse::<u64>().map_err(|_| ProtoError("bad sid"))?;
    let size = number(args[args.len() - 1])?;
    let header_size = if with_headers {
        number(args[args.len() - 2])?
    } else {
        0
    };
    if size > MAX_MESSAGE || header_size > size {
        return Err(ProtoError("bad message size"));
    }
    let total = end + 2 + size + 2;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(end + 2);
    let mut body = buf.split_to(size + 2).freeze();
    if &body[size..] != b"\r\n" {
        return Err(ProtoError("message not followed by CRLF"));
    }
    body.truncate(size);
    let headers = if with_headers {
        Some(parse_headers(&body[..header_size])?)
    } else {
        None
    };
    let payload = body.slice(header_size..);
    Ok(Some(ServerOp::Msg(Msg {
        sid,
        headers,
        payload,
    })))
}

/// `NATS/1.0[ status]\r\n` then `Name: value\r\n` lines and an empty line.
fn parse_headers(block: &[u8]) -> Result<HeaderMap, ProtoError> {
    let text = std::str::from_utf8(block).map_err(|_| ProtoError("headers not UTF-8"))?;
    let mut lines = text.split("\r\n");
    if !lines
        .next()
        .is_some_and(|first| first.starts_with("NATS/1.0"))
    {
        return Err(ProtoError("headers without NATS/1.0"));
    }
    let mut headers = HeaderMap::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(ProtoError("header line without a colon"))?;
        let name = HeaderName::from_str(name.trim()).map_err(|_| ProtoError("bad header name"))?;
        headers.append(name, value.trim());
    }
    Ok(headers)
}

/// `SUB <subject> <sid>`.
pub(crate) fn sub(out: &mut BytesMut, subject: &str, sid: u64) {
    out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

/// `UNSUB <sid>`.
pub(crate) fn unsub(out: &mut BytesMut, sid: u64) {
    out.extend_from_slice(format!("UNSUB {sid}\r\n").as_bytes());
}

pub(crate) const PING: &[u8] = b"PING\r\n";
pub(crate) const PONG: &[u8] = b"PONG\r\n";

#[cfg(test)]
mod tests {
    use async_nats::header::{NATS_LAST_SEQUENCE, NATS_SEQUENCE};

    use super::*;

    fn all(bytes: &[u8]) -> Vec<ServerOp> {
        let mut buf = BytesMut::from(bytes);
        let mut ops = Vec::new();
        while let Some(op) = parse(&mut buf).unwrap() {
            ops.push(op);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        ops
    }

    #[test]
    fn reads_the_control_operations() {
        let ops = all(
            b"PING\r\nPONG\r\n+OK\r\n-ERR 'Permissions Violation for Subscription to \"x\"'\r\n",
        );
        assert!(matches!(ops[0], ServerOp::Ping));
        assert!(matches!(ops[1], ServerOp::Pong));
        assert!(matches!(ops[2], ServerOp::Ok));
        let ServerOp::Err(text) = &ops[3] else {
            panic!()
        };
        assert_eq!(text, "Permissions Violation for Subscription to \"x\"");
    }

    #[test]
    fn reads_info() {
        let ops = all(
            br#"INFO {"server_id":"x","nonce":"abc","tls_required":true,"headers":true,"connect_urls":["127.0.0.1:4223"],"max_payload":1048576}"#
                .iter()
                .chain(b"\r\n")
                .copied()
                .collect::<Vec<_>>()
                .as_slice(),
        );
        let ServerOp::Info(info) = &ops[0] else {
            panic!()
        };
        assert_eq!(info.nonce.as_deref(), Some("abc"));
        assert!(info.tls_required && info.headers && !info.ldm);
        assert_eq!(info.connect_urls, ["127.0.0.1:4223"]);
    }

    #[test]
    fn reads_messages_with_and_without_headers_and_a_reply() {
        let ops = all(
            b"MSG live.a 7 5\r\nhello\r\nMSG live.b 8 _INBOX.x 0\r\n\r\n\
              HMSG live.c 9 53 55\r\nNATS/1.0\r\nNats-Sequence: 12\r\nNats-Last-Sequence:3\r\n\r\nhi\r\n",
        );
        let ServerOp::Msg(first) = &ops[0] else {
            panic!()
        };
        assert_eq!((first.sid, &first.payload[..]), (7, &b"hello"[..]));
        assert!(first.headers.is_none());
        let ServerOp::Msg(second) = &ops[1] else {
            panic!()
        };
        assert_eq!((second.sid, second.payload.len()), (8, 0));
        let ServerOp::Msg(third) = &ops[2] else {
            panic!()
        };
        assert_eq!((third.sid, &third.payload[..]), (9, &b"hi"[..]));
        let headers = third.headers.as_ref().unwrap();
        assert_eq!(headers.get_last(NATS_SEQUENCE).unwrap().as_str(), "12");
        assert_eq!(headers.get_last(NATS_LAST_SEQUENCE).unwrap().as_str(), "3");
    }

    #[test]
    fn waits_for_a_message_split_anywhere() {
        let whole: &[u8] = b"HMSG s 1 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\nPING\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            let mut ops = Vec::new();
            while let Some(op) = parse(&mut buf).unwrap() {
                ops.push(op);
            }
            buf.extend_from_slice(&whole[cut..]);
            while let Some(op) = parse(&mut buf).unwrap() {
                ops.push(op);
            }
            assert_eq!(ops.len(), 2, "cut at {cut}");
            let ServerOp::Msg(msg) = &ops[0] else {
                panic!("cut at {cut}")
            };
            assert_eq!(&msg.payload[..], b"hello", "cut at {cut}");
            assert!(matches!(ops[1], ServerOp::Ping));
        }
    }

    #[test]
    fn refuses_what_breaks_the_protocol() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"MSG s x 5\r\nhello\r\n",
            b"MSG s 1\r\n",
            b"MSG s 1 5\r\nhelloXY",
            b"HMSG s 1 9 5\r\nNATS/1.0\r\n",
            b"HMSG s 1 10 12\r\nHTTP/1.0\r\n\r\n\r\n",
            b"MSG s 1 999999999999\r\n",
            b"INFO {nope\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(parse(&mut buf).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let mut long = BytesMut::from(&vec![b'A'; MAX_CONTROL_LINE + 1][..]);
        assert!(parse(&mut long).is_err());
    }

    #[test]
    fn writes_commands() {
        let mut out = BytesMut::new();
        sub(&mut out, "live.user.a~2Eb", 3);
        unsub(&mut out, 3);
        assert_eq!(&out[..], b"SUB live.user.a~2Eb 3\r\nUNSUB 3\r\n");
    }
}
