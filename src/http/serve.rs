//! The accept loop of every HTTP listener: hyper's HTTP/1 connection builder, tuned for many
//! long-lived, mostly idle connections (the public listener's event streams), instead of
//! `axum::serve`'s defaults. Per connection hyper keeps a read buffer and a write buffer; by
//! default, while a response body streams, it also reserves another 8 KiB read buffer to
//! notice the client closing. `half_close(true)` skips that read (a closed stream is noticed
//! at the next write instead: the next event or keep-alive comment), `max_buf_size(8192)` caps
//! the read buffer at hyper's minimum (request heads, webhook bodies stream through it), and
//! `writev(true)` writes the small SSE frames without copying them into a flat buffer.
//! With `event_edge` on (listeners serving event streams), `GET /v1/...` requests skip
//! hyper altogether (`super::event_edge`). Measured in docs/benchmarks.md ("Live events"),
//! decision 49.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::event_edge;

/// hyper's smallest allowed read buffer cap.
const MAX_BUF_SIZE: usize = 8192;

/// The per-connection settings.
fn builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .half_close(true)
        .max_buf_size(MAX_BUF_SIZE)
        .writev(true);
    builder
}

/// Serves `app` on `listener` until `stopped` fires, then stops accepting and waits for the
/// open connections to finish their in-flight responses (event streams on the lean path end
/// at once). `event_edge`: serve `GET /v1/...` on the lean path.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    stopped: oneshot::Receiver<()>,
    event_edge: bool,
) {
    let builder = builder();
    let graceful = GracefulShutdown::new();
    let (stop_edge, edge_stopped) = watch::channel(false);
    tokio::pin!(stopped);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: the same back-off as axum::serve.
                    tracing::warn!(error = %err, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        // Event frames are small and must leave at once.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let edge_stopped = edge_stopped.clone();
        tokio::spawn(async move {
            if event_edge {
                match event_edge::is_event_request(&stream).await {
                    None => return,
                    Some(true) => return event_edge::serve(stream, app, edge_stopped).await,
                    Some(false) => {}
                }
            }
            let service = TowerToHyperService::new(app);
            let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_edge.send(true);
    graceful.shutdown().await;
}
