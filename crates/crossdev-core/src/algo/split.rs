//! TensorFlow's tensor splitting helpers of `all_reduce.py` (SPEC §2.1), on 1-D tensors:
//! `_padded_split`, `_ragged_split` and `_strip_padding`. The plans never materialise the
//! padding (their chunks are clipped to the data); these are for callers composing their own.

use super::{invalid, padded_piece, ragged_split};
use crate::error::Result;
use crate::map_buffer;
use crate::tensor::Tensor;

fn one_d<'a>(t: &'a Tensor, message: &str) -> Result<&'a Tensor<'a>> {
    if t.shape.len() != 1 {
        return invalid(message);
    }
    Ok(t)
}

/// `_padded_split`: `pieces` equal parts; when the length `L` is not divisible, the tensor is
/// zero-padded at the end to `pieces·(1 + L/pieces)` first. Returns the parts and the padding.
pub fn padded_split(t: &Tensor, pieces: usize) -> Result<(Vec<Tensor<'static>>, usize)> {
    let t = one_d(t, "input tensor must be 1D")?;
    if pieces == 0 {
        return invalid("pieces must be at least 1");
    }
    let len = t.num_elements();
    let piece = padded_piece(len, pieces);
    let parts = (0..pieces)
        .map(|i| {
            let (a, z) = ((i * piece).min(len), ((i + 1) * piece).min(len));
            let data = map_buffer!(&t.data, v => {
                let mut part = v[a..z].to_vec();
                part.resize(piece, bytemuck::Zeroable::zeroed());
                part
            });
            Tensor::new(vec![piece], data)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((parts, pieces * piece - len))
}

/// `_ragged_split`: `pieces` parts of `L/pieces` elements, the remainder going to the last.
pub fn ragged_split_tensor(t: &Tensor, pieces: usize) -> Result<Vec<Tensor<'static>>> {
    let t = one_d(t, "input tensor must be 1D")?;
    if pieces == 0 {
        return invalid("pieces must be at least 1");
    }
    ragged_split(t.num_elements(), pieces)
        .into_iter()
        .map(|(a, z)| Tensor::new(vec![z - a], map_buffer!(&t.data, v => v[a..z].to_vec())))
        .collect()
}

/// `_strip_padding`: each 1-D tensor without its last `pad_len` elements.
pub fn strip_padding(tensors: &[Tensor], pad_len: usize) -> Result<Vec<Tensor<'static>>> {
    if tensors.is_empty() {
        return invalid("tensors cannot be empty");
    }
    if tensors.iter().any(|t| t.shape.len() > 1) {
        return invalid("tensors must be 1D");
    }
    tensors
        .iter()
        .map(|t| {
            let len = t.num_elements();
            if len < pad_len {
                return invalid("pad_len longer than tensor");
            }
            Tensor::new(vec![len - pad_len], map_buffer!(&t.data, v => v[..len - pad_len].to_vec()))
        })
        .collect()
}
