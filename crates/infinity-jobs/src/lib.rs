//! Infinity's background work: the worker runtime over a [`JobQueue`],
//! the job handlers, media objects and e-mail.
//!
//! [`JobQueue`]: infinity_store::JobQueue

pub mod handlers;
pub mod mail;
pub mod objects;
pub mod worker;

pub use worker::{Handler, Handlers, JobError, Worker, WorkerConfig};
