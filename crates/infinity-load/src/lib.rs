//! Infinity's load generator, run as `infinity load`.
//!
//! It seeds a population through the public API (users with heavy-tailed follower counts,
//! articles with tags, comments, favourites and optional photo uploads), then sends a
//! read-heavy mix with Zipf popularity and reports throughput and latency per operation.

mod args;
mod client;
mod distributions;
mod driver;
mod mix;
mod population;
mod report;
mod requests;
mod run;
mod seed;

pub use args::LoadArgs;
pub use report::{OperationReport, Report, SeedSummary};
pub use run::run;
