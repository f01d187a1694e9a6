//! [`RetryPolicy`]: how long to wait before the next attempt, and when to
//! stop. Used for device reconnection and for service operations that fail
//! with a transient error.

use std::time::Duration;

use rand::Rng as _;

/// When and how often to try again after a transient failure.
///
/// The default is exponential back-off with jitter, forever: 100 ms, 200 ms,
/// 400 ms … capped at 10 s, each delay shortened by up to 20 % at random so
/// that a fleet that lost the hub at once does not come back at once.
///
/// ```
/// use courier_client::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::exponential()
///     .max_delay(Duration::from_secs(30))
///     .max_attempts(10);
/// assert!(policy.delay(0).is_some());
/// assert!(policy.delay(10).is_none());
/// assert!(RetryPolicy::no_retry().delay(0).is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    NoRetry,
    Exponential {
        initial: Duration,
        max_delay: Duration,
        max_attempts: Option<u32>,
        jitter: f64,
    },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::exponential()
    }
}

impl RetryPolicy {
    /// Exponential back-off with jitter, retrying forever (the default).
    pub fn exponential() -> Self {
        Self {
            kind: Kind::Exponential {
                initial: Duration::from_millis(100),
                max_delay: Duration::from_secs(10),
                max_attempts: None,
                jitter: 0.2,
            },
        }
    }

    /// Never retry: the first failure is final.
    pub fn no_retry() -> Self {
        Self {
            kind: Kind::NoRetry,
        }
    }

    /// Sets the first delay (exponential policies only).
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        if let Kind::Exponential { initial, .. } = &mut self.kind {
            *initial = delay;
        }
        self
    }

    /// Caps each delay (exponential policies only).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        if let Kind::Exponential { max_delay, .. } = &mut self.kind {
            *max_delay = delay;
        }
        self
    }

    /// Gives up after this many retries (exponential policies only).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        if let Kind::Exponential { max_attempts, .. } = &mut self.kind {
            *max_attempts = Some(attempts);
        }
        self
    }

    /// Retries without limit (exponential policies only; the default).
    pub fn forever(mut self) -> Self {
        if let Kind::Exponential { max_attempts, .. } = &mut self.kind {
            *max_attempts = None;
        }
        self
    }

    /// Sets the share of each delay removed at random, 0.0 to 1.0
    /// (exponential policies only).
    pub fn jitter(mut self, share: f64) -> Self {
        if let Kind::Exponential { jitter, .. } = &mut self.kind {
            *jitter = share.clamp(0.0, 1.0);
        }
        self
    }

    /// The wait before retry number `attempt` (0 for the first retry), or
    /// `None` when the policy gives up.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        match &self.kind {
            Kind::NoRetry => None,
            Kind::Exponential {
                initial,
                max_delay,
                max_attempts,
                jitter,
            } => {
                if max_attempts.is_some_and(|max| attempt >= max) {
                    return None;
                }
                let full = initial
                    .saturating_mul(1u32 << attempt.min(20))
                    .min(*max_delay);
                let cut = if *jitter > 0.0 {
                    rand::thread_rng().gen_range(0.0..=*jitter)
                } else {
                    0.0
                };
                Some(full.mul_f64(1.0 - cut))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_only_shortens_them() {
        let policy = RetryPolicy::exponential()
            .initial_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(1))
            .jitter(0.2);
        for _ in 0..100 {
            let d0 = policy.delay(0).unwrap();
            assert!(d0 <= Duration::from_millis(100) && d0 >= Duration::from_millis(80));
            let d3 = policy.delay(3).unwrap();
            assert!(d3 <= Duration::from_millis(800) && d3 >= Duration::from_millis(640));
            let d30 = policy.delay(30).unwrap();
            assert!(d30 <= Duration::from_secs(1) && d30 >= Duration::from_millis(800));
        }
    }

    #[test]
    fn attempts_are_bounded_when_asked_and_none_means_none() {
        let policy = RetryPolicy::exponential().jitter(0.0).max_attempts(3);
        assert_eq!(policy.delay(2), Some(Duration::from_millis(400)));
        assert_eq!(policy.delay(3), None);
        assert!(policy.clone().forever().delay(1000).is_some());
        assert_eq!(RetryPolicy::no_retry().delay(0), None);
    }
}
