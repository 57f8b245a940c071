//! A token bucket for messages a guest can provoke (refused accesses, unknown calls): a guest looping
//! on a forbidden address must not keep the console, and with it every CPU that prints, busy.

/// Decides whether a message may be printed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    burst: u32,
    tokens: u32,
    /// Counter ticks per new token.
    interval: u64,
    last: u64,
    suppressed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Print, and say first how many messages were suppressed since the last one printed.
    Print {
        suppressed: u32,
    },
    Suppress,
}

impl RateLimit {
    /// `burst` messages at once, then one per `interval` counter ticks.
    pub const fn new(burst: u32, interval: u64) -> RateLimit {
        RateLimit { burst, tokens: burst, interval, last: 0, suppressed: 0 }
    }

    pub fn check(&mut self, now: u64) -> Verdict {
        if let Some(earned) = now.saturating_sub(self.last).checked_div(self.interval) {
            if earned > 0 {
                self.tokens = self
                    .tokens
                    .saturating_add(earned.min(u64::from(u32::MAX)) as u32)
                    .min(self.burst);
                self.last += earned * self.interval;
            }
        }
        if self.tokens == 0 {
            self.suppressed = self.suppressed.saturating_add(1);
            return Verdict::Suppress;
        }
        self.tokens -= 1;
        let suppressed = core::mem::take(&mut self.suppressed);
        Verdict::Print { suppressed }
    }
}

impl RateLimit {
    /// The count of messages suppressed since the last one printed, reset (for a last report before
    /// the machine powers off).
    pub fn take_suppressed(&mut self) -> u32 {
        core::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect 6: a guest looping on a forbidden address gets `burst` lines, then one per interval
    /// with the count of those suppressed.
    #[test]
    fn defect6_refusals_are_rate_limited() {
        let mut r = RateLimit::new(5, 1000);
        let printed =
            (0..10_000u64).filter(|&t| matches!(r.check(t / 100), Verdict::Print { .. })).count();
        // 100 ticks of time: 5 at once, and none earned yet.
        assert_eq!(printed, 5);
        assert_eq!(r.check(1000), Verdict::Print { suppressed: 9995 });
        assert_eq!(r.check(1001), Verdict::Suppress);
        assert_eq!(r.check(5000), Verdict::Print { suppressed: 1 });
        assert_eq!(r.check(u64::MAX), Verdict::Print { suppressed: 0 });
        let mut r = RateLimit::new(1, 1000);
        r.check(0);
        r.check(1);
        assert_eq!((r.take_suppressed(), r.take_suppressed()), (1, 0));
    }
}
