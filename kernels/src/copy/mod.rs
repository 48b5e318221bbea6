//! Data movement: strided gathers (permute, broadcast, narrow) and strided scatters
//! (the backward of narrow, concat).

pub mod cuda;
pub mod reference;
