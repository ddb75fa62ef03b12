//! Pack layouts: which elements of which gradients each pack holds. A pack is the concatenation
//! of its pieces, and every device's gradients have the same sizes, so one [`Layout`] describes
//! the packs of every device. Packers only decide a layout; [`super::in_place`] reduces packs
//! through it without copying a gradient, and [`Layout::concat`] / [`Layout::scatter`] make and
//! undo concrete packs where a caller wants the packed tensors themselves (TensorFlow's `pack` and
//! `unpack`, and transports that need one flat tensor).

use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::kernels::copy::regroup;
use crate::kernels::output_vec;
use crate::tensor::{Buffer, Scalar, Tensor};

/// Elements `[offset, offset + len)` of gradient `tensor` (never empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The gradient's position in the list.
    pub tensor: usize,
    /// The gradient's first element in the piece.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl Piece {
    /// Whether the piece is its whole gradient (of `counts[tensor]` elements).
    pub fn whole(&self, counts: &[usize]) -> bool {
        self.offset == 0 && self.len == counts[self.tensor]
    }
}

/// The packs of a list of gradients, in order, each the concatenation of its pieces: every
/// element of every gradient lies in exactly one piece, and a gradient has at most one piece in
/// a pack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    packs: Vec<Vec<Piece>>,
    counts: Vec<usize>,
    /// For each gradient, a pack it belongs to (for an empty gradient, which has no piece: the
    /// pack it would be in, whose dtype it takes when packs are unpacked).
    home: Vec<usize>,
}

impl Layout {
    /// Each gradient its own pack (no packing); `counts` are the gradients' element counts.
    pub fn each(counts: &[usize]) -> Layout {
        Layout::groups(counts, &(0..counts.len()).map(|t| vec![t]).collect::<Vec<_>>())
    }

    /// A pack per group: the group's gradients whole, end to end, in the group's order. Every
    /// gradient must be in exactly one group.
    pub fn groups(counts: &[usize], groups: &[Vec<usize>]) -> Layout {
        let mut home = vec![usize::MAX; counts.len()];
        let packs = groups
            .iter()
            .enumerate()
            .map(|(p, group)| {
                group
                    .iter()
                    .filter_map(|&t| {
                        assert_eq!(home[t], usize::MAX, "gradient {t} is in two packs");
                        home[t] = p;
                        (counts[t] > 0).then_some(Piece { tensor: t, offset: 0, len: counts[t] })
                    })
                    .collect()
            })
            .collect();
        assert!(home.iter().all(|&p| p != usize::MAX), "every gradient is in a pack");
        Layout { packs, counts: counts.to_vec(), home }
    }

    /// The concatenation of all gradients, in order, cut into packs of `sizes` elements (which
    /// must sum to the total); a gradient across a cut has a piece in each pack.
    pub fn split(counts: &[usize], sizes: &[usize]) -> Layout {
        assert_eq!(counts.iter().sum::<usize>(), sizes.iter().sum::<usize>(), "packs hold every element");
        let mut packs: Vec<Vec<Piece>> = vec![Vec::new(); sizes.len()];
        let mut home = vec![0; counts.len()];
        let (mut p, mut filled) = (0, 0);
        for (t, &count) in counts.iter().enumerate() {
            // Past full packs: gradient `t` starts in the first pack with room (or the last).
            while p + 1 < sizes.len() && filled == sizes[p] {
                p += 1;
                filled = 0;
            }
            home[t] = p;
            let mut done = 0;
            while done < count {
                if filled == sizes[p] {
                    p += 1;
                    filled = 0;
                    continue;
                }
                let len = (count - done).min(sizes[p] - filled);
                packs[p].push(Piece { tensor: t, offset: done, len });
                done += len;
                filled += len;
            }
        }
        Layout { packs, counts: counts.to_vec(), home }
    }

    /// The packs' pieces, pack by pack.
    pub fn packs(&self) -> &[Vec<Piece>] {
        &self.packs
    }

    /// Elements of each gradient.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// Elements of pack `p`.
    pub fn pack_len(&self, p: usize) -> usize {
        self.packs[p].iter().map(|x| x.len).sum()
    }

    /// Checks that `grads` (one device's list) has the layout's element counts.
    fn check_counts(&self, counts: impl ExactSizeIterator<Item = usize>) -> Result<()> {
        let n = counts.len();
        if n != self.counts.len() || !counts.eq(self.counts.iter().copied()) {
            return fail(ErrorCode::ShapeMismatch, format!("these {n} gradients do not have the sizes the packs were made for: {:?}", self.counts));
        }
        Ok(())
    }

    /// One device's concrete packs: each pack's pieces copied end to end into a flat tensor
    /// (a pack's gradients must share a dtype; an empty pack takes the first gradient's).
    pub fn concat(&self, grads: &[Tensor]) -> Result<Vec<Tensor<'static>>> {
        self.check_counts(grads.iter().map(|g| g.num_elements()))?;
        let Some(first) = grads.first() else {
            return fail(ErrorCode::InvalidArgument, "nothing to pack");
        };
        self.packs
            .iter()
            .map(|pieces| {
                let dtype = pack_dtype(pieces, grads)?.unwrap_or(first.dtype());
                Tensor::new(vec![pieces.iter().map(|x| x.len).sum()], concat_pieces(pieces, grads, dtype))
            })
            .collect()
    }

    /// One device's gradients, shaped as `shapes`, from its concrete packs (what
    /// [`Self::concat`] made, or their reductions).
    pub fn scatter(&self, packs: &[Tensor], shapes: &[Vec<usize>]) -> Result<Vec<Tensor<'static>>> {
        self.check_counts(shapes.iter().map(|s| crate::tensor::num_elements(s)))?;
        if packs.len() != self.packs.len() || (0..packs.len()).any(|p| packs[p].num_elements() != self.pack_len(p)) {
            let want: Vec<usize> = (0..self.packs.len()).map(|p| self.pack_len(p)).collect();
            let got: Vec<usize> = packs.iter().map(|t| t.num_elements()).collect();
            return fail(ErrorCode::ShapeMismatch, format!("packs of {got:?} elements where {want:?} were made"));
        }
        let mut slots: Vec<Option<Buffer<'static>>> = vec![None; self.counts.len()];
        for (pieces, pack) in self.packs.iter().zip(packs) {
            scatter_pieces(pieces, &pack.data, &mut slots, &self.counts);
        }
        slots
            .into_iter()
            .zip(shapes)
            .enumerate()
            .map(|(t, (slot, shape))| Tensor::new(shape.clone(), slot.unwrap_or_else(|| Buffer::zeros(packs[self.home[t]].dtype(), 0))))
            .collect()
    }
}

/// The dtype shared by the gradients of `pieces` (`None` for an empty pack), or
/// `ERR_DTYPE_MISMATCH`.
pub(crate) fn pack_dtype(pieces: &[Piece], grads: &[Tensor]) -> Result<Option<DType>> {
    shared_dtype(pieces.iter().map(|x| grads[x.tensor].dtype()))
}

/// The one dtype of tensors to be packed together (`None` for none), or `ERR_DTYPE_MISMATCH`
/// (TensorFlow's message).
pub(crate) fn shared_dtype(mut dtypes: impl Iterator<Item = DType>) -> Result<Option<DType>> {
    let Some(first) = dtypes.next() else { return Ok(None) };
    if let Some(other) = dtypes.find(|&d| d != first) {
        return fail(ErrorCode::DtypeMismatch, format!("Cannot pack tensors of different dtypes: {} and {}", first.name(), other.name()));
    }
    Ok(Some(first))
}

/// The elements of `pieces` of `grads` (all of `dtype`), end to end in a new buffer.
pub(crate) fn concat_pieces(pieces: &[Piece], grads: &[Tensor], dtype: DType) -> Buffer<'static> {
    crate::for_dtype!(dtype, T => {
        let parts: Vec<&[T]> = pieces.iter().map(|x| &T::slice(&grads[x.tensor].data).expect("one dtype per pack")[x.offset..x.offset + x.len]).collect();
        let mut out: Vec<T> = output_vec(parts.iter().map(|p| p.len()).sum());
        regroup(&parts, &mut [out.as_mut_slice()]);
        T::owned(out)
    })
}

/// Copies `flat` (a pack of `pieces`) into the gradients' result slots, allocating a slot of
/// `counts[t]` elements where gradient `t` has none yet.
pub(crate) fn scatter_pieces(pieces: &[Piece], flat: &Buffer, slots: &mut [Option<Buffer<'static>>], counts: &[usize]) {
    crate::for_dtype!(flat.dtype(), T => {
        let tensors: Vec<usize> = pieces.iter().map(|x| x.tensor).collect();
        let mut outs: Vec<&mut [T]> = pick_mut(slots, &tensors)
            .into_iter()
            .zip(pieces)
            .map(|(slot, x)| &mut result_slice::<T>(slot, counts[x.tensor])[x.offset..x.offset + x.len])
            .collect();
        regroup(&[T::slice(flat).expect("the pack's dtype")], &mut outs);
    })
}

/// The elements of a result slot, allocated (to be written in full) with `count` elements if
/// empty.
pub(crate) fn result_slice<'s, T: Scalar>(slot: &'s mut Option<Buffer<'static>>, count: usize) -> &'s mut [T] {
    T::slice_mut(slot.get_or_insert_with(|| T::owned(output_vec(count)))).expect("one dtype per gradient")
}

/// Mutable references to the distinct elements `indices` of `items`, in the order of `indices`.
pub(crate) fn pick_mut<'a, X>(items: &'a mut [X], indices: &[usize]) -> Vec<&'a mut X> {
    let mut order: Vec<usize> = (0..indices.len()).collect();
    order.sort_unstable_by_key(|&i| indices[i]);
    let mut picked: Vec<Option<&'a mut X>> = (0..indices.len()).map(|_| None).collect();
    let (mut rest, mut base) = (items, 0);
    for i in order {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(indices[i].checked_sub(base).expect("distinct indices"));
        let (x, tail) = tail.split_first_mut().expect("indices in bounds");
        picked[i] = Some(x);
        rest = tail;
        base = indices[i] + 1;
    }
    picked.into_iter().map(|x| x.expect("picked")).collect()
}
