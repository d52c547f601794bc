//! multibee examples and end-to-end tests.
