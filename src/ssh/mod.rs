//! Everything that touches russh lives below this module, so a russh upgrade (its API broke in
//! 0.61 through 0.64) changes only these files.

pub mod channel;
pub mod dial;
pub mod error;
pub mod handler;
pub mod hostkey;
mod kexinit;
pub mod keys;
pub mod known_hosts;
mod observed;
pub mod probe;
pub mod session;
pub mod transport;
