//! Hostile cases: transport.
