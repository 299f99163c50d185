//! The handset companion client (not yet implemented).
