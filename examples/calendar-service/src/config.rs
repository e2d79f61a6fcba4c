//! Flags (each with an env var) and the validated configuration.

use std::collections::{BTreeMap, BTreeSet};

use herald_shared::{
    config::{ConfigError, LogArgs, NatsArgs},
    ids::UserId,
};

use crate::calendar::CalendarId;

/// calendar-service: answers the `calendar.event.*` rpc methods that Herald's
/// edges relay from browsers, keeps calendars in a NATS key-value bucket and
/// publishes what changed as domain events.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct Args {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The key-value bucket holding the calendars (one key per calendar).
    #[arg(long, env = "HERALD_CALENDAR_BUCKET", default_value = DEFAULT_BUCKET)]
    pub calendar_bucket: String,
    /// The NATS queue group the replicas share: each request goes to one.
    #[arg(long, env = "HERALD_CALENDAR_QUEUE_GROUP", default_value = DEFAULT_QUEUE_GROUP)]
    pub calendar_queue_group: String,
    /// Members to add at start-up, `CALENDAR=USER` (repeat the flag, or a
    /// comma-separated list in the env var). The calendar is created if new.
    #[arg(
        long = "calendar-member",
        env = "HERALD_CALENDAR_MEMBERS",
        value_delimiter = ','
    )]
    pub calendar_members: Vec<String>,
    /// Demo mode, never in production: any user who calls a method on a
    /// calendar becomes one of its members (creating it if new), so every
    /// window of the demo page may change the shared calendar.
    #[arg(long, env = "HERALD_CALENDAR_AUTO_JOIN", value_parser = clap::builder::BoolishValueParser::new())]
    pub calendar_auto_join: bool,
    /// Replicas of the bucket's stream: 1 on one nats-server, 3 on a cluster.
    #[arg(long, env = "HERALD_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Requests handled at once by this replica; more wait in the
    /// subscription's buffer (and time out at the edge if it stays full).
    #[arg(long, env = "HERALD_CALENDAR_MAX_IN_FLIGHT", default_value_t = 64)]
    pub calendar_max_in_flight: usize,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The default bucket name.
pub const DEFAULT_BUCKET: &str = "herald_calendars";
/// The default queue group.
pub const DEFAULT_QUEUE_GROUP: &str = "calendar-service";

/// The service's configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// One NATS URL or a comma-separated seed list.
    pub nats_url: String,
    /// Credential and TLS files for NATS.
    pub nats_auth: herald_shared::nats::NatsAuth,
    pub bucket: String,
    pub queue_group: String,
    /// Calendar → members added at start-up.
    pub seed_members: BTreeMap<CalendarId, BTreeSet<UserId>>,
    /// `--calendar-auto-join`.
    pub auto_join: bool,
    pub replicas: usize,
    /// At least 1.
    pub max_in_flight: usize,
}

impl Config {
    /// A configuration for `nats_url` with the defaults and no members.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            nats_auth: Default::default(),
            bucket: DEFAULT_BUCKET.into(),
            queue_group: DEFAULT_QUEUE_GROUP.into(),
            seed_members: BTreeMap::new(),
            auto_join: false,
            replicas: 1,
            max_in_flight: 64,
        }
    }
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, ConfigError> {
        let mut seed_members: BTreeMap<CalendarId, BTreeSet<UserId>> = BTreeMap::new();
        for pair in args
            .calendar_members
            .iter()
            .filter(|p| !p.trim().is_empty())
        {
            let (calendar, user) = parse_member(pair).ok_or_else(|| ConfigError::Invalid {
                flag: "--calendar-member",
                reason: format!("`{pair}` is not CALENDAR=USER"),
            })?;
            seed_members.entry(calendar).or_default().insert(user);
        }
        if !(1..=5).contains(&args.stream_replicas) {
            return Err(ConfigError::Invalid {
                flag: "--stream-replicas",
                reason: "must be from 1 to 5".into(),
            });
        }
        if !valid_bucket(&args.calendar_bucket) {
            return Err(ConfigError::Invalid {
                flag: "--calendar-bucket",
                reason: "letters, digits, `-` and `_` only".into(),
            });
        }
        if !valid_bucket(&args.calendar_queue_group) {
            return Err(ConfigError::Invalid {
                flag: "--calendar-queue-group",
                reason: "letters, digits, `-` and `_` only".into(),
            });
        }
        Ok(Self {
            nats_auth: args.nats.auth(),
            nats_url: args.nats.nats_url,
            bucket: args.calendar_bucket,
            queue_group: args.calendar_queue_group,
            seed_members,
            auto_join: args.calendar_auto_join,
            replicas: args.stream_replicas,
            max_in_flight: args.calendar_max_in_flight.max(1),
        })
    }
}

/// `CALENDAR=USER`; the calendar id holds no `=` (the user id may).
fn parse_member(pair: &str) -> Option<(CalendarId, UserId)> {
    let (calendar, user) = pair.trim().split_once('=')?;
    Some((CalendarId::parse(calendar).ok()?, UserId::parse(user).ok()?))
}

/// A bucket or queue group name: one plain token.
fn valid_bucket(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        let args = std::iter::once("calendar-service").chain(flags.iter().copied());
        Config::try_from(Args::try_parse_from(args).unwrap())
    }

    #[test]
    fn members_are_seeded_per_calendar() {
        let config = config(&[
            "--calendar-member",
            "team=alice@example.com,team=bob",
            "--calendar-member",
            "other=carol",
        ])
        .unwrap();
        let team = &config.seed_members[&CalendarId::parse("team").unwrap()];
        assert_eq!(team.len(), 2);
        assert!(team.contains(&UserId::parse("alice@example.com").unwrap()));
        assert_eq!(config.seed_members.len(), 2);
        assert!(!config.auto_join);
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--calendar-member", "no-equals"][..],
            &["--calendar-member", "=bob"],
            &["--calendar-bucket", "a.b"],
            &["--calendar-queue-group", "q>"],
            &["--stream-replicas", "0"],
        ] {
            assert!(config(bad).is_err(), "{bad:?}");
        }
    }
}
