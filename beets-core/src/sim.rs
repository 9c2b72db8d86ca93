//! Simulated broadcast medium (being written).
