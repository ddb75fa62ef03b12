//! Grouping gradients by size: `split_grads_by_size` (multi-worker spec limits) and TF 2's
//! `group_by_size` (`bytes_per_pack`).

use crate::tensor::Tensor;

/// `split_grads_by_size`: per device, gradients of at most `threshold` **elements** (TensorFlow
/// compares element counts despite its docs) go to `small`, the rest to `large`; a device's
/// list is kept only if non-empty. Each entry is the gradient's index in the device's list.
pub fn split_grads_by_size(threshold: usize, device_grads: &[Vec<Tensor>]) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for grads in device_grads {
        let (s, l): (Vec<usize>, Vec<usize>) = (0..grads.len()).partition(|&i| grads[i].num_elements() <= threshold);
        if !s.is_empty() {
            small.push(s);
        }
        if !l.is_empty() {
            large.push(l);
        }
    }
    (small, large)
}

/// `group_by_size`: consecutive indices of `sizes` (bytes) grouped so that a new group starts
/// once the current one holds more than `bytes_per_pack`; `0` means one group of everything.
pub fn group_by_size(sizes: &[usize], bytes_per_pack: usize) -> Vec<Vec<usize>> {
    if bytes_per_pack == 0 {
        return if sizes.is_empty() { Vec::new() } else { vec![(0..sizes.len()).collect()] };
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current = 0;
    for (i, &s) in sizes.iter().enumerate() {
        if groups.is_empty() || current > bytes_per_pack {
            groups.push(Vec::new());
            current = 0;
        }
        groups.last_mut().expect("pushed").push(i);
        current += s;
    }
    groups
}
