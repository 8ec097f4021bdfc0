//! Root-only integration tests; see tests/tests/.
