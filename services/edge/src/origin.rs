//! `--allowed-origins`: which browser origins may open a socket.

/// `--allowed-origins`: one origin, or `scheme://*.domain[:port]`, which
/// matches any subdomain of `domain` (not `domain` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    /// `scheme://`, lowercase.
    scheme: String,
    /// The host and port after the scheme (after `*` for a wildcard), lowercase.
    rest: String,
    wildcard: bool,
}

// === impl OriginPattern ===

impl std::str::FromStr for OriginPattern {
    type Err = String;

    /// `https://app.example.com`, `http://localhost:3000`, `https://*.example.com`.
    fn from_str(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim().to_ascii_lowercase();
        let Some((scheme, host)) = pattern.split_once("://") else {
            return Err(format!("`{pattern}` is not `scheme://host[:port]`"));
        };
        let (wildcard, rest) = match host.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 => (true, rest),
            Some(_) => return Err(format!("`{pattern}`: `*` only as `*.domain`")),
            None => (false, host),
        };
        if scheme.is_empty()
            || rest.is_empty()
            || rest.contains(['/', '*', '?', '#', '@', ' '])
            || rest.ends_with('/')
        {
            return Err(format!(
                "`{pattern}` is not `scheme://host[:port]` (no path, `*` only as `*.domain`)"
            ));
        }
        Ok(Self {
            scheme: format!("{scheme}://"),
            rest: rest.to_string(),
            wildcard,
        })
    }
}

impl OriginPattern {
    /// Whether an `Origin` header value is this origin (or, for a wildcard,
    /// a subdomain of its domain, on the same scheme and port).
    pub(crate) fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        let Some(host) = origin.strip_prefix(self.scheme.as_str()) else {
            return false;
        };
        if self.wildcard {
            // `rest` is `.example.com[:port]`: a non-empty label must come first.
            host.strip_suffix(self.rest.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains([':', '/']))
        } else {
            host == self.rest
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_as_subdomains_of_a_wildcard() {
        let exact: OriginPattern = "https://App.example.com".parse().unwrap();
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("http://app.example.com"));
        assert!(!exact.matches("https://app.example.com:8443"));
        assert!(!exact.matches("https://app.example.com.evil.net"));
        assert!(!exact.matches("null"));

        let wildcard: OriginPattern = "https://*.example.com".parse().unwrap();
        assert!(wildcard.matches("https://a.example.com"));
        assert!(wildcard.matches("https://a.b.example.com"));
        assert!(!wildcard.matches("https://example.com"));
        assert!(!wildcard.matches("https://.example.com"));
        assert!(!wildcard.matches("https://evilexample.com"));
        assert!(!wildcard.matches("https://a.example.com:444"));
        assert!(!wildcard.matches("http://a.example.com"));

        let port: OriginPattern = "http://localhost:3000".parse().unwrap();
        assert!(port.matches("http://localhost:3000"));
        assert!(!port.matches("http://localhost:3001"));

        for bad in [
            "example.com",
            "https://",
            "https://*",
            "https://a*.x.com",
            "https://x.com/path",
        ] {
            assert!(bad.parse::<OriginPattern>().is_err(), "{bad}");
        }
    }
}
