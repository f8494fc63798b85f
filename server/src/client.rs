//! Who sent a request, as the per-client limits see it.

use std::net::SocketAddr;

/// The TCP peer of the connection a request arrived on. Found in request extensions.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);
