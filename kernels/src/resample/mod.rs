//! Resampling: sub-pixel shuffle (ESPCN / SRGAN upsampling) and nearest-neighbour upsampling.

pub mod reference;
