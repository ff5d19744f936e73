//! Bearer-key authentication, with a short-lived cache so hot clients do not hit the database.

use std::time::Duration;

use actors::Store;
use actors::credentials::Principal;
use moka::future::Cache;

use crate::GatewayError;

/// Checks `Authorization: Bearer <key>` values against the stored key hashes.
#[derive(Clone)]
pub struct Auth {
    store: Store,
    // Keyed by the presented token; a revoked key stays valid for at most the TTL.
    cache: Cache<String, Principal>,
}

impl Auth {
    /// An authenticator over `store`'s keys.
    pub fn new(store: Store) -> Auth {
        Auth {
            store,
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
        }
    }

    /// Whom the `Authorization` header value stands for.
    pub async fn principal(&self, authorization: Option<&str>) -> Result<Principal, GatewayError> {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(GatewayError::Unauthenticated)?;
        if let Some(principal) = self.cache.get(token).await {
            return Ok(principal);
        }
        let principal = self
            .store
            .authenticate(token)
            .await?
            .ok_or(GatewayError::Unauthenticated)?;
        self.cache.insert(token.to_owned(), principal.clone()).await;
        Ok(principal)
    }

    /// Drops every cached check, so a revoked key stops working at once on this node.
    pub async fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}
