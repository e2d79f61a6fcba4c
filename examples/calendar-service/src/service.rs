//! Placeholder until the shared rpc types land.

use std::future::Future;

use crate::{config::Config, handle::Handler};

pub(crate) async fn serve(
    _nats: &async_nats::Client,
    _config: &Config,
    _handler: Handler,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    shutdown.await;
    Ok(())
}
