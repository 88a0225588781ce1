//! Private PostgreSQL clusters, Redis servers and RabbitMQ nodes on
//! loopback, for Infinity's tests, benchmarks and local topologies.
//!
//! [`PgCluster::start`] creates a primary and streaming replicas in a new
//! temporary directory. Every server listens only on `127.0.0.1`, on a free
//! port picked at start, and none of them is the machine's own PostgreSQL
//! server.
//! Dropping the cluster stops the servers and removes the directory.
//!
//! [`shared_cluster`] and [`shared_database`] give every test of one test
//! binary the same cluster and a new database on it, so that each test does
//! not pay for its own start.
//!
//! The API is synchronous and built on `std::process`. Async tests may call it
//! directly because every call is short, or through `spawn_blocking`.
//!
//! # Requirements
//!
//! Linux with PostgreSQL's server programs in `/usr/lib/postgresql/<major>/bin`
//! (Debian's `postgresql` package); the highest installed major version is
//! used. When they are missing and the process runs as root, the first
//! cluster start installs the package with `apt-get`. PostgreSQL refuses to
//! run as root, so as root the server programs run as the `postgres` system
//! user through `runuser`.

mod binaries;
mod cluster;
mod process;
mod rabbit;
mod reaper;
mod redis;
mod server;
mod shared;

pub use cluster::{PgCluster, PgOptions};
pub use rabbit::{shared_rabbit, RabbitServer};
pub use redis::RedisServer;
pub use server::PgServer;
pub use shared::{shared_cluster, shared_database, SharedDatabase};
