//! HTTP handlers, one module per endpoint family.

pub mod chat;
pub mod health;
pub mod models;
pub mod status;
pub mod tokens;
