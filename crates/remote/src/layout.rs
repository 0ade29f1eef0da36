//! Where things live inside a remote (see the crate docs).

use object_store::path::Path;
use saepipe_cache::Key;

/// The marker object's name and the layout version it records.
pub(crate) const MARKER: &str = "saepipe-remote.json";
pub(crate) const LAYOUT_VERSION: u32 = 1;

/// Object paths under a remote's prefix.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    prefix: Path,
}

impl Layout {
    pub(crate) fn new(prefix: Path) -> Layout {
        Layout { prefix }
    }

    fn child(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/') {
            p = p.join(part);
        }
        p
    }

    pub(crate) fn marker(&self) -> Path {
        self.child(MARKER)
    }

    /// `blobs/<first two hex>/<blake3>`: spread over 256 folders so listing and
    /// file-system remotes stay fast with millions of blobs.
    pub(crate) fn blob(&self, blake3: &str) -> Path {
        self.child(&format!("blobs/{}/{blake3}", &blake3[..2]))
    }

    pub(crate) fn blobs(&self) -> Path {
        self.child("blobs")
    }

    pub(crate) fn manifest(&self, key: &Key) -> Path {
        self.child(&format!("artifacts/{key}.json"))
    }

    pub(crate) fn artifacts(&self) -> Path {
        self.child("artifacts")
    }

    /// The key of a manifest object, if `path` is one.
    pub(crate) fn key_of_manifest(path: &Path) -> Option<Key> {
        let name = path.filename()?.strip_suffix(".json")?;
        name.parse().ok()
    }

    /// The blake3 of a blob object, if `path` is one.
    pub(crate) fn hash_of_blob(path: &Path) -> Option<String> {
        let name = path.filename()?;
        (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then(|| name.to_string())
    }
}

/// A blake3 as the manifest writes it: 64 lowercase hex characters.
pub(crate) fn is_blake3_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
