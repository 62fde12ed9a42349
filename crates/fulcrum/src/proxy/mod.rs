//! The data path: listeners, and the L4 and L7 proxies behind them.

pub mod body;
pub mod client_io;
pub mod error;
pub mod hash_key;
pub mod headers;
pub mod l4;
pub mod l7;
pub mod request_body;
pub mod upstream;
pub mod worker;
