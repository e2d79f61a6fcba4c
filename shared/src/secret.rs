//! A string that must never reach a log: tokens and keys.

use std::{borrow::Cow, convert::Infallible, fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secret string. `Debug` and `Display` print `<redacted>`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call this only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self(s.to_owned()))
    }
}

/// `urls` with the credentials in each URL (`user:password@`, `token@`)
/// replaced by `<redacted>`, for logs and error messages. A comma-separated
/// list, as NATS takes, is redacted URL by URL.
pub fn redact_url(urls: &str) -> Cow<'_, str> {
    if !urls.contains('@') {
        return Cow::Borrowed(urls);
    }
    Cow::Owned(
        urls.split(',')
            .map(redact_one)
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn redact_one(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact_url("nats://app:s3cret@nats:4222"),
            "nats://<redacted>@nats:4222"
        );
        assert_eq!(
            redact_url("nats://tok3n@a:4222,nats://b:4222"),
            "nats://<redacted>@a:4222,nats://b:4222"
        );
        assert_eq!(
            redact_url("http://u:p@collector:4318/v1/traces?x=a@b"),
            "http://<redacted>@collector:4318/v1/traces?x=a@b"
        );
        assert_eq!(redact_url("user:pw@localhost"), "<redacted>@localhost");
        assert!(matches!(
            redact_url("nats://127.0.0.1:4222"),
            Cow::Borrowed("nats://127.0.0.1:4222")
        ));
    }
}
