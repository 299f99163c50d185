//! The handset <-> host session over QUIC (being built; see issue "device-bridge").
