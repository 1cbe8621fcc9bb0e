//! The status screen renderer (issue 5).
