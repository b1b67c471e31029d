//! Integration tests of attestmesh-testbed: the demo as a user runs it.

// A failed unwrap is a failed test, with the reason in the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod demo;
