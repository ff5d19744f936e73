//! The bus conformance suite, run against every adapter on real brokers.

mod conformance;
mod embedded;
mod kafka;
mod rabbitmq;
