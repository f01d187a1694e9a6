//! courier-server (being written).
