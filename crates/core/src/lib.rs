//! The vocabulary every saepipe crate shares, kept in one leaf crate so each
//! fact has one source: the seeded generator behind every shuffle and init
//! ([`rng`]), did-you-mean suggestions ([`suggest`]), plain column tables
//! ([`table`]), the device operations a forward pass is written against
//! ([`compute`]) and the device work of a training step ([`train`]). It depends on nothing of saepipe.
#![warn(missing_docs)]

pub mod compute;
pub mod rng;
pub mod suggest;
pub mod table;
pub mod train;
