//! Where the server listens: the socket, opened before the server starts so
//! that every kind (TCP, unix, systemd-passed) is one value; TLS for TCP;
//! and telling systemd that the server is ready; the options every accepted
//! connection gets. All four are leaves.

pub mod connection;
pub mod socket;
pub mod systemd;
pub mod tls;
pub mod unix_stall;
