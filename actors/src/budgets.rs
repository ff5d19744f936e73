//! The `[costs]` table: model budgets, one for everyone and one per user, in US dollars.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::costs::{Budget, micros};

/// An amount of US dollars in the configuration (0 means none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dollars(pub f64);

// Configurations are compared whole; an amount read from a file is never NaN.
impl Eq for Dollars {}

impl Dollars {
    /// As micro-dollars, `None` for none (0) or an amount that is not one.
    fn micros(self) -> Option<u64> {
        micros(self.0, "a budget").ok().filter(|m| *m > 0)
    }
}

/// `[costs.users.<id>]`: one user's budgets, over the shared ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserBudget {
    /// Per UTC day; 0 keeps the shared one.
    pub daily_budget: Dollars,
    /// Per UTC calendar month; 0 keeps the shared one.
    pub monthly_budget: Dollars,
}

/// `[costs]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostsConfig {
    /// Every user's budget per UTC day; 0 is none.
    pub daily_budget: Dollars,
    /// Every user's budget per UTC calendar month; 0 is none.
    pub monthly_budget: Dollars,
    /// Budgets of single users.
    pub users: BTreeMap<String, UserBudget>,
}

impl CostsConfig {
    /// The configured budgets of `user`.
    pub fn budget(&self, user: &str) -> Budget {
        let own = self.users.get(user).copied().unwrap_or_default();
        Budget {
            daily: own.daily_budget.micros().or(self.daily_budget.micros()),
            monthly: own.monthly_budget.micros().or(self.monthly_budget.micros()),
        }
    }

    /// The first amount that is not a budget, if any.
    pub fn check(&self) -> Result<(), String> {
        let shared = [("costs", self.daily_budget), ("costs", self.monthly_budget)];
        let own = self.users.iter().flat_map(|(user, b)| {
            [
                (user.as_str(), b.daily_budget),
                (user.as_str(), b.monthly_budget),
            ]
        });
        for (whose, amount) in shared.into_iter().chain(own) {
            micros(amount.0, &format!("a budget of {whose}")).map_err(|e| e.0)?;
        }
        Ok(())
    }
}
