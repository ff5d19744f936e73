//! `switchyard.v1.Notifications`: notifications and where each one's delivery stands, the
//! caller's user's (every user's, or one named, for admin keys).

use actors::credentials::Role;
use actors::store::notification_status::{FAILED, HELD, PENDING, SENT};
use schemas::proto::{
    ListNotificationsRequest, ListNotificationsResponse, Notification, notifications_server,
};
use tonic::{Request, Response, Status};

use super::principal;
use crate::{GatewayContext, GatewayError};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// `switchyard.v1.Notifications`.
#[derive(Clone)]
pub struct NotificationsService(pub GatewayContext);

#[tonic::async_trait]
impl notifications_server::Notifications for NotificationsService {
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let principal = principal(&self.0, &request).await?;
        let asked = request.get_ref();
        let status = match asked.status.as_str() {
            "" => None,
            s if [PENDING, HELD, SENT, FAILED].contains(&s) => Some(s),
            other => {
                return Err(GatewayError::BadRequest(format!(
                    "status `{other}` is none of {PENDING}, {HELD}, {SENT}, {FAILED}"
                ))
                .into());
            }
        };
        let user = match (principal.role, asked.user.as_str()) {
            (Role::Admin, "") => None,
            (Role::Admin, user) => Some(user),
            (_, "") => Some(principal.user.as_str()),
            (_, user) if user == principal.user => Some(user),
            (_, _) => {
                return Err(GatewayError::Forbidden(
                    "only admin keys list another user's notifications".into(),
                )
                .into());
            }
        };
        let after = match asked.page_token.as_str() {
            "" => 0,
            token => token.parse::<i64>().map_err(|_| {
                GatewayError::BadRequest(format!("page_token `{token}` is not one of ours"))
            })?,
        };
        let size = match asked.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let page = self
            .0
            .node
            .store()
            .notifications_page(user, status, after, u64::from(size))
            .await
            .map_err(GatewayError::from)?;
        let next_page_token = match page.last() {
            Some(last) if page.len() == size as usize => last.id.to_string(),
            _ => String::new(),
        };
        let notifications = page
            .into_iter()
            .map(|n| Notification {
                id: n.id,
                user: n.user,
                channel: n.channel,
                to: n.to,
                subject: n.subject,
                dedupe_key: n.dedupe_key,
                status: n.status,
                attempts: n.attempts,
                due_at: n.due_at,
                last_error: n.last_error.unwrap_or_default(),
                sent_at: n.sent_at.unwrap_or_default(),
                destination: n.destination.unwrap_or_default(),
                provider_ref: n.provider_ref.unwrap_or_default(),
                task_id: n.task_id.unwrap_or_default(),
                created_at: n.created_at,
            })
            .collect();
        Ok(Response::new(ListNotificationsResponse {
            notifications,
            next_page_token,
        }))
    }
}
