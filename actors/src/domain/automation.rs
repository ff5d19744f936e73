//! Automations: a cron schedule in a time zone that creates the same few tasks on each run,
//! what a run that came due while no node was running comes to (its stated policy), and the
//! ids of a run's tasks, derived from the automation and the run so a run fired twice
//! creates nothing twice.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use sha2::{Digest, Sha256};

use super::Refusal;

/// What happens to a run that came due while no node was there to fire it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missed {
    /// It is left out; the next run is the next scheduled after now.
    #[default]
    Skip,
    /// One run fires for all that were missed (the latest), then the schedule goes on.
    CatchUp,
}

impl Missed {
    /// The policy named `name` (`skip`, `catch_up`).
    pub fn parse(name: &str) -> Result<Missed, Refusal> {
        match name {
            "" | "skip" => Ok(Missed::Skip),
            "catch_up" => Ok(Missed::CatchUp),
            other => Err(Refusal(format!(
                "missed-run policy `{other}` is neither `skip` nor `catch_up`"
            ))),
        }
    }

    /// Its name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::CatchUp => "catch_up",
        }
    }
}

/// A cron expression (five fields, or six with seconds first) read in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses `expression` in `zone` (an IANA name; empty means UTC).
    pub fn parse(expression: &str, zone: &str) -> Result<Schedule, Refusal> {
        let cron = Cron::from_str(expression)
            .map_err(|e| Refusal(format!("schedule `{expression}`: {e}")))?;
        let zone = match zone {
            "" => chrono_tz::UTC,
            name => name
                .parse()
                .map_err(|_| Refusal(format!("`{name}` is not an IANA time zone")))?,
        };
        let schedule = Schedule { cron, zone };
        if schedule.next_after(0).is_none() {
            return Err(Refusal(format!("schedule `{expression}` never fires")));
        }
        Ok(schedule)
    }

    /// The first scheduled time after `at` (ms), if any.
    pub fn next_after(&self, at: u64) -> Option<u64> {
        let local = Utc
            .timestamp_millis_opt(at as i64)
            .single()?
            .with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The last scheduled time at or before `at`, at or after `since` (both ms), if any.
    pub fn latest_between(&self, since: u64, at: u64) -> Option<u64> {
        let local = Utc
            .timestamp_millis_opt(at as i64)
            .single()?
            .with_timezone(&self.zone);
        let last = self.cron.find_previous_occurrence(&local, true).ok()?;
        u64::try_from(last.timestamp_millis())
            .ok()
            .filter(|t| *t >= since)
    }
}

/// What a due automation does at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The scheduled time of the run to fire, if one fires.
    pub fire: Option<u64>,
    /// When it is due next.
    pub next: Option<u64>,
}

/// The run due at `scheduled` (ms), looked at `now`: on time (within `grace` ms) it fires;
/// later than that it was missed, and `missed` says what happens.
pub fn due(schedule: &Schedule, missed: Missed, scheduled: u64, now: u64, grace: u64) -> Due {
    let next = schedule.next_after(now.max(scheduled));
    let fire = if now.saturating_sub(scheduled) <= grace {
        Some(scheduled)
    } else {
        match missed {
            Missed::Skip => None,
            Missed::CatchUp => schedule.latest_between(scheduled, now).or(Some(scheduled)),
        }
    };
    Due { fire, next }
}

/// The label of the run scheduled at `at` (ms), as its tasks' ids carry it: UTC, to the second.
pub fn scheduled_run(at: u64) -> String {
    Utc.timestamp_millis_opt(at as i64)
        .single()
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|| at.to_string())
}

/// The label of a run asked for by message `message_id`.
pub fn requested_run(message_id: &str) -> String {
    format!(
        "now-{}",
        &hex::encode(Sha256::digest(message_id.as_bytes()))[..12]
    )
}

/// The id of step `step` in run `run` of automation `automation_id`.
pub fn run_task_id(automation_id: &str, run: &str, step: &str) -> String {
    format!("{automation_id}.{run}.{step}")
}

/// The longest run label: a scheduled one is 16 bytes, a requested one 16.
const RUN_LABEL: usize = 16;

/// Checks that every task id a run of `automation_id` with `steps` makes fits in `max` bytes.
pub fn check_ids(automation_id: &str, steps: &[&str], max: usize) -> Result<(), Refusal> {
    if steps.is_empty() {
        return Err(Refusal("an automation creates at least one task".into()));
    }
    for step in steps {
        let id = run_task_id(automation_id, &"x".repeat(RUN_LABEL), step);
        if id.len() > max {
            return Err(Refusal(format!(
                "the tasks of automation `{automation_id}` step `{step}` would have ids of {} \
                 bytes; at most {max}",
                id.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn paris(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
        let zone: Tz = "Europe/Paris".parse().expect("a zone");
        zone.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .map(|t| t.timestamp_millis() as u64)
            .expect("a valid time")
    }

    #[test]
    fn a_schedule_reads_in_its_zone() {
        let daily = Schedule::parse("0 9 * * *", "Europe/Paris").expect("valid");
        let before = paris(2026, 12, 2, 8, 59, 59);
        assert_eq!(daily.next_after(before), Some(paris(2026, 12, 2, 9, 0, 0)));
        let at_nine = paris(2026, 12, 2, 9, 0, 0);
        assert_eq!(daily.next_after(at_nine), Some(paris(2026, 12, 3, 9, 0, 0)));
        // Across the spring change, still 09:00 local.
        assert_eq!(
            daily.next_after(paris(2027, 3, 28, 8, 0, 0)),
            Some(paris(2027, 3, 28, 9, 0, 0))
        );
        assert!(Schedule::parse("every day", "").is_err());
        assert!(Schedule::parse("0 9 * * *", "Mars/Olympus").is_err());
        let seconds = Schedule::parse("*/10 * * * * *", "").expect("six fields");
        assert_eq!(seconds.next_after(1_000), Some(10_000));
    }

    #[test]
    fn a_missed_run_is_skipped_or_caught_up_once() {
        let hourly = Schedule::parse("0 * * * *", "UTC").expect("valid");
        let hour = 3_600_000;
        // On time: fires whatever the policy.
        for missed in [Missed::Skip, Missed::CatchUp] {
            let on_time = due(&hourly, missed, 10 * hour, 10 * hour + 500, 60_000);
            assert_eq!(on_time.fire, Some(10 * hour));
            assert_eq!(on_time.next, Some(11 * hour));
        }
        // Down from 10:00 to 13:30.
        let now = 13 * hour + hour / 2;
        let skipped = due(&hourly, Missed::Skip, 10 * hour, now, 60_000);
        assert_eq!(
            skipped,
            Due {
                fire: None,
                next: Some(14 * hour)
            }
        );
        let caught = due(&hourly, Missed::CatchUp, 10 * hour, now, 60_000);
        assert_eq!(
            caught,
            Due {
                fire: Some(13 * hour),
                next: Some(14 * hour)
            }
        );
    }

    #[test]
    fn run_ids_are_stable_and_bounded() {
        assert_eq!(scheduled_run(0), "19700101T000000Z");
        assert_eq!(requested_run("m1"), requested_run("m1"));
        assert_ne!(requested_run("m1"), requested_run("m2"));
        assert_eq!(requested_run("m1").len(), RUN_LABEL);
        assert_eq!(run_task_id("nightly", "r", "build"), "nightly.r.build");
        assert!(check_ids("a", &["build"], 128).is_ok());
        assert!(check_ids(&"a".repeat(120), &["build"], 128).is_err());
        assert!(check_ids("a", &[], 128).is_err());
    }

    proptest! {
        /// Whatever the gap, at most one run fires, never in the future, and the next is later
        /// than now.
        #[test]
        fn at_most_one_run_and_the_next_is_ahead(
            scheduled in 0u64..2_000_000_000_000, gap in 0u64..400_000_000, catch_up: bool,
        ) {
            let every5 = Schedule::parse("*/5 * * * *", "Asia/Kolkata").expect("valid");
            let now = scheduled + gap;
            let missed = if catch_up { Missed::CatchUp } else { Missed::Skip };
            let d = due(&every5, missed, scheduled, now, 60_000);
            if let Some(fire) = d.fire {
                prop_assert!(fire <= now && fire >= scheduled);
            }
            prop_assert!(d.next.expect("always a next") > now);
            prop_assert_eq!(d.fire.is_some(), gap <= 60_000 || catch_up);
        }
    }
}
