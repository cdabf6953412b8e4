//! Host log lines that guests cause (a chained call failed, its output
//! was too large...), rate-limited: a guest that fails a hundred thousand
//! chained calls a second must not flood the host's log, nor spend the
//! host's time writing it.
//!
//! A token bucket allows [`BURST`] lines at once and [`PER_SECOND`] lines
//! a second after that; lines past it are counted, and the count is
//! written with the next line allowed.
//!
//! ```
//! faaslet_platform::guest_log::line(format_args!("chained call to {} failed", "f"));
//! ```

use std::sync::Mutex;
use std::time::Instant;

/// Lines allowed at once.
pub const BURST: f64 = 200.0;
/// Lines allowed a second, after the burst.
pub const PER_SECOND: f64 = 50.0;

struct Bucket {
    tokens: f64,
    last: Option<Instant>,
    suppressed: u64,
}

static BUCKET: Mutex<Bucket> = Mutex::new(Bucket {
    tokens: BURST,
    last: None,
    suppressed: 0,
});

/// Writes `faaslet: LINE` to stderr, unless the rate limit is reached
/// (then the line is counted, and the count reported later).
pub fn line(args: std::fmt::Arguments<'_>) {
    let suppressed = {
        let mut b = BUCKET.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(last) = b.last {
            let refill = now.duration_since(last).as_secs_f64() * PER_SECOND;
            b.tokens = (b.tokens + refill).min(BURST);
        }
        b.last = Some(now);
        if b.tokens < 1.0 {
            b.suppressed += 1;
            return;
        }
        b.tokens -= 1.0;
        std::mem::take(&mut b.suppressed)
    };
    if suppressed > 0 {
        eprintln!("faaslet: {suppressed} more lines like the next were not logged (rate limit)");
    }
    eprintln!("faaslet: {args}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst() {
        let before = BUCKET.lock().unwrap().suppressed;
        for i in 0..(BURST as usize + 500) {
            line(format_args!("line {i}"));
        }
        let b = BUCKET.lock().unwrap();
        assert!(b.suppressed >= before + 400, "{} suppressed", b.suppressed);
    }
}
