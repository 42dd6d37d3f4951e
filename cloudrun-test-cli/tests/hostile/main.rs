//! The hostile suite: each case plays a hostile user, environment or file and asserts
//! where the token did or did not go (a recording listener), or that the failure is a
//! clear error and nothing panicked. One module per class of the trust invariants
//! (README, "Threat model").

#[path = "../support/mod.rs"]
mod support;

mod cache;
mod curl;
mod emulate;
mod redaction;
mod remint;
mod transport;
