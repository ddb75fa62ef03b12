//! Grouping gradients by size: `split_grads_by_size` (multi-worker spec limits) and TF 2's
//! `group_by_size` (`bytes_per_pack`).

/// A device's share of gradients: the device's position, and indices into its list.
pub type Share = (usize, Vec<usize>);

/// `split_grads_by_size`: per device, gradients of at most `threshold` **elements** (TensorFlow
/// compares element counts despite its docs) go to `small`, the rest to `large`; a device's
/// share is kept only if non-empty. Takes each gradient's element count.
pub fn split_grads_by_size(threshold: usize, element_counts: &[Vec<usize>]) -> (Vec<Share>, Vec<Share>) {
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for (d, counts) in element_counts.iter().enumerate() {
        let (s, l): (Vec<usize>, Vec<usize>) = (0..counts.len()).partition(|&i| counts[i] <= threshold);
        if !s.is_empty() {
            small.push((d, s));
        }
        if !l.is_empty() {
            large.push((d, l));
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
