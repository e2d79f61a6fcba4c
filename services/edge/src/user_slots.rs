//! `--max-connections-per-user`: each user's connections on this node, counted
//! by slots held until the connection ends.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use herald_shared::ids::UserId;

/// How many connections each user holds on this node, for
/// `--max-connections-per-user`. The check and the count happen under one
/// lock, so two connections racing for the last slot cannot both get it.
#[derive(Debug, Default)]
pub(crate) struct UserConnections {
    counts: Mutex<HashMap<UserId, usize>>,
}

/// One connection of a user, counted until dropped (the session ends, or
/// the upgrade never completes).
#[derive(Debug)]
#[must_use = "the connection counts against the user's cap until dropped"]
pub(crate) struct UserSlot {
    connections: Arc<UserConnections>,
    user: UserId,
}

// === impl UserConnections ===

impl UserConnections {
    /// A slot for one more connection of `user`, unless it holds `max`.
    pub(crate) fn acquire(self: &Arc<Self>, user: &UserId, max: usize) -> Option<UserSlot> {
        let mut counts = self.counts.lock().expect("user connections lock");
        let count = counts.entry(user.clone()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            connections: self.clone(),
            user: user.clone(),
        })
    }

    /// Users holding at least one slot (entries are removed at zero).
    #[cfg(test)]
    fn n_users(&self) -> usize {
        self.counts.lock().expect("user connections lock").len()
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut counts = self
            .connections
            .counts
            .lock()
            .expect("user connections lock");
        if let Some(count) = counts.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_slots_are_capped_and_released_when_dropped() {
        let connections = Arc::new(UserConnections::default());
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let first = connections.acquire(&alice, 2).unwrap();
        let second = connections.acquire(&alice, 2).unwrap();
        assert!(connections.acquire(&alice, 2).is_none());
        let other = connections.acquire(&bob, 2).unwrap();
        drop(first);
        let third = connections.acquire(&alice, 2).unwrap();
        drop((second, third, other));
        assert_eq!(connections.n_users(), 0, "no entry left behind");
    }
}
