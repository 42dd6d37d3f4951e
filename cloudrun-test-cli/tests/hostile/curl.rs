//! Hostile cases: curl.
