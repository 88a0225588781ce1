//! Login rate limits, per account and per client address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{ApiError, ApiResult};

/// A token bucket: `burst` attempts at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy)]
pub struct LoginQuota {
    pub burst: u32,
    pub per_minute: u32,
}

impl LoginQuota {
    fn quota(self) -> Quota {
        let per_minute = NonZeroU32::new(self.per_minute.max(1)).expect("at least one");
        let burst = NonZeroU32::new(self.burst.max(1)).expect("at least one");
        Quota::per_minute(per_minute).allow_burst(burst)
    }
}

pub struct LoginLimiter {
    accounts: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
}

impl LoginLimiter {
    pub fn new(per_account: LoginQuota, per_address: LoginQuota) -> Self {
        Self {
            accounts: RateLimiter::keyed(per_account.quota()),
            addresses: RateLimiter::keyed(per_address.quota()),
        }
    }

    /// Counts one login attempt for `email` from `address`, or returns a 429
    /// that says how long to wait.
    pub fn check(&self, email: &str, address: IpAddr) -> ApiResult<()> {
        let clock = DefaultClock::default();
        let wait = |not_until: governor::NotUntil<_>| {
            let wait = not_until.wait_time_from(clock.now());
            ApiError::TooManyRequests(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        };
        self.addresses.check_key(&address).map_err(wait)?;
        self.accounts
            .check_key(&email.to_lowercase())
            .map_err(wait)?;
        Ok(())
    }

    /// Drops the state of keys whose buckets are full again, so memory does
    /// not grow with every address ever seen.
    pub fn forget_idle(&self) {
        self.accounts.retain_recent();
        self.addresses.retain_recent();
    }
}

/// How often idle rate-limit keys are dropped.
pub const FORGET_INTERVAL: Duration = Duration::from_secs(60);
