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
        let periods = Periods::of(at);
        let node = &self.0.node;
        let budget = node.budget(&user).await.map_err(GatewayError::from)?;
        let (period, start, end, budget) = match asked.period.as_str() {
            "" | "day" => {
                let end = periods.day_end();
                ("day", end - 86_400_000, end, budget.daily)
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
        let invocations = store
            .invocations(&user, start, end)
            .await
            .map_err(GatewayError::from)?;
        let models = totals(&invocations);
        let holds = store.cost_holds(now).await.map_err(GatewayError::from)?;
        let hold_reason = holds.get(&user).cloned().unwrap_or_default();
        Ok(Response::new(CostSummary {
            user,
            period: period.into(),
            start,
            end,
            spent: dollars(models.iter().map(|m| m.cost).sum()),
            budget: budget.map_or(0.0, dollars),
            invocations: invocations.len() as u64,
            tokens_in: models.iter().map(|m| m.tokens_in).sum(),
            tokens_out: models.iter().map(|m| m.tokens_out).sum(),
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
