//! `switchyard.v1.Models`: a worker asks before each call to a model provider and is
//! answered once the provider's limit allows it.

use actors::CallError;
use schemas::proto::{AcquireRequest, AcquireResponse, models_server};
use tonic::{Request, Response, Status};

use super::principal;
use crate::GatewayContext;

/// `switchyard.v1.Models`.
#[derive(Clone)]
pub struct ModelsService(pub GatewayContext);

#[tonic::async_trait]
impl models_server::Models for ModelsService {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        principal(&self.0, &request).await?;
        let provider = &request.get_ref().provider;
        match self.0.node.acquire_model(provider).await {
            Ok(None) => Ok(Response::new(AcquireResponse {
                limited: false,
                waited_ms: 0,
            })),
            Ok(Some(waited)) => Ok(Response::new(AcquireResponse {
                limited: true,
                waited_ms: waited.as_millis() as u64,
            })),
            Err(error @ CallError::QueueFull { .. }) => {
                Err(Status::resource_exhausted(error.to_string()))
            }
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }
}
