//! The one error type of gantry-core.

use crate::{DType, Device};
use std::fmt;

/// Everything a tensor operation can refuse. Messages name the op and the shapes involved, e.g.
/// `conv2d: input has 3 channels but weight expects 4 (input [8, 3, 64, 64], weight [64, 4, 4, 4])`.
#[derive(Debug)]
pub enum Error {
    /// Shapes that do not fit the op.
    Shape { op: &'static str, msg: String },
    /// An element type the op does not support, or operands of different types.
    DType { op: &'static str, msg: String },
    /// A device that is not available, or operands on different devices.
    Device { op: &'static str, msg: String },
    /// Any other invalid argument (a negative stride, an out-of-range axis, …).
    Invalid { op: &'static str, msg: String },
    /// Reading or writing a file.
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
    pub fn dtype(op: &'static str, msg: impl Into<String>) -> Self {
        Error::DType {
            op,
            msg: msg.into(),
        }
    }
    pub fn device(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Device {
            op,
            msg: msg.into(),
        }
    }
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            msg: msg.into(),
        }
    }
    pub(crate) fn unsupported_dtype(op: &'static str, dtype: DType) -> Self {
        Error::dtype(op, format!("not implemented for dtype {dtype}"))
    }
    pub(crate) fn dtype_mismatch(op: &'static str, a: DType, b: DType) -> Self {
        Error::dtype(op, format!("operands have different dtypes ({a} and {b})"))
    }
    pub(crate) fn device_mismatch(op: &'static str, a: Device, b: Device) -> Self {
        Error::device(
            op,
            format!("operands are on different devices ({a} and {b})"),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, msg }
            | Error::DType { op, msg }
            | Error::Device { op, msg }
            | Error::Invalid { op, msg } => write!(f, "{op}: {msg}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
