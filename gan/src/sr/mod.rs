//! Super-resolution plumbing: the [`Image`] type, MATLAB-convention bicubic resizing
//! ([`imresize`]) and the SR training data ([`SrData`], [`SrLoader`]).

mod data;
mod image;
mod resize;

pub use self::image::Image;
pub use data::{image_files, SrData, SrLoader, SrPair, SrPairs};
pub use resize::{cubic, imresize, resize_to, Quantize};
