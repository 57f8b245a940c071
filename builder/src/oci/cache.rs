//! The content-addressed blob cache.
