//! The seeded generator and shuffle buffer behind every shuffle of saepipe's data
//! layer (documents before tokenization, activation rows when reading). Written
//! out here, not taken from a crate, because the exact sequence is part of the
//! on-disk contract: docs/formats.md specifies it so other tools can reproduce it.

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (multiply-shift; the bias is below 2^-40 for any n < 2^24).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Fisher–Yates, from the last element down.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A bounded shuffle buffer: the first `capacity` items fill it; each later item
/// replaces a uniformly drawn slot, whose previous item is emitted; at the end the
/// remaining slots are Fisher–Yates shuffled and emitted in order.
pub struct ShuffleBuffer<T> {
    slots: Vec<T>,
    capacity: usize,
    rng: SplitMix64,
}

impl<T> ShuffleBuffer<T> {
    pub fn new(capacity: usize, rng: SplitMix64) -> ShuffleBuffer<T> {
        ShuffleBuffer { slots: Vec::with_capacity(capacity.min(1 << 16)), capacity: capacity.max(1), rng }
    }

    pub fn push(&mut self, item: T) -> Option<T> {
        if self.slots.len() < self.capacity {
            self.slots.push(item);
            None
        } else {
            let j = self.rng.below(self.capacity as u64) as usize;
            Some(std::mem::replace(&mut self.slots[j], item))
        }
    }

    pub fn drain(mut self) -> std::vec::IntoIter<T> {
        self.rng.shuffle(&mut self.slots);
        self.slots.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn buffer_emits_a_permutation() {
        let mut b = ShuffleBuffer::new(7, SplitMix64::new(3));
        let mut out: Vec<u32> = (0..100).filter_map(|i| b.push(i)).collect();
        out.extend(b.drain());
        assert_ne!(out, (0..100).collect::<Vec<_>>());
        out.sort();
        assert_eq!(out, (0..100).collect::<Vec<_>>());
    }
}
