//! The process's shutdown signal.

/// Completes on SIGTERM (what an orchestrator sends to start a drain) or on
/// SIGINT (so Ctrl-C behaves the same while developing), and logs which.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => tracing::info!("Received SIGINT, shutting down."),
            _ = terminate.recv() => tracing::info!("Received SIGTERM, shutting down."),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!("Received Ctrl-C, shutting down.");
    }
}
