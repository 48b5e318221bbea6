//! Super-resolution plumbing: the [`Image`] type, MATLAB-convention bicubic resizing
//! ([`imresize`]) and the SR training data ([`SrData`], [`SrLoader`]).

mod image;
mod resize;

pub use self::image::Image;
pub use resize::{cubic, imresize, resize_to, Quantize};
