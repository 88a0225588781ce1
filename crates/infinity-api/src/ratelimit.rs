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

/// Returns the loopback networks, whose peers are trusted proxies by default.
pub fn loopback() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|net| net.parse().expect("a valid network"))
        .collect()
}

/// Returns the address of the client behind `peer`. When `peer` is a
/// trusted proxy, the client is the rightmost address of `x-forwarded-for`
/// that is not a trusted proxy itself. Every trusted hop appends the address
/// it received the request from, so anything further left may have been
/// forged by the client.
pub fn client_address(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map_while(|hop| hop.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|hop| !is_trusted(hop))
        .copied()
        .unwrap_or(peer)
}

/// How often idle rate-limit keys are dropped.
pub const FORGET_INTERVAL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn client_address_trusts_only_proxies() {
        let trusted = loopback();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "203.0.113.7".parse().unwrap();
        let forged = forwarded("198.51.100.1, 203.0.113.9");
        // A direct client cannot pick its address.
        assert_eq!(client_address(remote, &forged, &trusted), remote);
        // Behind a trusted proxy the last hop it appended counts.
        let expected: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_address(local, &forged, &trusted), expected);
        let chained = forwarded("203.0.113.9, 127.0.0.1");
        assert_eq!(client_address(local, &chained, &trusted), expected);
        // Without the header, or with only trusted hops, the peer counts.
        assert_eq!(client_address(local, &HeaderMap::new(), &trusted), local);
        assert_eq!(client_address(local, &forwarded("::1"), &trusted), local);
        assert_eq!(
            client_address(local, &forwarded("not an address"), &trusted),
            local
        );
    }
}
