//! The HTTP API through its handler, fed API Gateway HTTP API (v2) events, against real
//! Postgres, Redis and the S3-compatible server.

mod access;
mod failover;
mod imports;
mod load;
mod logs;
mod postgres_faults;
mod qr;
mod redis_versions;
mod rotating;
mod secrets;
mod support;
