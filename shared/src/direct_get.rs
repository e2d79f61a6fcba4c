//! A direct get that no replica answered, asked again.
//!
//! With `allow_direct`, each replica of a stream subscribes to its direct-get
//! subject while it is current. Around an election, a restart or a replica
//! catching up there are moments when none of them is subscribed where the
//! request arrives, and the server answers at once with status 503 (no
//! responders). That is not an outage: such a read is asked again after
//! growing pauses (100, 200, 400, 800 ms: 1.5 s in all) before its caller is
//! told.

use std::{future::Future, time::Duration};

/// The status of a request that found no subscriber.
pub const NO_RESPONDERS: u16 = 503;

/// How many times a read is made in all.
const ATTEMPTS: u32 = 5;
/// The first pause; each next one is twice as long.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Runs `read` until it returns anything but an error that `no_responders`
/// says found no responder, at most [`ATTEMPTS`] times.
///
/// # Errors
/// The last attempt's error, or any other error at once.
pub async fn until_answered<T, E, F, Fut>(
    read: F,
    no_responders: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Err(err) if attempt < ATTEMPTS && no_responders(&err) => {
                tracing::debug!(attempt, "A direct get found no responder; asking again.");
                tokio::time::sleep(FIRST_PAUSE * (1 << (attempt - 1))).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_responders_is_asked_again_until_answered_and_other_errors_are_not() {
        let calls = AtomicU32::new(0);
        let answered = until_answered(
            || async {
                let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
                if n < 3 { Err(NO_RESPONDERS) } else { Ok(n) }
            },
            |status| *status == NO_RESPONDERS,
        )
        .await;
        assert_eq!(answered, Ok(3));

        calls.store(0, Ordering::Relaxed);
        let given_up = until_answered(
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(NO_RESPONDERS)
            },
            |status| *status == NO_RESPONDERS,
        )
        .await;
        assert_eq!(given_up, Err(NO_RESPONDERS));
        assert_eq!(calls.load(Ordering::Relaxed), ATTEMPTS);

        calls.store(0, Ordering::Relaxed);
        let other = until_answered(
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(408u16)
            },
            |status| *status == NO_RESPONDERS,
        )
        .await;
        assert_eq!(other, Err(408));
        assert_eq!(calls.load(Ordering::Relaxed), 1, "asked once");
    }
}
