//! Issue 9 hardening: placeholder, filled by its branch.
