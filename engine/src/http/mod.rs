//! The HTTP side of the port: the upgrade and the backend API (`api`) and
//! `/metrics` ([`metrics`]).

pub(crate) mod api;
pub mod metrics;
