//! Shared fixtures for vphone's end-to-end tests.
