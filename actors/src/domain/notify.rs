//! Where a notification goes and when: the `default` channel resolved for its user (or back
//! into the conversation its task came from), quiet hours that hold it, and the backoff
//! between failed attempts.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{Duration, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// The channel name that means "however this user wants to hear".
pub const DEFAULT_CHANNEL: &str = "default";
/// The channel name of a reply into a conversation; its `to` is `<channel>/<conversation>`.
pub const CONVERSATION_CHANNEL: &str = "conversation";

/// A daily window, in a user's local time, when nothing is sent to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Minute of the day it starts (inclusive).
    pub start: u32,
    /// Minute of the day it ends (exclusive); before `start` when it spans midnight.
    pub end: u32,
}

impl FromStr for QuietHours {
    type Err = String;

    /// Parses `HH:MM-HH:MM`, e.g. `22:00-07:00`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("quiet hours `{text}` are not HH:MM-HH:MM");
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| {
            NaiveTime::parse_from_str(t.trim(), "%H:%M")
                .map(|t| t.hour() * 60 + t.minute())
                .map_err(|_| bad())
        };
        let (start, end) = (minute(start)?, minute(end)?);
        if start == end {
            return Err(format!(
                "quiet hours `{text}` start and end at the same minute"
            ));
        }
        Ok(QuietHours { start, end })
    }
}

impl QuietHours {
    /// Whether minute-of-day `minute` falls inside the window.
    pub fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// When a notification due at `now` (ms) may be sent in `zone`: `None` if now is outside
    /// the window, else the window's next end (ms).
    pub fn held_until(&self, zone: Tz, now: u64) -> Option<u64> {
        let local = Utc
            .timestamp_millis_opt(now as i64)
            .single()?
            .with_timezone(&zone);
        let minute = local.hour() * 60 + local.minute();
        if !self.contains(minute) {
            return None;
        }
        let end = NaiveTime::from_hms_opt(self.end / 60, self.end % 60, 0)?;
        let day = if minute < self.end {
            local.date_naive()
        } else {
            local.date_naive() + Duration::days(1)
        };
        // A window ending inside a daylight-saving gap ends when local time resumes.
        let mut naive = day.and_time(end);
        for _ in 0..4 {
            if let Some(at) = zone.from_local_datetime(&naive).earliest() {
                return Some((at.timestamp_millis().max(0) as u64).max(now + 1));
            }
            naive += Duration::minutes(30);
        }
        None
    }
}

/// How one user wants to be reached (`[users.<id>]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Preferences {
    /// The channel `default` means for them, if any.
    pub default_channel: Option<String>,
    /// Their address on each channel (`email`, `sms`, …).
    pub addresses: BTreeMap<String, String>,
    /// When nothing is sent to them.
    pub quiet_hours: Option<QuietHours>,
    /// The zone their quiet hours are in.
    pub time_zone: Tz,
}

/// Where one notification is to be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The outbound channel (provider) that carries it.
    pub channel: String,
    /// The recipient on that channel.
    pub to: String,
}

/// The destination of a notification for `channel` and `to`, given its user's preferences and
/// the conversation (`channel`, `conversation`) its task came from, if it did.
pub fn destination(
    channel: &str,
    to: &str,
    preferences: Option<&Preferences>,
    origin: Option<(&str, &str)>,
) -> Result<Destination, String> {
    let address = |channel: &str| {
        preferences
            .and_then(|p| p.addresses.get(channel))
            .cloned()
            .unwrap_or_else(|| to.to_owned())
    };
    match channel {
        DEFAULT_CHANNEL => {
            if let Some((channel, conversation)) = origin {
                return Ok(Destination {
                    channel: channel.to_owned(),
                    to: conversation.to_owned(),
                });
            }
            let chosen = preferences
                .and_then(|p| p.default_channel.as_deref())
                .ok_or_else(|| format!("no default channel is configured for user `{to}`"))?;
            Ok(Destination {
                channel: chosen.to_owned(),
                to: address(chosen),
            })
        }
        CONVERSATION_CHANNEL => {
            let (channel, conversation) = to.split_once('/').ok_or_else(|| {
                format!("a conversation reply goes to `<channel>/<conversation>`, not `{to}`")
            })?;
            Ok(Destination {
                channel: channel.to_owned(),
                to: conversation.to_owned(),
            })
        }
        channel => Ok(Destination {
            channel: channel.to_owned(),
            to: if to.is_empty() {
                address(channel)
            } else {
                to.to_owned()
            },
        }),
    }
}

/// When to try again after failed attempt number `attempt` (1-based) at `now`: the wait doubles
/// from `initial_ms` up to `max_ms`.
pub fn retry_at(attempt: u32, now: u64, initial_ms: u64, max_ms: u64) -> u64 {
    let doublings = attempt.saturating_sub(1).min(32);
    let wait = initial_ms.saturating_mul(1u64 << doublings).min(max_ms);
    now.saturating_add(wait.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(zone: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
        zone.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .map(|t| t.timestamp_millis() as u64)
            .expect("a valid local time")
    }

    #[test]
    fn quiet_hours_parse_and_refuse_nonsense() {
        let q: QuietHours = "22:00-07:30".parse().expect("valid");
        assert_eq!((q.start, q.end), (22 * 60, 7 * 60 + 30));
        for bad in ["22-07", "25:00-07:00", "07:00-07:00", ""] {
            assert!(bad.parse::<QuietHours>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_window_over_midnight_holds_until_its_end_in_the_users_zone() {
        let zone: Tz = "Europe/Paris".parse().expect("a zone");
        let q: QuietHours = "22:00-07:00".parse().expect("valid");
        let late = at(zone, 2026, 12, 1, 23, 15);
        assert_eq!(q.held_until(zone, late), Some(at(zone, 2026, 12, 2, 7, 0)));
        let early = at(zone, 2026, 12, 2, 6, 59);
        assert_eq!(q.held_until(zone, early), Some(at(zone, 2026, 12, 2, 7, 0)));
        assert_eq!(q.held_until(zone, at(zone, 2026, 12, 2, 7, 0)), None);
        assert_eq!(q.held_until(zone, at(zone, 2026, 12, 2, 12, 0)), None);
    }

    #[test]
    fn default_goes_back_to_the_conversation_else_to_the_users_choice() {
        let prefs = Preferences {
            default_channel: Some("email".into()),
            addresses: [("email".to_owned(), "u1@example.com".to_owned())].into(),
            ..Preferences::default()
        };
        let reply = destination("default", "u1", Some(&prefs), Some(("sms", "+15550001")));
        assert_eq!(
            reply,
            Ok(Destination {
                channel: "sms".into(),
                to: "+15550001".into()
            })
        );
        let mail = destination("default", "u1", Some(&prefs), None);
        assert_eq!(
            mail,
            Ok(Destination {
                channel: "email".into(),
                to: "u1@example.com".into()
            })
        );
        assert!(destination("default", "u1", None, None).is_err());
        let slack = destination("conversation", "slack/C1", None, None);
        assert_eq!(slack.map(|d| d.channel), Ok("slack".to_owned()));
        assert!(destination("conversation", "nowhere", None, None).is_err());
    }

    #[test]
    fn retries_double_up_to_the_cap() {
        assert_eq!(retry_at(1, 1000, 500, 4000), 1500);
        assert_eq!(retry_at(2, 1000, 500, 4000), 2000);
        assert_eq!(retry_at(4, 1000, 500, 4000), 5000);
        assert_eq!(retry_at(60, 1000, 500, 4000), 5000);
    }

    proptest! {
        /// A held notification is released at a time outside the window, within a day.
        #[test]
        fn a_held_notification_is_released_outside_the_window(
            start in 0u32..1440, end in 0u32..1440, now in 0u64..4_000_000_000_000,
            zone in prop::sample::select(vec!["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
        ) {
            prop_assume!(start != end);
            let q = QuietHours { start, end };
            let zone: Tz = zone.parse().expect("a zone");
            if let Some(release) = q.held_until(zone, now) {
                prop_assert!(release > now);
                prop_assert!(release - now <= 25 * 3_600_000, "held {} ms", release - now);
                prop_assert_eq!(q.held_until(zone, release), None);
            } else {
                let local = Utc.timestamp_millis_opt(now as i64).single().expect("in range").with_timezone(&zone);
                prop_assert!(!q.contains(local.hour() * 60 + local.minute()));
            }
        }
    }
}
