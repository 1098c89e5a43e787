//! HTTP handlers, one module per endpoint family.

pub mod chat;
pub mod dashboard;
pub mod events;
pub mod health;
pub mod me;
pub mod metrics;
pub mod models;
pub mod plugins;
pub mod status;
pub mod tokens;
