//! Generated gRPC types and services of package `switchyard.v1`.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("switchyard.v1");

/// The encoded file descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("switchyard_descriptor");
