//! Conversions to and from `ndarray`, for people who bring their own data.

use crate::storage::CpuElem;
use crate::{Device, Error, Result, Tensor};
use ndarray::{ArrayD, IxDyn};

impl Tensor {
    /// A CPU constant with the array's shape and values (any memory layout).
    pub fn from_ndarray<T: CpuElem>(a: &ArrayD<T>) -> Tensor {
        let data: Vec<T> = a.iter().copied().collect();
        Tensor::from_vec(data, a.shape(), Device::Cpu).expect("an array's length matches its shape")
    }

    /// The values as an `ArrayD<T>`; the tensor's dtype must be `T`'s.
    pub fn to_ndarray<T: CpuElem>(&self) -> Result<ArrayD<T>> {
        ArrayD::from_shape_vec(IxDyn(self.dims()), self.to_vec::<T>()?)
            .map_err(|e| Error::shape("to_ndarray", e.to_string()))
    }
}

impl<T: CpuElem> From<&ArrayD<T>> for Tensor {
    fn from(a: &ArrayD<T>) -> Tensor {
        Tensor::from_ndarray(a)
    }
}

impl<T: CpuElem> From<ArrayD<T>> for Tensor {
    fn from(a: ArrayD<T>) -> Tensor {
        Tensor::from_ndarray(&a)
    }
}

impl<T: CpuElem> TryFrom<&Tensor> for ArrayD<T> {
    type Error = Error;
    fn try_from(t: &Tensor) -> Result<ArrayD<T>> {
        t.to_ndarray()
    }
}
