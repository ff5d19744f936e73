//! The cluster actor: records this node in the shared store every second (its addresses and
//! the partitions it owns), so any node can tell who is there and who owns what.
//!
//! Supervision: a permanent child of the node; a storage error is logged and the next beat
//! tries again, so a database blip restarts nothing.
//! Shutdown: nothing held; a stopped node drops out of the list once its record is stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::NodeContext;
use crate::store::{Member, now_ms};

/// How often a node records itself.
pub const BEAT: Duration = Duration::from_secs(1);

/// A member not recorded for this long is gone.
pub const MEMBER_TTL: Duration = Duration::from_secs(10);

/// What the cluster actor is started with.
#[derive(Clone)]
pub struct ClusterArgs {
    /// The node's context.
    pub ctx: NodeContext,
    /// Where this node's HTTP server listens.
    pub http: String,
    /// Where this node's gRPC server listens.
    pub grpc: String,
}

/// The cluster actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterActor;

/// Record this node now (sent to itself).
pub struct Beat;

#[doc(hidden)]
pub struct ClusterState {
    args: ClusterArgs,
    instance: String,
    started_at: u64,
    beats: u64,
    /// A lag measurement is under way.
    measuring: Arc<AtomicBool>,
}

impl Actor for ClusterActor {
    type Msg = Beat;
    type State = ClusterState;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Beat>,
        args: ClusterArgs,
    ) -> Result<ClusterState, ActorProcessingErr> {
        myself.send_message(Beat)?;
        myself.send_interval(BEAT, || Beat);
        Ok(ClusterState {
            args,
            instance: crate::new_message_id(),
            started_at: now_ms(),
            beats: 0,
            measuring: Arc::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Beat>,
        _beat: Beat,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = &state.args.ctx;
        let now = now_ms();
        let since = now.saturating_sub(MEMBER_TTL.as_millis() as u64);
        match ctx.store.members(since).await {
            Ok(members) => {
                // A record of ours by another process, written since we started: not a
                // predecessor's leftover but a second live node with our id.
                let fresh = state.started_at + 2 * BEAT.as_millis() as u64;
                if let Some(other) = members.iter().find(|m| {
                    m.node_id == ctx.node_id && m.instance != state.instance && m.seen_at > fresh
                }) {
                    tracing::warn!(node_id = %ctx.node_id, other = %other.http, "another running node has this node id; give each node its own (--node-id)");
                }
            }
            Err(error) => tracing::warn!(%error, "reading the cluster's members failed"),
        }
        let member = Member {
            node_id: ctx.node_id.clone(),
            instance: state.instance.clone(),
            http: state.args.http.clone(),
            grpc: state.args.grpc.clone(),
            partitions: ctx.ownership.partitions(),
            started_at: state.started_at,
            seen_at: now,
        };
        if let Err(error) = ctx.store.record_member(&member).await {
            tracing::warn!(%error, "recording this node in the cluster failed");
        }
        state.beats += 1;
        if state.beats.is_multiple_of(LAG_EVERY) && !state.measuring.swap(true, Ordering::AcqRel) {
            // Off the beat: a broker that does not answer must not make this node look gone.
            let (ctx, measuring) = (ctx.clone(), state.measuring.clone());
            tokio::spawn(async move {
                report_lag(&ctx).await;
                measuring.store(false, Ordering::Release);
            });
        }
        Ok(())
    }
}

/// Beats between two measurements of the consumer lag.
const LAG_EVERY: u64 = 5;

/// Sets the lag gauge of each partition this node owns: what its group has yet to consume.
async fn report_lag(ctx: &NodeContext) {
    let topic = schemas::EVENTS_TOPIC;
    match ctx
        .bus
        .lag(topic, crate::shells::ingress::INGRESS_GROUP)
        .await
    {
        Ok(lag) => {
            let owned = ctx.ownership.partitions();
            for (partition, behind) in lag.into_iter().filter(|(p, _)| owned.contains(p)) {
                metrics::gauge!("switchyard_consumer_lag", "topic" => topic, "partition" => partition.to_string())
                    .set(behind as f64);
            }
        }
        Err(error) => tracing::debug!(%error, "measuring the consumer lag failed"),
    }
}
