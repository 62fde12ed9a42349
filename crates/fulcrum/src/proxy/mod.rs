//! The data path: listeners, and the L4 and L7 proxies behind them.

pub mod error;
pub mod h1;
pub mod hash_key;
pub mod headers;
pub mod l4;
pub mod upstream;
pub mod worker;
