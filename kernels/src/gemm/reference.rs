//! Reference matrix product: the textbook triple loop, accumulated in `f64`.

use super::GemmGeom;
use crate::Float;
use rayon::prelude::*;

/// `c[b] = op(a[b]) · op(b[b])` for every batch `b` (see [`GemmGeom`]).
pub fn matmul<T: Float>(a: &[T], b: &[T], c: &mut [T], g: &GemmGeom) {
    let (sa, sb, sc) = (g.m * g.k, g.k * g.n, g.m * g.n);
    assert_eq!(a.len(), g.batch * sa, "matmul: A length");
    assert_eq!(b.len(), g.batch * sb, "matmul: B length");
    assert_eq!(c.len(), g.batch * sc, "matmul: C length");
    if sc == 0 {
        return;
    }
    // One task per output row across all batches: rows are independent.
    c.par_chunks_mut(g.n.max(1))
        .enumerate()
        .for_each(|(row, c_row)| {
            let (bi, i) = (row / g.m, row % g.m);
            let (a, b) = (&a[bi * sa..(bi + 1) * sa], &b[bi * sb..(bi + 1) * sb]);
            for (j, out) in c_row.iter_mut().enumerate() {
                let mut acc = 0f64;
                for p in 0..g.k {
                    acc += a[g.a_index(i, p)].to_f64() * b[g.b_index(p, j)].to_f64();
                }
                *out = T::from_f64(acc);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_by_two_by_hand() {
        // [[1,2],[3,4]] · [[5,6],[7,8]] = [[19,22],[43,50]]
        let (a, b) = ([1.0f32, 2.0, 3.0, 4.0], [5.0f32, 6.0, 7.0, 8.0]);
        let mut c = [0.0; 4];
        matmul(&a, &b, &mut c, &GemmGeom::new(1, 2, 2, 2));
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        // Aᵀ · B with A stored transposed: stored [[1,3],[2,4]] is the same A.
        let at = [1.0f32, 3.0, 2.0, 4.0];
        let g = GemmGeom {
            trans_a: true,
            ..GemmGeom::new(1, 2, 2, 2)
        };
        matmul(&at, &b, &mut c, &g);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        // A · Bᵀ with B stored transposed.
        let bt = [5.0f32, 7.0, 6.0, 8.0];
        let g = GemmGeom {
            trans_b: true,
            ..GemmGeom::new(1, 2, 2, 2)
        };
        matmul(&a, &bt, &mut c, &g);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
    }

    #[test]
    fn batched_and_rectangular() {
        // batch 2 of (1x3)·(3x2)
        let a = [1.0f64, 2.0, 3.0, -1.0, 0.0, 1.0];
        let b = [
            1.0f64, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0,
        ];
        let mut c = [0.0; 4];
        matmul(&a, &b, &mut c, &GemmGeom::new(2, 1, 3, 2));
        assert_eq!(c, [4.0, 5.0, 0.0, 0.0]);
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let mut c = [7.0f32; 4];
        matmul::<f32>(&[], &[], &mut c, &GemmGeom::new(1, 2, 0, 2));
        assert_eq!(c, [0.0; 4]);
    }
}
