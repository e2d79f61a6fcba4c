//! The labels of the `rpc` metrics: a method is labelled by its registered
//! name, or `unknown` (a client's string never becomes a label).

use herald_shared::{error_code::ErrorCode, rpc::RpcMethod};
use prometheus_client::{
    encoding::{EncodeLabelSet, LabelSetEncoder},
    metrics::histogram::{Histogram, exponential_buckets},
};

/// The labels of `rpc_calls`: the method and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RpcCall(pub(super) RpcMethodLabel, pub(super) &'static str);

/// The `method` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RpcMethodLabel(pub(super) Option<RpcMethod>);

pub(super) fn rpc_latency_histogram() -> Histogram {
    // 0.5 ms … 16 s, doubling: past the longest sensible --rpc-timeout-ms.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl EncodeLabelSet for RpcMethodLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let method = self.0.map_or("unknown", RpcMethod::as_str);
        [("method", method)].encode(encoder)
    }
}

impl EncodeLabelSet for RpcCall {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let method = self.0.0.map_or("unknown", RpcMethod::as_str);
        [("method", method), ("outcome", self.1)].encode(encoder)
    }
}

/// How a call ended: the `outcome` label of `herald_edge_rpc_calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// The service answered `{"result": …}`.
    Ok,
    /// The service answered `{"error": …}` with a code of its own.
    ServiceError,
    /// Refused or failed at the edge with this code.
    Edge(ErrorCode),
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ServiceError => "service_error",
            Self::Edge(code) => code.as_str(),
        }
    }
}
