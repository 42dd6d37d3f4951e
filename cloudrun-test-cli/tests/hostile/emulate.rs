//! Hostile cases: emulate.
