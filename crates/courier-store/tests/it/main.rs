//! Integration tests of the write-ahead log store, on real files in temporary directories.
//!
//! Crashes are simulated by editing the files a real store left behind: cutting them at
//! every byte, flipping bytes, copying a directory at one step of a checkpoint. Each test
//! says which durability claim it guards.

// Helpers here are test code too: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod checkpoint;
mod group_commit;
mod model;
mod recovery;
mod rotation;
mod round_trip;
mod support;
