//! Reductions: sums over any set of axes and the maximum along one axis.

pub mod cpu;
pub mod cuda;
pub mod reference;

/// Shape of a reduction's output with the reduced axes kept as size 1.
pub fn reduced_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(d, &s)| if axes.contains(&d) { 1 } else { s })
        .collect()
}

/// Splits `shape` around `axis` into `(outer, len, inner)`: the element at `(o, i, j)` is at
/// `(o * len + i) * inner + j`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}
