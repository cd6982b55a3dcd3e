//! Development tools around the functions: demo data, migrations and benchmarks. Nothing here
//! is deployed.

pub mod cleanup;
pub mod seed;
