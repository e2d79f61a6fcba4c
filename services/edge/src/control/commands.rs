//! What the session API asks of a connection besides ending it (an
//! `unsubscribe`), queued on the connection's registry handle.

use std::{collections::VecDeque, future, sync::Arc, task::Poll};

use herald_shared::ids::Namespace;

use super::Handle;

/// Commands queued per connection; past this, an unsubscribe is dropped
/// (a connection that slow is about to end as a slow consumer anyway).
pub(super) const COMMAND_QUEUE: usize = 8;

/// What a connection is asked to do besides ending.
#[derive(Debug)]
pub(crate) enum Command {
    /// Leave this namespace, telling the client `unsubscribed` with `REVOKED`.
    Unsubscribe(Namespace),
}

/// Where a connection takes its commands from.
#[derive(Debug)]
pub(crate) struct Commands {
    pub(super) handle: Arc<Handle>,
}

impl Handle {
    /// Queues `command` and wakes the connection; `false` if its queue is full.
    pub(super) fn command(&self, command: Command) -> bool {
        {
            let mut commands = self.commands.lock().expect("commands lock");
            if commands.len() >= COMMAND_QUEUE {
                return false;
            }
            commands.push_back(command);
        }
        self.waker.wake();
        true
    }
}

impl Commands {
    /// The next command. `Option` for `select!` patterns; it never ends.
    pub(crate) async fn recv(&mut self) -> Option<Command> {
        future::poll_fn(|cx| {
            if let Some(command) = self.try_recv() {
                return Poll::Ready(Some(command));
            }
            self.handle.waker.register(cx.waker());
            // A command queued between the check and the registration woke nobody.
            self.try_recv()
                .map_or(Poll::Pending, |command| Poll::Ready(Some(command)))
        })
        .await
    }

    pub(super) fn try_recv(&self) -> Option<Command> {
        let mut commands = self.handle.commands.lock().expect("commands lock");
        let command = commands.pop_front();
        if commands.is_empty() && commands.capacity() > 0 {
            // Nothing kept per idle connection once its commands are taken.
            *commands = VecDeque::new();
        }
        command
    }
}
