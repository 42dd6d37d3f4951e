//! Hostile cases: remint.
