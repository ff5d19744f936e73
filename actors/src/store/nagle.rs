//! sqlx 0.9.0 leaves Nagle's algorithm on for its TCP connections (sqlx#4335, fixed upstream by
//! #4336, not yet released): a statement larger than one segment then waits for the server's
//! delayed ACK, 40 ms a statement. The state writer's batches to PostgreSQL over loopback TCP
//! took ~220 ms each (3.7k `task.created`/s, against 11k/s over the Unix socket). Until sqlx
//! sets it itself, every new PostgreSQL connection turns it off on this process's TCP sockets
//! to the server's port.

use std::os::fd::{BorrowedFd, RawFd};

/// The port a `postgres://` URL connects to (5432 unless it names one).
pub(crate) fn postgres_port(url: &str) -> u16 {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    host.rsplit_once(':')
        .filter(|(_, port)| !port.ends_with(']'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(5432)
}

/// Turns Nagle's algorithm off on this process's TCP sockets connected to `port`.
pub(crate) fn disable_towards(port: u16) {
    for_each_socket_towards(port, |socket| {
        let _ = socket.set_tcp_nodelay(true);
    });
}

/// Whether each of this process's TCP sockets connected to `port` has Nagle's algorithm off.
pub fn nodelay_towards(port: u16) -> Vec<bool> {
    let mut flags = Vec::new();
    for_each_socket_towards(port, |socket| {
        flags.push(socket.tcp_nodelay().unwrap_or(false));
    });
    flags
}

fn for_each_socket_towards(port: u16, mut each: impl FnMut(socket2::SockRef<'_>)) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: borrowed for a few system calls only; a descriptor that closed meanwhile
        // makes them fail (EBADF), and one reused meanwhile is a socket NODELAY does not harm.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_server = socket
            .peer_addr()
            .ok()
            .and_then(|peer| peer.as_socket())
            .is_some_and(|peer| peer.port() == port);
        if to_server {
            each(socket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::postgres_port;

    #[test]
    fn the_port_of_a_url() {
        assert_eq!(postgres_port("postgres://u:p@127.0.0.1:5433/test"), 5433);
        assert_eq!(
            postgres_port("postgres://u:p@db/test?sslmode=disable"),
            5432
        );
        assert_eq!(postgres_port("postgres://u@[::1]:6000/x"), 6000);
        assert_eq!(postgres_port("postgres://u@[::1]/x"), 5432);
        assert_eq!(
            postgres_port("postgres://u@localhost/x?host=/var/run/postgresql"),
            5432
        );
    }
}
