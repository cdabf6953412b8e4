//! Integration tests for faaslet live in `tests/`; this library is empty on purpose.
