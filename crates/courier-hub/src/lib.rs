//! courier-hub (being written).
