//! Hostile cases: redaction.
