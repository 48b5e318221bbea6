//! Pixel shuffle and nearest-neighbour upsampling.

use super::check_float;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `[n, c, h·sh, w·sw]`, or `None` if that overflows.
    fn shape_after(&self, d: &[usize], [sh, sw]: [usize; 2]) -> Option<[usize; 4]> {
        let (h, w) = (d[2].checked_mul(sh)?, d[3].checked_mul(sw)?);
        crate::Shape::new([d[0], d[1], h, w])
            .checked_elem_count("")
            .ok()?;
        Some([d[0], d[1], h, w])
    }

    fn check_4d(&self, op: &'static str) -> Result<[usize; 4]> {
        match self.dims() {
            &[n, c, h, w] => Ok([n, c, h, w]),
            _ => Err(Error::shape(
                op,
                format!("input must be 4-D [n, c, h, w], got {}", self.shape()),
            )),
        }
    }

    /// Rearranges `[n, c·r², h, w]` into `[n, c, h·r, w·r]` (sub-pixel convolution upsampling).
    pub fn pixel_shuffle(&self, r: usize) -> Result<Tensor> {
        let [n, c, h, w] = self.check_4d("pixel_shuffle")?;
        if r.checked_mul(r).is_none_or(|r2| r2 == 0 || c % r2 != 0)
            || self.shape_after(&[1, 1, h, w], [r, r]).is_none()
        {
            return Err(Error::shape(
                "pixel_shuffle",
                format!(
                    "channels of {} are not divisible by the squared factor {r}², or the output is too large",
                    self.shape()
                ),
            ));
        }
        let dims = [n, c / (r * r), h, w];
        let y = self.storage().pixel_shuffle(dims, r, false)?;
        Ok(Tensor::from_op(
            y,
            [n, c / (r * r), h * r, w * r],
            "pixel_shuffle",
            &[self],
            move |ctx| Ok(vec![Some(ctx.grad.pixel_unshuffle(r)?)]),
        ))
    }

    /// The inverse of [`Tensor::pixel_shuffle`]: `[n, c, h·r, w·r]` → `[n, c·r², h, w]`.
    pub fn pixel_unshuffle(&self, r: usize) -> Result<Tensor> {
        let [n, c, hr, wr] = self.check_4d("pixel_unshuffle")?;
        let channels_out = r.checked_mul(r).and_then(|r2| c.checked_mul(r2));
        if r == 0 || hr % r != 0 || wr % r != 0 || channels_out.is_none() {
            return Err(Error::shape(
                "pixel_unshuffle",
                format!(
                    "height and width of {} are not divisible by {r}",
                    self.shape()
                ),
            ));
        }
        let dims = [n, c, hr / r, wr / r];
        let y = self.storage().pixel_shuffle(dims, r, true)?;
        Ok(Tensor::from_op(
            y,
            [n, c * r * r, hr / r, wr / r],
            "pixel_unshuffle",
            &[self],
            move |ctx| Ok(vec![Some(ctx.grad.pixel_shuffle(r)?)]),
        ))
    }

    /// Nearest-neighbour upsampling of `[n, c, h, w]` by integer factors `[sh, sw]`.
    pub fn upsample_nearest2d(&self, scale: [usize; 2]) -> Result<Tensor> {
        let [n, c, h, w] = self.check_4d("upsample_nearest2d")?;
        check_float("upsample_nearest2d", self)?;
        if scale.contains(&0) || self.shape_after(&[n, c, h, w], scale).is_none() {
            return Err(Error::invalid(
                "upsample_nearest2d",
                format!("scale factors {scale:?} must be positive"),
            ));
        }
        let dims = [n * c, h, w];
        let y = self.storage().upsample_nearest2d(dims, scale, false)?;
        Ok(Tensor::from_op(
            y,
            [n, c, h * scale[0], w * scale[1]],
            "upsample_nearest2d",
            &[self],
            move |ctx| {
                let x = &ctx.inputs[0];
                let dx = ctx.grad.storage().upsample_nearest2d(dims, scale, true)?;
                Ok(vec![Some(Tensor::from_storage(dx, x.shape().clone()))])
            },
        ))
    }
}
