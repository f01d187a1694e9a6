//! courier-store (being written).
