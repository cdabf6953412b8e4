//! The exit status of `faaslet run` and `faaslet invoke`.
//!
//! | status | meaning |
//! |---|---|
//! | 0..=125 | the guest's exit code (`proc_exit`, or `main`'s result) |
//! | 125 | also: the guest's exit code was outside 0..=125 (negative, or 126 and above, e.g. `proc_exit(256)`); stderr names it |
//! | 134 | the guest trapped (stderr says `trap:` and which) |
//! | 2 | faaslet itself failed (bad arguments, module, link error); stderr says why |
//!
//! A shell reads 126 and above as "cannot execute", "not found" or "killed
//! by signal N - 128", and an exit status keeps only 8 bits (so
//! `proc_exit(256)` would read as success): guest codes in that range are
//! therefore reported as 125, and 134 (SIGABRT's 128 + 6) is left to traps
//! alone, so that a trap can never be mistaken for a guest's exit.

/// The status `faaslet run` exits with when the guest traps.
pub const TRAP_STATUS: u8 = 134;

/// The status for a guest exit code outside [`GUEST_STATUS_MAX`]'s range.
pub const OUT_OF_RANGE_STATUS: u8 = 125;

/// The largest guest exit code passed through unchanged.
pub const GUEST_STATUS_MAX: i32 = 125;

/// The process exit status for a guest's return code, and a note for
/// stderr when it had to be changed.
pub fn guest_status(code: i32) -> (u8, Option<String>) {
    if (0..=GUEST_STATUS_MAX).contains(&code) {
        (code as u8, None)
    } else {
        (
            OUT_OF_RANGE_STATUS,
            Some(format!(
                "guest exit code {code} is outside 0..={GUEST_STATUS_MAX}; exiting with {OUT_OF_RANGE_STATUS}"
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_outside_the_passable_range_never_read_as_success_or_a_trap() {
        assert_eq!(guest_status(0), (0, None));
        assert_eq!(guest_status(42).0, 42);
        assert_eq!(guest_status(125).0, 125);
        for code in [256, 512, 126, 134, 255, -1, i32::MIN, i32::MAX] {
            let (status, note) = guest_status(code);
            assert_eq!(status, OUT_OF_RANGE_STATUS, "{code}");
            assert!(note.unwrap().contains(&code.to_string()));
        }
    }
}
