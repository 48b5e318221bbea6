//! Construction, conversion and data access.

use gantry_core::{DType, Device, Rng, Shape, Tensor};
use ndarray::{ArrayD, IxDyn};

const CPU: Device = Device::Cpu;

#[test]
fn tensors_are_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tensor>();
    let t = Tensor::zeros([1000], DType::F32, CPU).unwrap();
    let c = t.clone();
    assert_eq!(t.id(), c.id(), "a clone is the same tensor");
    assert_eq!(t.handle_count(), 2);
}

#[test]
fn constructors_fill_as_asked() {
    let t = Tensor::full(2.5, [2, 3], DType::F64, CPU).unwrap();
    assert_eq!(t.dims(), &[2, 3]);
    assert_eq!(t.to_vec::<f64>().unwrap(), vec![2.5; 6]);
    assert_eq!(
        Tensor::ones([2], DType::F32, CPU)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![1.0, 1.0]
    );
    assert_eq!(
        Tensor::arange(4, DType::F32, CPU)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![0.0, 1.0, 2.0, 3.0]
    );
    let s = Tensor::scalar(7.0, DType::F32, CPU).unwrap();
    assert_eq!(s.rank(), 0);
    assert_eq!(s.to_scalar().unwrap(), 7.0);
    let v = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], [2, 2], CPU).unwrap();
    assert_eq!(v.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(format!("{}", v.shape()), "[2, 2]");
    assert_eq!(Shape::from([2, 3]).elem_count(), 6);
}

#[test]
fn random_tensors_are_seeded_and_have_the_asked_moments() {
    let a = Tensor::randn([10_000], 1.0, 2.0, DType::F32, CPU, &mut Rng::new(11)).unwrap();
    let b = Tensor::randn([10_000], 1.0, 2.0, DType::F32, CPU, &mut Rng::new(11)).unwrap();
    assert_eq!(
        a.to_vec::<f32>().unwrap(),
        b.to_vec::<f32>().unwrap(),
        "same seed, same tensor"
    );
    let v = a.to_f64_vec().unwrap();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    // Standard error of the mean is 0.02 here; 0.1 is five of them.
    assert!(
        (mean - 1.0).abs() < 0.1 && (std - 2.0).abs() < 0.1,
        "mean {mean} std {std}"
    );
    let u = Tensor::rand([1000], -3.0, -1.0, DType::F64, CPU, &mut Rng::new(1))
        .unwrap()
        .to_f64_vec()
        .unwrap();
    assert!(u.iter().all(|&x| (-3.0..-1.0).contains(&x)));
}

#[test]
fn ndarray_round_trip_respects_logical_order() {
    let a = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let t = Tensor::from(&a);
    assert_eq!(t.dims(), &[2, 3]);
    let back: ArrayD<f32> = (&t).try_into().unwrap();
    assert_eq!(back, a);
    // A transposed (non-contiguous) array is read in its logical order.
    let at = a.t().to_owned().into_dyn();
    let tt = Tensor::from_ndarray(&a.t().into_owned().into_dyn());
    assert_eq!(tt.dims(), &[3, 2]);
    assert_eq!(
        tt.to_vec::<f32>().unwrap(),
        vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
    assert_eq!(tt.to_ndarray::<f32>().unwrap(), at);
    assert!(tt.to_ndarray::<f64>().is_err());
}

#[test]
fn half_precision_storage_converts() {
    let t = Tensor::from_vec(vec![1.0f32, -2.5, 0.1], [3], CPU).unwrap();
    let h = t.to_dtype(DType::F16).unwrap();
    let b = t.to_dtype(DType::BF16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    assert_eq!(b.dtype(), DType::BF16);
    // 1 and -2.5 are exact in both; 0.1 rounds to the nearest representable value.
    assert_eq!(h.to_f64_vec().unwrap()[..2], [1.0, -2.5]);
    assert!((h.to_f64_vec().unwrap()[2] - 0.1).abs() < 1e-4);
    assert!((b.to_f64_vec().unwrap()[2] - 0.1).abs() < 1e-3);
    assert_eq!(
        h.to_vec::<half::f16>().unwrap()[1],
        half::f16::from_f32(-2.5)
    );
    let back = h.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(back[..2], [1.0, -2.5]);
}

/// Reflection padding against a naive index mirror, and its refusals.
#[test]
fn reflection_pad_mirrors_without_repeating_the_edge() {
    let mirror = |p: isize, n: usize| -> usize {
        let n = n as isize;
        (if p < 0 {
            -p
        } else if p >= n {
            2 * (n - 1) - p
        } else {
            p
        }) as usize
    };
    let (n, c, h, w) = (2, 3, 4, 5);
    let data: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
    let x = Tensor::from_vec(data.clone(), [n, c, h, w], Device::Cpu).unwrap();
    for pad in [[1, 1, 1, 1], [3, 0, 2, 1], [0, 4, 0, 3], [2, 2, 0, 0]] {
        let [l, r, t, b] = pad;
        let y = x.reflection_pad2d(pad).unwrap();
        let (oh, ow) = (h + t + b, w + l + r);
        assert_eq!(y.dims(), [n, c, oh, ow]);
        let got = y.to_vec::<f32>().unwrap();
        for plane in 0..n * c {
            for i in 0..oh {
                for j in 0..ow {
                    let (si, sj) = (
                        mirror(i as isize - t as isize, h),
                        mirror(j as isize - l as isize, w),
                    );
                    assert_eq!(
                        got[(plane * oh + i) * ow + j],
                        data[(plane * h + si) * w + sj],
                        "pad {pad:?} at plane {plane} ({i}, {j})"
                    );
                }
            }
        }
    }
    let e = x.reflection_pad2d([5, 0, 0, 0]).unwrap_err().to_string();
    assert!(
        e.contains("reflection_pad2d") && e.contains("[2, 3, 4, 5]"),
        "{e}"
    );
    let e = Tensor::zeros([3, 4], DType::F32, Device::Cpu)
        .unwrap()
        .reflection_pad2d([1, 1, 1, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("4-D"), "{e}");
}
