//! Sparse rows: the per-row selections of a batch (CSR) and their transpose
//! into per-latent lists.

/// Per-row sparse selection of a batch (CSR): row `r` holds the latents
/// `idx[ptr[r]..ptr[r + 1]]` (ascending within a row) with values `val[..]`.
#[derive(Default)]
pub(super) struct Csr {
    /// Row offsets, `[rows + 1]`, starting at 0.
    pub(super) ptr: Vec<usize>,
    /// Latent of each entry.
    pub(super) idx: Vec<u32>,
    /// Value of each entry (an activation or a pre-activation).
    pub(super) val: Vec<f32>,
}

impl Csr {
    /// No rows.
    pub(super) fn new() -> Self {
        Csr { ptr: vec![0], idx: Vec::new(), val: Vec::new() }
    }

    /// Closes the current row: the entries pushed since the last call form it.
    pub(super) fn push_row(&mut self) {
        self.ptr.push(self.idx.len());
    }

    /// Entry positions of row `r`.
    pub(super) fn row(&self, r: usize) -> std::ops::Range<usize> {
        self.ptr[r]..self.ptr[r + 1]
    }

    /// Rows `r0..r1` as a CSR of their own.
    pub(super) fn slice(&self, r0: usize, r1: usize) -> Csr {
        let (a, b) = (self.ptr[r0], self.ptr[r1]);
        Csr {
            ptr: self.ptr[r0..=r1].iter().map(|p| p - a).collect(),
            idx: self.idx[a..b].to_vec(),
            val: self.val[a..b].to_vec(),
        }
    }

    /// Appends the rows of `o`.
    pub(super) fn append(&mut self, o: Csr) {
        let base = self.idx.len();
        self.ptr.extend(o.ptr[1..].iter().map(|p| p + base));
        self.idx.extend(o.idx);
        self.val.extend(o.val);
    }
}

/// One (row, latent) entry in the per-latent lists of the sparse backward.
#[derive(Clone, Copy, Default)]
pub(super) struct Entry<T> {
    /// Row within the chunk.
    pub(super) row: u32,
    /// From the second selection (AuxK latents, or JumpReLU's inactive
    /// entries that still carry a gradient) rather than the active set.
    pub(super) ext: bool,
    /// The entry's CSR value.
    pub(super) val: f32,
    /// The architecture's backward terms of the entry.
    pub(super) term: T,
}

/// Transposes the entries of `act` and `ext` (with their terms, in the same
/// order) to per-latent lists by a counting sort that is stable in row
/// order, each row's active entries before its `ext` entries, so every
/// latent's gradient rows are accumulated by one task in a fixed order.
/// Returns the offsets `[d_sae + 1]` of each latent's list and the entries.
pub(super) fn by_latent<T: Copy + Default>(
    d_sae: usize,
    act: &Csr,
    t_act: &[T],
    ext: &Csr,
    t_ext: &[T],
) -> (Vec<usize>, Vec<Entry<T>>) {
    let mut counts = vec![0usize; d_sae + 1];
    for &j in act.idx.iter().chain(&ext.idx) {
        counts[j as usize + 1] += 1;
    }
    for j in 0..d_sae {
        counts[j + 1] += counts[j];
    }
    let mut fill = counts.clone();
    let mut list = vec![Entry::default(); act.idx.len() + ext.idx.len()];
    let rows = act.ptr.len() - 1;
    for r in 0..rows {
        for (c, ts, is_ext) in [(act, t_act, false), (ext, t_ext, true)] {
            for i in c.row(r) {
                let j = c.idx[i] as usize;
                list[fill[j]] = Entry { row: r as u32, ext: is_ext, val: c.val[i], term: ts[i] };
                fill[j] += 1;
            }
        }
    }
    (counts, list)
}
