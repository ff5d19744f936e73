//! End-to-end tests of the `switchyard` binary and of an in-process node, over real sockets.

mod automations;
mod bad_input;
mod brokers;
mod calendar;
mod channels;
mod chaos;
mod cli;
mod costs;
mod crash;
mod end_to_end;
mod harness;
mod load;
mod notifier;
mod orchestration;
mod recovery;
mod supervision;
mod trace;
