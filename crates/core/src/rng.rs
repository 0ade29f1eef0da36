//! The one pseudo-random generator of saepipe: SplitMix64 (Steele, Lea and
//! Flood 2014). Every shuffle (documents before tokenization, activation rows
//! when reading), every seeded initialisation and every synthetic test set
//! draws from it. Written out here rather than taken from a crate because the
//! exact sequence is part of the on-disk contract: docs/formats.md specifies it
//! so other tools (and the Python fixture scripts) reproduce it bit for bit.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function applied to `state + golden gamma`: one step
/// of the generator as a pure function, for counter-based streams.
#[inline]
pub fn mix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sequential SplitMix64 generator: outputs `mix64(s)`, `mix64(s + step)`,
/// `mix64(s + 2·step)`, … The standard generator steps by the golden gamma; a
/// counter stream ([`SplitMix64::counter`]) steps by one, so its `k`-th output
/// can also be computed on its own as `mix64(s + k)`.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
    step: u64,
}

impl SplitMix64 {
    /// The standard generator, whose first output is `mix64(seed)`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed, step: GOLDEN }
    }

    /// The counter stream `mix64(start)`, `mix64(start + 1)`, …
    pub fn counter(start: u64) -> SplitMix64 {
        SplitMix64 { state: start, step: 1 }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let z = mix64(self.state);
        self.state = self.state.wrapping_add(self.step);
        z
    }

    /// A number in `0..n` (multiply-shift; the bias is below 2^-40 for any n < 2^24).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box–Muller, cosine branch; two uniforms per draw).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
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
    /// An empty buffer of `capacity` slots (at least one) drawing from `rng`.
    pub fn new(capacity: usize, rng: SplitMix64) -> ShuffleBuffer<T> {
        ShuffleBuffer { slots: Vec::with_capacity(capacity.min(1 << 16)), capacity: capacity.max(1), rng }
    }

    /// Adds `item`; once the buffer is full, returns the item it displaced.
    pub fn push(&mut self, item: T) -> Option<T> {
        if self.slots.len() < self.capacity {
            self.slots.push(item);
            None
        } else {
            let j = self.rng.below(self.capacity as u64) as usize;
            Some(std::mem::replace(&mut self.slots[j], item))
        }
    }

    /// The remaining items, shuffled.
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
        assert_eq!(mix64(1234567), 6457827717110365317);
    }

    #[test]
    fn counter_stream_is_mix64_of_a_counter() {
        let mut r = SplitMix64::counter(u64::MAX - 1);
        assert_eq!([r.next_u64(), r.next_u64(), r.next_u64()], [mix64(u64::MAX - 1), mix64(u64::MAX), mix64(0)]);
    }

    #[test]
    fn conversions_reference_values() {
        let mut r = SplitMix64::new(1234567);
        let first = 6457827717110365317u64;
        assert_eq!(r.clone().uniform(), (first >> 11) as f64 / (1u64 << 53) as f64);
        assert_eq!(r.below(1000), ((first as u128 * 1000) >> 64) as u64);
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
