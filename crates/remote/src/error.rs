//! Errors of remote operations. Every message names the remote by its display
//! form (scheme, host and path; never user info, query strings or credentials).

use std::path::PathBuf;

/// What went wrong talking to a remote or moving an artifact.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The remote URL or its settings are unusable.
    #[error("remote `{remote}`: {message}")]
    Config {
        /// The remote, as displayed.
        remote: String,
        /// What is wrong with it.
        message: String,
    },
    /// The object store refused or failed a request.
    #[error("remote `{remote}`: {action} `{object}` failed: {message}")]
    Store {
        /// The remote, as displayed.
        remote: String,
        /// What was being done ("uploading", "reading", ...).
        action: &'static str,
        /// The object path inside the remote.
        object: String,
        /// The store's explanation (credentials removed).
        message: String,
    },
    /// The key has no artifact on the remote.
    #[error("remote `{remote}` has no artifact {key}")]
    Missing {
        /// The remote, as displayed.
        remote: String,
        /// The key, in hex.
        key: String,
    },
    /// Bytes did not hash to what the manifest says: a damaged remote object or
    /// a damaged local file. Never published, never uploaded.
    #[error("{where_}: `{file}` is damaged (blake3 {actual}, the manifest says {expected})")]
    Damaged {
        /// The remote or local cache holding the damaged bytes.
        where_: String,
        /// The file's path inside its artifact.
        file: String,
        /// The blake3 the manifest records.
        expected: String,
        /// The blake3 of the bytes found.
        actual: String,
    },
    /// The local cache failed.
    #[error(transparent)]
    Cache(#[from] saepipe_cache::CacheError),
    /// A local file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The local path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Result of remote operations.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn io(self, action: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, action: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| RemoteError::Io { action, path: path.to_path_buf(), source })
    }
}

/// An object store error as a message fit to show: the store's text, cut at the
/// first line, with anything that looks like a signed query string removed.
pub(crate) fn store_message(e: &object_store::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    redact_query(line)
}

/// Drops `?...` query strings from URLs inside a message: presigned or SAS URLs
/// carry credentials there.
pub(crate) fn redact_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_query = false;
    for c in s.chars() {
        if in_query {
            if c.is_whitespace() || c == '"' || c == '\'' || c == ')' {
                in_query = false;
                out.push(c);
            }
            continue;
        }
        if c == '?' && out.contains("://") {
            in_query = true;
            out.push_str("?…");
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_removed() {
        assert_eq!(
            redact_query("GET https://h/b/o?X-Amz-Signature=abc&sig=1 failed (403)"),
            "GET https://h/b/o?… failed (403)"
        );
        assert_eq!(redact_query("is it? yes"), "is it? yes");
    }
}
