//! `switchyard.v1.Agents` (scoped to the caller's user) and `switchyard.v1.Keys` (admin only).

use actors::credentials::{Principal, Role};
use schemas::proto::{
    self, CreateKeyRequest, CreateKeyResponse, GetAgentRequest, ListAgentsRequest,
    ListAgentsResponse, RevokeKeyRequest, RevokeKeyResponse, agents_server::Agents,
    keys_server::Keys,
};
use tonic::{Request, Response, Status};

use super::{convert, principal};
use crate::{GatewayContext, GatewayError};

/// The user whose agents `principal` sees; `None` for all (admin).
fn scope(principal: &Principal) -> Option<&str> {
    (principal.role != Role::Admin).then_some(principal.user.as_str())
}

/// `switchyard.v1.Agents`.
#[derive(Clone)]
pub struct AgentsService(pub GatewayContext);

#[tonic::async_trait]
impl Agents for AgentsService {
    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let principal = principal(&self.0, &request).await?;
        let agents = self
            .0
            .node
            .store()
            .agents(scope(&principal))
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(ListAgentsResponse {
            agents: agents.into_iter().map(convert::agent).collect(),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        let principal = principal(&self.0, &request).await?;
        let agent_id = &request.get_ref().agent_id;
        let agent = self
            .0
            .node
            .store()
            .agent(agent_id)
            .await
            .map_err(GatewayError::from)?;
        let agent = agent
            .filter(|a| scope(&principal).is_none_or(|user| a.user == user))
            .ok_or_else(|| GatewayError::NotFound(format!("no agent `{agent_id}`")))?;
        Ok(Response::new(convert::agent(agent)))
    }
}

/// `switchyard.v1.Keys`.
#[derive(Clone)]
pub struct KeysService(pub GatewayContext);

async fn admin<T>(ctx: &GatewayContext, request: &Request<T>) -> Result<(), Status> {
    if principal(ctx, request).await?.role != Role::Admin {
        return Err(GatewayError::Forbidden("keys are managed with the admin key".into()).into());
    }
    Ok(())
}

#[tonic::async_trait]
impl Keys for KeysService {
    async fn create_key(
        &self,
        request: Request<CreateKeyRequest>,
    ) -> Result<Response<CreateKeyResponse>, Status> {
        admin(&self.0, &request).await?;
        let r = request.get_ref();
        let role = match Role::parse(&r.role) {
            Some(role @ (Role::User | Role::Agent)) => role,
            _ => {
                return Err(GatewayError::BadRequest(format!(
                    "role must be user or agent, not `{}`",
                    r.role
                ))
                .into());
            }
        };
        if r.user.is_empty() {
            return Err(GatewayError::BadRequest("a key needs a user".into()).into());
        }
        let agent_id = match role {
            Role::Agent if r.agent_id.is_empty() => {
                return Err(
                    GatewayError::BadRequest("an agent key needs an agent_id".into()).into(),
                );
            }
            Role::Agent => Some(r.agent_id.as_str()),
            _ => None,
        };
        let (key, key_id) = self
            .0
            .node
            .create_key(&r.user, role, agent_id)
            .await
            .map_err(GatewayError::from)?;
        tracing::info!(%key_id, user = %r.user, role = role.as_str(), "key created");
        Ok(Response::new(CreateKeyResponse { key, key_id }))
    }

    async fn revoke_key(
        &self,
        request: Request<RevokeKeyRequest>,
    ) -> Result<Response<RevokeKeyResponse>, Status> {
        admin(&self.0, &request).await?;
        let key_id = &request.get_ref().key_id;
        let revoked = self
            .0
            .node
            .store()
            .revoke_key(key_id)
            .await
            .map_err(GatewayError::from)?;
        if revoked {
            // Cached checks of the key end with the cache's time to live.
            self.0.auth.forget_all().await;
            tracing::info!(%key_id, "key revoked");
        }
        Ok(Response::new(RevokeKeyResponse { revoked }))
    }
}
