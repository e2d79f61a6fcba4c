//! Logging and tracing set-up: structured `tracing` events, plain or JSON,
//! and OpenTelemetry export of spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! The exporter speaks OTLP over HTTP/protobuf and reads the standard
//! `OTEL_EXPORTER_OTLP_*` variables (endpoint, headers, timeout) itself;
//! `OTEL_SERVICE_NAME` overrides the service name a binary passes in.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    runtime,
    trace::{SdkTracer, SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::{EnvFilter, Registry, fmt, layer::Layered, prelude::*};

use crate::secret::redact_url;

/// Switches OTLP export on: the collector's base URL, e.g. `http://127.0.0.1:4318`.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Overrides the `service.name` a binary passes to [`init`].
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// The OpenTelemetry layer, over the filtered registry.
type OtelLayer = OpenTelemetryLayer<Layered<EnvFilter, Registry>, SdkTracer>;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Keeps span export running. [`TelemetryGuard::shutdown`] (or, failing
/// that, dropping the guard) exports what is still buffered and stops the
/// exporter.
#[derive(Debug)]
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber: level from `RUST_LOG` (default `info`),
/// log lines in `format` on stderr, and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set, every span exported over OTLP as `service_name` (batched on the
/// current tokio runtime). Sets the global propagator to W3C Trace Context.
///
/// Safe to call twice; the second call changes nothing. An exporter that
/// cannot be built is logged and leaves export off: logs still work.
pub fn init(format: LogFormat, service_name: &'static str) -> TelemetryGuard {
    // Before the OTLP exporter builds its HTTP client.
    crate::jwks::install_crypto_provider();
    if tracing::dispatcher::has_been_set() {
        return TelemetryGuard { provider: None };
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let endpoint = std::env::var(OTEL_EXPORTER_OTLP_ENDPOINT)
        .ok()
        .filter(|e| !e.is_empty());
    let provider = endpoint.as_ref().map(|_| tracer_provider(service_name));
    let layer = match &provider {
        Some(Ok(provider)) => {
            Some(tracing_opentelemetry::layer().with_tracer(provider.tracer("herald")))
        }
        _ => None,
    };
    install(format, layer);
    match provider {
        Some(Ok(provider)) => {
            let endpoint = endpoint.as_deref().map(redact_url);
            tracing::info!(endpoint = endpoint.as_deref(), "Exporting spans over OTLP.");
            TelemetryGuard {
                provider: Some(provider),
            }
        }
        Some(Err(err)) => {
            tracing::error!(error = %err, "OTLP export is off: the exporter could not be set up.");
            TelemetryGuard { provider: None }
        }
        None => TelemetryGuard { provider: None },
    }
}

/// For tests: logs only when `TEST_LOG` is set, and only once per process;
/// never exports spans.
pub fn init_for_tests() {
    crate::jwks::install_crypto_provider();
    if std::env::var_os("TEST_LOG").is_some() && !tracing::dispatcher::has_been_set() {
        install(LogFormat::Plain, None);
    }
}

fn install(format: LogFormat, otel: Option<OtelLayer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        LogFormat::Plain => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
}

/// Why export could not be set up.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("the batch span processor needs a tokio runtime")]
    NoRuntime,
    #[error(transparent)]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// An OTLP/HTTP exporter behind a batch processor that runs on this runtime.
fn tracer_provider(service_name: &'static str) -> Result<SdkTracerProvider, ExportError> {
    Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    // `Resource::builder` reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    // ours is only the default.
    let mut resource = Resource::builder();
    if std::env::var_os(OTEL_SERVICE_NAME).is_none() {
        resource = resource.with_service_name(service_name);
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build())
}

// === impl TelemetryGuard ===

impl TelemetryGuard {
    /// Exports the spans still buffered and stops the exporter; call it after
    /// `run` returns. Takes at most about one export timeout
    /// (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default).
    pub async fn shutdown(mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The SDK blocks its caller until the export task on this runtime has
        // finished: keep that off the runtime's workers.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "Flushing spans failed."),
            Err(err) => tracing::warn!(error = %err, "Flushing spans panicked."),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // Blocking here is safe only where other workers keep driving the
        // export task; on a current-thread runtime it would wait for itself.
        match Handle::try_current().map(|handle| handle.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => {
                let _ = tokio::task::block_in_place(|| provider.shutdown());
            }
            // The runtime, and the export task with it, is gone: this returns at once.
            Err(_) => {
                let _ = provider.shutdown();
            }
            Ok(_) => {}
        }
    }
}
