//! Resampling: sub-pixel shuffle (ESPCN / SRGAN upsampling) and nearest-neighbour upsampling.

pub mod cuda;
pub mod reference;
