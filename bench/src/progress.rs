//! Progress lines on stderr, so a long run shows where it is; stdout carries only the results.

use std::io::Write as _;

/// Writes `herald-bench: <message>` to stderr; a closed stderr is ignored.
pub(crate) fn note(message: &str) {
    let _ = writeln!(std::io::stderr(), "herald-bench: {message}");
}
