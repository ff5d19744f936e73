//! `switchyard.v1.Costs`: a user's model spending in a day or month against their budget, the
//! caller's user's (any user's for admin keys).

use actors::credentials::Role;
use actors::domain::costs::Periods;
use actors::store::totals;
use schemas::proto::{CostSummary, CostSummaryRequest, ModelCost, costs_server};
use tonic::{Request, Response, Status};

use super::principal;
use crate::{GatewayContext, GatewayError};

/// `switchyard.v1.Costs`.
#[derive(Clone)]
pub struct CostsService(pub GatewayContext);

/// 9999-12-31T23:59:59.999Z, the last time a period is asked for.
const LATEST: u64 = 253_402_300_799_999;

fn dollars(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[tonic::async_trait]
impl costs_server::Costs for CostsService {
    async fn summary(
        &self,
        request: Request<CostSummaryRequest>,
    ) -> Result<Response<CostSummary>, Status> {
        let principal = principal(&self.0, &request).await?;
        let asked = request.get_ref();
        let user = match asked.user.as_str() {
            "" => principal.user.clone(),
            user if principal.role == Role::Admin || user == principal.user => user.to_owned(),
            _ => {
                return Err(GatewayError::Forbidden(
                    "only admin keys see another user's costs".into(),
                )
                .into());
            }
        };
        let now = self.0.node.now_ms();
        let at = if asked.at == 0 { now } else { asked.at };
        if at > LATEST {
            return Err(GatewayError::BadRequest(format!(
                "at {at} is past the year 9999 (ms since the epoch)"
            ))
            .into());
        }
        let periods = Periods::of(at);
        let node = &self.0.node;
        let budget = node.budget(&user).await.map_err(GatewayError::from)?;
        let (period, start, end, budget) = match asked.period.as_str() {
            "" | "day" => {
                let end = periods.day_end();
                ("day", end.saturating_sub(86_400_000), end, budget.daily)
            }
            "month" => (
                "month",
                periods.month_start(),
                periods.month_end(),
                budget.monthly,
            ),
            other => {
                return Err(GatewayError::BadRequest(format!(
                    "period `{other}` is neither `day` nor `month`"
                ))
                .into());
            }
        };
        let store = node.store();
        // The hold first: it is written with the invocation that spent the budget, so the
        // invocations read after it include that one.
        let holds = store.cost_holds(now).await.map_err(GatewayError::from)?;
        let hold_reason = holds.get(&user).cloned().unwrap_or_default();
        let invocations = store
            .invocations(&user, start, end)
            .await
            .map_err(GatewayError::from)?;
        let models = totals(&invocations);
        Ok(Response::new(CostSummary {
            user,
            period: period.into(),
            start,
            end,
            spent: dollars(models.iter().fold(0, |sum, m| sum.saturating_add(m.cost))),
            budget: budget.map_or(0.0, dollars),
            invocations: invocations.len() as u64,
            tokens_in: models
                .iter()
                .fold(0, |sum, m| sum.saturating_add(m.tokens_in)),
            tokens_out: models
                .iter()
                .fold(0, |sum, m| sum.saturating_add(m.tokens_out)),
            models: models
                .into_iter()
                .map(|m| ModelCost {
                    provider: m.provider,
                    model: m.model,
                    invocations: m.invocations,
                    tokens_in: m.tokens_in,
                    tokens_out: m.tokens_out,
                    cost: dollars(m.cost),
                })
                .collect(),
            held: !hold_reason.is_empty(),
            hold_reason,
        }))
    }
}
