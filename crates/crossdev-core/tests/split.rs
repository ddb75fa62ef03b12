//! TensorFlow's split helpers (SPEC §2.1): `_padded_split`, `_ragged_split`, `_strip_padding`.

use crossdev_core::algo::split::{padded_split, ragged_split_tensor, strip_padding};
use crossdev_core::{Buffer, ErrorCode, Tensor};

fn t(values: &[f32], shape: Vec<usize>) -> Tensor<'static> {
    Tensor::new(shape, Buffer::F32(values.to_vec().into())).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    match &t.data {
        Buffer::F32(v) => v.to_vec(),
        _ => unreachable!(),
    }
}

#[test]
fn padded_split_pads_the_tail_to_equal_parts() {
    // (10, 4) → 4 parts of 3, pad 2; (5, 4) → 4×2, pad 3; (3, 5) → 5×1, pad 2; (15, 4) → 4×4, pad 1.
    for (len, pieces, part, pad) in [(10, 4, 3, 2), (5, 4, 2, 3), (3, 5, 1, 2), (15, 4, 4, 1), (8, 4, 2, 0)] {
        let x: Vec<f32> = (1..=len).map(|i| i as f32).collect();
        let (parts, pad_len) = padded_split(&t(&x, vec![len]), pieces).unwrap();
        assert_eq!((parts.len(), pad_len), (pieces, pad), "({len}, {pieces})");
        let joined: Vec<f32> = parts.iter().inspect(|p| assert_eq!(p.shape, vec![part])).flat_map(values).collect();
        let mut want = x.clone();
        want.resize(pieces * part, 0.0);
        assert_eq!(joined, want);
        let stripped: Vec<f32> = strip_padding(&[t(&joined, vec![joined.len()])], pad_len).unwrap().iter().flat_map(values).collect();
        assert_eq!(stripped, x);
    }
}

#[test]
fn ragged_split_gives_the_remainder_to_the_last_piece() {
    let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let parts = ragged_split_tensor(&t(&x, vec![10]), 3).unwrap();
    assert_eq!(parts.iter().map(|p| p.shape[0]).collect::<Vec<_>>(), vec![3, 3, 4]);
    assert_eq!(parts.iter().flat_map(values).collect::<Vec<_>>(), x);
    let short = ragged_split_tensor(&t(&[1.0, 2.0], vec![2]), 3).unwrap();
    assert_eq!(short.iter().map(|p| p.shape[0]).collect::<Vec<_>>(), vec![0, 0, 2]);
}

#[test]
fn split_helpers_give_tensorflows_errors() {
    let two_d = t(&[1.0, 2.0, 3.0, 4.0], vec![2, 2]);
    let message = |r: Result<_, crossdev_core::CrossDeviceError>| {
        let e = r.map(|_: ()| ()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        e.message
    };
    assert_eq!(message(padded_split(&two_d, 2).map(|_| ())), "input tensor must be 1D");
    assert_eq!(message(ragged_split_tensor(&two_d, 2).map(|_| ())), "input tensor must be 1D");
    assert_eq!(message(strip_padding(&[], 1).map(|_| ())), "tensors cannot be empty");
    assert_eq!(message(strip_padding(&[two_d.clone()], 1).map(|_| ())), "tensors must be 1D");
    assert_eq!(message(strip_padding(&[t(&[1.0], vec![1])], 2).map(|_| ())), "pad_len longer than tensor");
}

#[test]
fn regroup_is_a_concat_then_a_split_for_any_boundaries() {
    use crossdev_core::kernels::copy::regroup;
    // Part and output sizes with empty pieces, tiny ones, and ones across parallel chunks.
    let cases: [(&[usize], &[usize]); 5] = [
        (&[3, 0, 5, 1], &[2, 2, 0, 5]),
        (&[0, 0, 7], &[7]),
        (&[1 << 17, 5, (1 << 16) + 3], &[10, (1 << 17) + (1 << 16) - 2, 0]),
        (&[300_000], &[100_000, 100_000, 100_000]),
        (&[], &[]),
    ];
    for (parts, outs) in cases {
        let mut next = 0u32;
        let srcs: Vec<Vec<u32>> = parts.iter().map(|&n| (0..n).map(|_| { next += 1; next }).collect()).collect();
        let flat: Vec<u32> = srcs.concat();
        let mut got: Vec<Vec<u32>> = outs.iter().map(|&n| vec![0; n]).collect();
        regroup(&srcs.iter().map(|v| v.as_slice()).collect::<Vec<_>>(), &mut got.iter_mut().map(|v| v.as_mut_slice()).collect::<Vec<_>>());
        let mut at = 0;
        for (o, g) in got.iter().enumerate() {
            assert_eq!(g[..], flat[at..at + g.len()], "parts {parts:?} outs {outs:?}: output {o}");
            at += g.len();
        }
    }
}
