//! What became of each recipient: the delivery log now; bounces and the settling of
//! attempt results as delivery lands.

pub mod log;
