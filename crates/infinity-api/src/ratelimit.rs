//! Login rate limits, per account and per client address.
//!
//! With a shared tier every node counts attempts in the same buckets, so a
//! client cannot multiply its allowance by spreading its attempts over the
//! nodes. While the shared tier is unreachable each node counts alone.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

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

    /// Returns the time one attempt takes to refill.
    pub fn interval(self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }
}

/// Buckets that every node shares.
#[async_trait]
pub trait SharedLimits: Send + Sync + 'static {
    /// Takes one attempt from the bucket named `key`. Returns `None` when
    /// the attempt is allowed, or how long to wait when it is not.
    async fn take(&self, key: &str, quota: LoginQuota) -> Result<Option<Duration>, String>;
}

pub struct LoginLimiter {
    per_account: LoginQuota,
    per_address: LoginQuota,
    accounts: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    shared: OnceLock<Arc<dyn SharedLimits>>,
}

impl LoginLimiter {
    pub fn new(per_account: LoginQuota, per_address: LoginQuota) -> Self {
        Self {
            per_account,
            per_address,
            accounts: RateLimiter::keyed(per_account.quota()),
            addresses: RateLimiter::keyed(per_address.quota()),
            shared: OnceLock::new(),
        }
    }

    /// Counts attempts in `shared` from now on. Call it once, at start-up.
    pub fn set_shared(&self, shared: Arc<dyn SharedLimits>) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("shared rate limits were already set; keeping the first");
        }
    }

    /// Counts one login attempt for `email` from `address`, or returns a 429
    /// that says how long to wait.
    pub async fn check(&self, email: &str, address: IpAddr) -> ApiResult<()> {
        let email = email.to_lowercase();
        if let Some(shared) = self.shared.get() {
            match self.check_shared(shared.as_ref(), &email, address).await {
                Ok(()) => return Ok(()),
                Err(Some(wait)) => return Err(too_many(wait)),
                // Unreachable: count on this node instead.
                Err(None) => {}
            }
        }
        let clock = DefaultClock::default();
        let wait =
            |not_until: governor::NotUntil<_>| too_many(not_until.wait_time_from(clock.now()));
        self.addresses.check_key(&address).map_err(wait)?;
        self.accounts.check_key(&email).map_err(wait)?;
        Ok(())
    }

    /// Returns `Err(Some(wait))` when a shared bucket is empty, and
    /// `Err(None)` when the shared buckets cannot be reached.
    async fn check_shared(
        &self,
        shared: &dyn SharedLimits,
        email: &str,
        address: IpAddr,
    ) -> Result<(), Option<Duration>> {
        // Emails are stored only as digests.
        let account = hex::encode(Sha256::digest(email.as_bytes()));
        let buckets = [
            (format!("address:{address}"), self.per_address),
            (format!("account:{account}"), self.per_account),
        ];
        for (key, quota) in buckets {
            match shared.take(&key, quota).await {
                Ok(None) => {}
                Ok(Some(wait)) => return Err(Some(wait)),
                Err(error) => {
                    tracing::debug!(%error, "shared rate limits unavailable; counting locally");
                    return Err(None);
                }
            }
        }
        Ok(())
    }

    /// Drops the state of keys whose buckets are full again, so memory does
    /// not grow with every address ever seen.
    pub fn forget_idle(&self) {
        self.accounts.retain_recent();
        self.addresses.retain_recent();
    }
}

/// Builds a 429 whose `Retry-After` is `wait` rounded up to whole seconds.
fn too_many(wait: Duration) -> ApiError {
    ApiError::TooManyRequests(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

/// How often idle rate-limit keys are dropped.
pub const FORGET_INTERVAL: Duration = Duration::from_secs(60);
