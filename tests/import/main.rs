//! The spreadsheet importer against real Postgres, Redis and an S3-compatible server, driven by
//! real S3 event JSON through the Lambda handler.

mod concurrent_writes;
mod fixtures;
mod hostile;
mod idempotency;
mod large_files;
mod logs;
mod students_and_stalls;
mod trust;
