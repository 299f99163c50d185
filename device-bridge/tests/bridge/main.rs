//! Integration tests of device-bridge over real UDP sockets on loopback.

mod auth;
mod bad_input;
mod channels;
mod common;
mod limits;
mod resume;
