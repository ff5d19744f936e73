//! An OTP-style supervision library on ractor, knowing nothing of any domain.
//!
//! A [`SupervisorActor`] starts its children from [`ChildSpec`]s, restarts them by a
//! [`Strategy`] when they stop, waits an exponential backoff with jitter between restarts, and
//! fails upward to its own parent when more than `max_restarts` happen within `within`. Children
//! may be given at start (static) or added later with [`start_child`] (dynamic). Every supervisor
//! writes its children's status and restart counts into a shared [`Tree`], which anyone can
//! snapshot.

#![warn(missing_docs)]

mod child;
mod policy;
mod supervisor;
mod tree;

pub use child::{ChildSpec, Restart, StartFuture};
pub use policy::{Backoff, Strategy, SupervisorConfig};
pub use supervisor::{
    SupervisorActor, SupervisorArgs, SupervisorError, SupervisorMsg, start_child, terminate_child,
};
pub use tree::{ActorStatus, Tree, TreeNode};
