//! Hostile cases: cache.
