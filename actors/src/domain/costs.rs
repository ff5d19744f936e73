//! A user's model spending against their budgets: daily and monthly totals (UTC periods of the
//! invocations' own times), and the hold on tasks that need a model while a budget is spent.
//! Money is counted in micro-dollars, so totals add up exactly.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use super::task::NotificationDraft;
use super::{Capabilities, Refusal};

/// The tool a task's requirements name when it needs a model: such a task waits while its
/// user's budget is spent.
pub const MODEL_TOOL: &str = "model";

/// Whether a task requiring `requirements` needs a model.
pub fn requires_model(requirements: &Capabilities) -> bool {
    requirements.tools.iter().any(|t| t == MODEL_TOOL)
}

/// Dollars as micro-dollars, refusing what is not a finite, non-negative amount.
pub fn micros(dollars: f64, what: &str) -> Result<u64, Refusal> {
    if !(0.0..=1e12).contains(&dollars) {
        return Err(Refusal(format!(
            "{what} must be a finite amount of dollars, not negative; got {dollars}"
        )));
    }
    Ok((dollars * 1e6).round() as u64)
}

/// Micro-dollars as `$1.23`.
pub fn dollars(micros: u64) -> String {
    let cents = (micros + 5_000) / 10_000;
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// A user's budgets, each `None` when there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Per UTC day, micro-dollars.
    pub daily: Option<u64>,
    /// Per UTC calendar month, micro-dollars.
    pub monthly: Option<u64>,
}

/// The two periods a time falls in, by number: days and months since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Periods {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// Months since January 1970 (UTC).
    pub month: i64,
}

impl Periods {
    /// The periods `at` (ms) falls in.
    pub fn of(at: u64) -> Periods {
        let time = utc(at);
        Periods {
            day: (at / 86_400_000) as i64,
            month: i64::from(time.year() - 1970) * 12 + i64::from(time.month0()),
        }
    }

    /// When the day ends, ms.
    pub fn day_end(&self) -> u64 {
        (self.day.max(0) as u64 + 1).saturating_mul(86_400_000)
    }

    /// When the month ends, ms.
    pub fn month_end(&self) -> u64 {
        let next = self.month + 1;
        let (year, month) = (
            1970 + next.div_euclid(12) as i32,
            next.rem_euclid(12) as u32 + 1,
        );
        NaiveDate::from_ymd_opt(year, month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(u64::MAX, |t| {
                Utc.from_utc_datetime(&t).timestamp_millis() as u64
            })
    }

    /// When the month began, ms.
    pub fn month_start(&self) -> u64 {
        Periods {
            month: self.month - 1,
            ..*self
        }
        .month_end()
    }
}

fn utc(at: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(at as i64)
        .single()
        .unwrap_or_default()
}

/// Why a user's model tasks wait, and until when at the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The reason, as shown on each waiting task.
    pub reason: String,
    /// When the spent period ends, ms.
    pub until: u64,
}

/// A user's spending in the current periods, and the hold it puts on their model tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// The periods the totals are of.
    pub periods: Periods,
    /// Spent today, micro-dollars.
    pub daily: u64,
    /// Spent this month, micro-dollars.
    pub monthly: u64,
    /// Budgets set by `budget.set`, over the configured ones.
    pub set: Budget,
    /// The hold while a budget is spent.
    pub hold: Option<Hold>,
}

/// What applying one message to a ledger asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// Tell the user their budget is spent.
    pub notification: Option<NotificationDraft>,
    /// The hold was lifted: model tasks may be assigned again.
    pub released: bool,
}

impl Ledger {
    /// The budgets in force: those set, else `configured`.
    pub fn budget(&self, configured: Budget) -> Budget {
        Budget {
            daily: self.set.daily.or(configured.daily),
            monthly: self.set.monthly.or(configured.monthly),
        }
    }

    /// Records an invocation costing `cost` micro-dollars at `at` for `user`.
    pub fn record(&mut self, user: &str, cost: u64, at: u64, configured: Budget) -> Change {
        self.roll(at);
        self.daily = self.daily.saturating_add(cost);
        self.monthly = self.monthly.saturating_add(cost);
        self.settle(user, at, configured)
    }

    /// Sets the user's budgets (a `None` keeps the configured one) at `at`.
    pub fn set_budget(&mut self, user: &str, set: Budget, at: u64, configured: Budget) -> Change {
        self.roll(at);
        self.set = set;
        self.settle(user, at, configured)
    }

    /// Starts new totals for each period `at` is past.
    fn roll(&mut self, at: u64) {
        let now = Periods::of(at);
        if now.day > self.periods.day {
            self.daily = 0;
        }
        if now.month > self.periods.month {
            self.monthly = 0;
        }
        self.periods = self.periods.max(now);
    }

    /// Puts on or lifts the hold as the totals and budgets now stand.
    fn settle(&mut self, user: &str, at: u64, configured: Budget) -> Change {
        let budget = self.budget(configured);
        let spent = |total: u64, budget: Option<u64>| budget.is_some_and(|b| total >= b);
        let monthly = spent(self.monthly, budget.monthly);
        let daily = spent(self.daily, budget.daily);
        let hold = match (monthly, daily) {
            (true, _) => Some((
                "monthly",
                self.monthly,
                budget.monthly,
                self.periods.month_end(),
            )),
            (false, true) => Some(("daily", self.daily, budget.daily, self.periods.day_end())),
            (false, false) => None,
        }
        .map(|(period, total, budget, until)| {
            let budget = budget.unwrap_or_default();
            let reason = format!(
                "the {period} model budget of {} is spent ({} so far)",
                dollars(budget),
                dollars(total)
            );
            (period, Hold { reason, until })
        });
        let was_held = self.hold.as_ref().is_some_and(|h| h.until > at);
        let mut change = Change::default();
        match hold {
            Some((period, hold)) => {
                if !was_held {
                    change.notification = Some(NotificationDraft {
                        user: user.to_owned(),
                        channel: super::notify::DEFAULT_CHANNEL.into(),
                        to: user.to_owned(),
                        subject: format!("{period} model budget spent"),
                        text: format!(
                            "{}: tasks that need a model wait until the period ends or the \
                             budget is raised.",
                            hold.reason
                        ),
                        dedupe_key: format!("budget/{user}/{period}/{}", hold.until),
                        task_id: None,
                    });
                }
                self.hold = Some(hold);
            }
            None => {
                change.released = self.hold.is_some();
                self.hold = None;
            }
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;
    /// 2026-12-02T10:00:00Z.
    const NOW: u64 = 1_796_205_600_000;

    fn budget(daily: f64, monthly: f64) -> Budget {
        Budget {
            daily: Some(micros(daily, "daily").unwrap()),
            monthly: Some(micros(monthly, "monthly").unwrap()),
        }
    }

    #[test]
    fn money_is_exact_and_refuses_nonsense() {
        assert_eq!(micros(0.0089, "cost"), Ok(8_900));
        assert_eq!(dollars(5_120_000), "$5.12");
        assert_eq!(dollars(4_999), "$0.00");
        for bad in [-0.01, f64::NAN, f64::INFINITY] {
            assert!(micros(bad, "cost").is_err(), "{bad}");
        }
    }

    #[test]
    fn periods_follow_the_utc_calendar() {
        let p = Periods::of(NOW);
        assert_eq!(p.day_end() - NOW, 14 * 3_600_000);
        // December 2026 ends on 2027-01-01T00:00:00Z.
        assert_eq!(p.month_end(), 1_798_761_600_000);
        assert_eq!(p.month_start(), 1_796_083_200_000);
        assert_eq!(Periods::of(p.month_end()).month, p.month + 1);
    }

    #[test]
    fn a_spent_budget_holds_once_and_a_raise_or_a_new_day_releases() {
        let configured = budget(1.0, 20.0);
        let mut ledger = Ledger::default();
        let first = ledger.record("u1", 600_000, NOW, configured);
        assert_eq!(first, Change::default());
        let spent = ledger.record("u1", 500_000, NOW + 1, configured);
        let note = spent.notification.expect("told once");
        assert!(
            note.text
                .contains("daily model budget of $1.00 is spent ($1.10"),
            "{}",
            note.text
        );
        let hold = ledger.hold.clone().expect("held");
        assert_eq!(hold.until, Periods::of(NOW).day_end());
        // Spending on while held tells nobody again.
        assert_eq!(
            ledger.record("u1", 1, NOW + 2, configured).notification,
            None
        );
        // Raised: released.
        let raised = Budget {
            daily: Some(micros(2.0, "daily").unwrap()),
            monthly: None,
        };
        let change = ledger.set_budget("u1", raised, NOW + 3, configured);
        assert!(change.released && ledger.hold.is_none());
        assert_eq!(ledger.budget(configured).monthly, configured.monthly);
        // Spent again, then the next day starts from nothing.
        ledger.record("u1", 1_000_000, NOW + 4, configured);
        assert!(ledger.hold.is_some());
        let tomorrow = ledger.record("u1", 10, NOW + DAY, configured);
        assert!(tomorrow.released, "{ledger:?}");
        assert_eq!((ledger.daily, ledger.monthly), (10, 2_100_011));
    }

    #[test]
    fn a_spent_month_outlasts_the_day() {
        let configured = budget(100.0, 3.0);
        let mut ledger = Ledger::default();
        ledger.record("u1", 3_000_000, NOW, configured);
        let hold = ledger.hold.clone().expect("held");
        assert!(hold.reason.contains("monthly"));
        assert_eq!(hold.until, Periods::of(NOW).month_end());
        assert!(
            ledger
                .record("u1", 1, NOW + DAY, configured)
                .notification
                .is_none()
        );
        assert!(
            ledger.hold.is_some(),
            "a new day does not end a spent month"
        );
    }

    #[test]
    fn no_budget_never_holds() {
        let mut ledger = Ledger::default();
        ledger.record("u1", u64::MAX / 2, NOW, Budget::default());
        assert!(ledger.hold.is_none());
    }
}
