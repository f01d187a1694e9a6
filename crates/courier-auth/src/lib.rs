//! courier-auth (being written).
