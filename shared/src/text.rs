//! Rules for the strings that end in a stored notification: the envelope's
//! and each event type's `data`.

/// Control characters (Unicode `Cc`: U+0000–U+001F, U+007F–U+009F) have no
/// place in an envelope's strings, `data`'s included: they travel in headers
/// and logs, and end in every recipient's notification. The ids refuse them
/// the same way.
pub(crate) fn no_control_characters(value: &str, _: &()) -> garde::Result {
    if value.chars().any(char::is_control) {
        Err(garde::Error::new("must not contain control characters"))
    } else {
        Ok(())
    }
}
