//! courier-http (being written).
