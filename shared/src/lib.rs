//! The shared library of the QR functions: each function's `main.rs` wires these to one event.

pub mod cache;
pub mod config;
pub mod db;
pub mod error;
#[cfg(feature = "imports")]
pub mod import;
pub mod kind;
pub mod migrations;
pub mod mint;
pub mod qr;
pub mod rotating;
#[cfg(feature = "parameter-store")]
pub mod secrets;
#[cfg(feature = "imports")]
pub mod spreadsheet;
#[cfg(feature = "parameter-store")]
pub mod startup;
#[cfg(feature = "imports")]
pub mod storage;
pub mod telemetry;
pub mod token;
pub mod warm;
