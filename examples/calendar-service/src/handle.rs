//! What each method does, given who calls: the membership rule, then the
//! change through the store.
//!
//! Membership: a calendar's members are the users who may read and change
//! it. They are seeded at start-up (`--calendar-member CALENDAR=USER`), or,
//! with `--calendar-auto-join` (the demo), any caller joins the calendar on
//! their first call. A caller who is not a member gets `FORBIDDEN`, whether
//! or not the calendar exists.

use herald_shared::{
    ids::{EventId, UserId},
    timestamp::Timestamp,
};

use crate::{
    calendar::{Calendar, CalendarId, Change},
    error::ServiceError,
    store::{Step, Store},
};

/// The store and the membership policy.
#[derive(Debug, Clone)]
pub struct Handler {
    pub store: Store,
    pub auto_join: bool,
}

impl Handler {
    /// `calendar.event.list`: the events overlapping `[from, to)`.
    ///
    /// # Errors
    /// `FORBIDDEN` for a non-member; `UNAVAILABLE`.
    pub async fn list(
        &self,
        user: &UserId,
        calendar_id: &CalendarId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<serde_json::Value, ServiceError> {
        let calendar = if self.auto_join {
            // Joining is a write, made once per user; a member only reads.
            let current = self.store.read(calendar_id).await?;
            if current.is_member(user) {
                current
            } else {
                self.store
                    .change(calendar_id, |calendar| {
                        calendar.join(user)?;
                        Ok(Step {
                            result: calendar.clone(),
                            envelope: None,
                        })
                    })
                    .await?
            }
        } else {
            let calendar = self.store.read(calendar_id).await?;
            check_member(&calendar, user, calendar_id)?;
            calendar
        };
        let events = calendar.list(from, to);
        Ok(serde_json::json!({
            "calendar_id": calendar_id.as_str(),
            "events": events,
        }))
    }

    /// Create, update, delete or RSVP: the reply's `result`.
    ///
    /// # Errors
    /// `FORBIDDEN` for a non-member, and those of [`Calendar::apply`] and
    /// [`Store::change`].
    pub async fn change(
        &self,
        user: &UserId,
        calendar_id: &CalendarId,
        change: Change,
    ) -> Result<serde_json::Value, ServiceError> {
        // Fixed before the first try, so a retried compare-and-set creates
        // the same event and publishes it under the same id.
        let new_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let envelope_id = EventId::generate();
        self.store
            .change(calendar_id, |calendar| {
                if self.auto_join {
                    calendar.join(user)?;
                } else {
                    check_member(calendar, user, calendar_id)?;
                }
                let applied = calendar.apply(
                    calendar_id,
                    user,
                    change.clone(),
                    &new_id,
                    envelope_id.clone(),
                )?;
                Ok(Step {
                    result: applied.result,
                    envelope: Some(applied.envelope),
                })
            })
            .await
    }

    /// Adds the seeded members at start-up (creating their calendars).
    ///
    /// # Errors
    /// As [`Store::change`].
    pub async fn seed<'a>(
        &self,
        calendar_id: &CalendarId,
        members: impl IntoIterator<Item = &'a UserId> + Clone,
    ) -> Result<(), ServiceError> {
        self.store
            .change(calendar_id, |calendar| {
                for user in members.clone() {
                    calendar.join(user)?;
                }
                Ok(Step {
                    result: (),
                    envelope: None,
                })
            })
            .await
    }
}

fn check_member(
    calendar: &Calendar,
    user: &UserId,
    calendar_id: &CalendarId,
) -> Result<(), ServiceError> {
    if calendar.is_member(user) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(calendar_id.as_str().into()))
    }
}
