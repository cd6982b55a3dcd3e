//! The shared library of the QR functions: each function's `main.rs` wires these to one event.

pub mod cache;
pub mod config;
pub mod db;
pub mod error;
pub mod import;
pub mod kind;
pub mod migrations;
pub mod qr;
pub mod spreadsheet;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod token;
pub mod warm;
