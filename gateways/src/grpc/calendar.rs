//! `switchyard.v1.Calendar`: a calendar's bookings, the caller's user's (every user's for
//! admin keys).

use actors::credentials::Role;
use schemas::proto::{Booking, ListBookingsRequest, ListBookingsResponse, calendar_server};
use tonic::{Request, Response, Status};

use super::principal;
use crate::{GatewayContext, GatewayError};

/// `switchyard.v1.Calendar`.
#[derive(Clone)]
pub struct CalendarService(pub GatewayContext);

#[tonic::async_trait]
impl calendar_server::Calendar for CalendarService {
    async fn list_bookings(
        &self,
        request: Request<ListBookingsRequest>,
    ) -> Result<Response<ListBookingsResponse>, Status> {
        let principal = principal(&self.0, &request).await?;
        let calendar_id = &request.get_ref().calendar_id;
        if calendar_id.is_empty() {
            return Err(GatewayError::BadRequest("calendar_id is required".into()).into());
        }
        let user = (principal.role != Role::Admin).then_some(principal.user.as_str());
        let bookings = self
            .0
            .node
            .store()
            .bookings(calendar_id, user)
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(ListBookingsResponse {
            bookings: bookings
                .into_iter()
                .map(|b| Booking {
                    request_id: b.request_id,
                    title: b.title,
                    start: b.start,
                    end: b.end,
                })
                .collect(),
        }))
    }
}
