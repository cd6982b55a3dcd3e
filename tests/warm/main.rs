//! The QR cache warmer against real Postgres and Redis.

mod cache_contract;
mod command;
mod connections;
mod failures;
mod lambda;
mod pgbouncer;
mod redis_settings;
mod rotating;
mod schedulers;
mod secrets;
mod shards;
