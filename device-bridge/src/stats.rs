//! Latency statistics shared by the host, the handset and every benchmark:
//! one definition of a percentile, so figures from different crates compare.

/// The `p` quantile (`p` in 0..=1, clamped) of `sorted` (ascending): the
/// sample at rank `round((n - 1) * p)`, so `p = 0` is the minimum, `p = 1`
/// the maximum and `p = 0.5` the median of an odd count. `None` when empty.
///
/// ```
/// use device_bridge::stats::quantile;
/// let v = [1, 2, 3, 4, 100];
/// assert_eq!(quantile(&v, 0.5), Some(3));
/// assert_eq!(quantile(&v, 0.99), Some(100));
/// assert_eq!(quantile::<u64>(&[], 0.5), None);
/// ```
#[must_use]
pub fn quantile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    // A rank in 0..=last as f64 is exact; the cast cannot overflow.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = (last as f64 * p.clamp(0.0, 1.0)).round() as usize;
    sorted.get(i.min(last)).copied()
}

/// Sorts `v` (any order of `f64`s, NaN last) and returns its `p` quantile.
#[must_use]
pub fn quantile_f64(v: &mut [f64], p: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    quantile(v, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_rounded_and_clamped() {
        let v: Vec<u32> = (0..=100).collect();
        assert_eq!(quantile(&v, 0.0), Some(0));
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&v, 7.0), Some(100));
        assert_eq!(quantile(&v, -1.0), Some(0));
        assert_eq!(quantile(&v, f64::NAN), Some(0));
        assert_eq!(quantile(&[9u8], 0.99), Some(9));
    }

    #[test]
    fn floats_are_sorted_first() {
        let mut v = vec![3.0, 1.0, 2.0];
        assert_eq!(quantile_f64(&mut v, 0.5), Some(2.0));
        assert_eq!(quantile_f64(&mut [], 0.5), None);
    }
}
