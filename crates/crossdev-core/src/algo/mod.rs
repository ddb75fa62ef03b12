//! All-reduce algorithms, each written once as a [`Plan`](crate::plan::Plan) builder (SPEC §1.3
//! and §2). Each algorithm appends its steps to a [`Builder`] from a given stage on, taking the
//! buffers to reduce and returning the buffers holding the results, so that algorithms compose
//! (the two-level ones run one algorithm per worker in the same stages).

pub mod hierarchical_copy;
pub mod recursive_hd;
pub mod reduce_to_one;
pub mod ring;
pub mod shuffle;
pub mod split;
pub mod two_level;

use crate::device::canonicalize;
use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::plan::{Builder, Chunk, Step};

/// What an algorithm leaves behind: one result buffer per source, and the next free stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Result buffers, in the order of the sources.
    pub outputs: Vec<usize>,
    /// The first stage after the algorithm's.
    pub next_stage: usize,
}

/// A builder over the distinct canonical `devices` (in first-seen order), with input `i` on
/// `devices[i]`; returns it with the input buffers.
pub fn start(algorithm: &str, devices: &[String], dtype: DType, elements: usize) -> Result<(Builder, Vec<usize>)> {
    let canonical = devices.iter().map(|d| canonicalize(d, None)).collect::<Result<Vec<_>>>()?;
    let mut distinct: Vec<String> = Vec::new();
    let inputs: Vec<usize> = canonical
        .iter()
        .map(|d| match distinct.iter().position(|x| x == d) {
            Some(i) => i,
            None => {
                distinct.push(d.clone());
                distinct.len() - 1
            }
        })
        .collect();
    let srcs = (0..inputs.len()).collect();
    Ok((Builder::new(algorithm, distinct, &inputs, dtype, elements), srcs))
}

/// The one-participant case: the result is a copy of the source (divided, for MEAN, if `last`).
pub fn single(b: &mut Builder, src: usize, stage: usize, last: bool) -> Placed {
    let len = b.elements();
    let out = b.buffer(b.device_of(src), len);
    b.push(stage, Step::Reduce { srcs: vec![Chunk::whole(src, len)], dst: Chunk::whole(out, len), last });
    Placed { outputs: vec![out], next_stage: stage + 1 }
}

/// `_padded_split`'s piece length: `len / pieces` when it divides, else `1 + len / pieces` (the
/// zero padding TensorFlow appends is never materialised: chunks are clipped to the data).
pub fn padded_piece(len: usize, pieces: usize) -> usize {
    if len % pieces == 0 {
        len / pieces
    } else {
        1 + len / pieces
    }
}

/// `_ragged_split`'s pieces as `[start, end)`: `len / pieces` each, the remainder to the last.
pub fn ragged_split(len: usize, pieces: usize) -> Vec<(usize, usize)> {
    let c = len / pieces;
    (0..pieces).map(|i| (i * c, if i + 1 == pieces { len } else { (i + 1) * c })).collect()
}

/// An `ERR_INVALID_ARGUMENT` result.
pub(crate) fn invalid<T>(message: impl Into<String>) -> Result<T> {
    fail(ErrorCode::InvalidArgument, message)
}
