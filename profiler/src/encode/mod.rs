//! Encoders: a symbolized [`Profile`](crate::profile::Profile) to bytes.

pub mod otlp;
pub mod pprof;
pub mod pprof_proto;
