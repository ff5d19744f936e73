//! The `servers` actor: runs the HTTP and gRPC servers as a supervised child of the node.
//!
//! Supervision: if either server stops on its own, the actor fails and is restarted, which
//! binds the ports again. Listeners are bound in `pre_start`, so a port in use fails the start.
//! Shutdown: stopping the actor signals both servers to finish their in-flight requests.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::GatewayContext;

/// Where the servers listen.
#[derive(Debug, Clone, Copy)]
pub struct ServerAddrs {
    /// HTTP listen address.
    pub http: SocketAddr,
    /// gRPC listen address.
    pub grpc: SocketAddr,
}

/// The servers actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServersActor;

/// A server stopped by itself (sent to itself).
pub struct ServerStopped(pub String);

#[doc(hidden)]
pub struct ServersState {
    /// Sending `true`, or dropping it (a kill or a failure skips `post_stop`), stops both servers.
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Completes when the servers should stop: told so, or the actor holding the sender is gone.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

impl Actor for ServersActor {
    type Msg = ServerStopped;
    type State = ServersState;
    type Arguments = (GatewayContext, ServerAddrs);

    async fn pre_start(
        &self,
        myself: ActorRef<ServerStopped>,
        (ctx, addrs): (GatewayContext, ServerAddrs),
    ) -> Result<ServersState, ActorProcessingErr> {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
        };
        let http = bind("HTTP", addrs.http).await?;
        let grpc = bind("gRPC", addrs.grpc).await?;
        tracing::info!(http = %http.local_addr()?, grpc = %grpc.local_addr()?, "listening");
        let (shutdown, signal) = watch::channel(false);
        let app = crate::app(ctx.clone());
        let routes = crate::grpc_routes(ctx).await?;

        let me = myself.clone();
        let http_signal = signal.clone();
        let http_task = tokio::spawn(async move {
            let served = axum::serve(http, app)
                .with_graceful_shutdown(stopped(http_signal))
                .await;
            let _ = me.send_message(ServerStopped(format!("http server ended: {served:?}")));
        });
        // Small messages on long-lived streams (a worker's assignments) must not wait for
        // Nagle's algorithm and the peer's delayed ACK (40 ms each).
        let incoming = TcpListenerStream::new(grpc).map(|stream| {
            stream.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        });
        let grpc_task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .layer(crate::metrics::GrpcMetricsLayer)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, stopped(signal))
                .await;
            let _ = myself.send_message(ServerStopped(format!("grpc server ended: {served:?}")));
        });
        Ok(ServersState {
            shutdown,
            tasks: vec![http_task, grpc_task],
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ServerStopped>,
        ServerStopped(reason): ServerStopped,
        _state: &mut ServersState,
    ) -> Result<(), ActorProcessingErr> {
        Err(reason.into())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ServerStopped>,
        state: &mut ServersState,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state.shutdown.send(true);
        for task in state.tasks.drain(..) {
            // Long-lived streams would hold a graceful shutdown open: cut them after a grace.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        Ok(())
    }
}
