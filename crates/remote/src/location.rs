//! Opening a remote from its URL, with credentials from each cloud's standard
//! environment variables and configuration files.

use crate::error::{RemoteError, Result, store_message};
use crate::layout::Layout;
use object_store::ObjectStore;
use object_store::ObjectStoreScheme;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use std::sync::Arc;
use url::Url;

/// A remote cache: an object store location plus the runtime that drives it.
/// All methods block the calling thread.
pub struct Remote {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) layout: Layout,
    display: String,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.display).finish()
    }
}

impl Remote {
    /// Opens the remote at `url`: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, `https://host/path` (read-only HTTP servers
    /// included), `file:///dir` or a plain directory path. Nothing is contacted
    /// yet; a missing `file://` directory is created.
    ///
    /// Credentials come from the environment as each cloud's own tools read it:
    /// `AWS_*` variables (with `AWS_ENDPOINT_URL` for S3-compatible servers) and
    /// otherwise the shared files `~/.aws/credentials` and `~/.aws/config`
    /// (`AWS_PROFILE`); `GOOGLE_*` variables and application default
    /// credentials; `AZURE_*` variables.
    pub fn open(url: &str) -> Result<Remote> {
        Remote::open_with_options(url, &[])
    }

    /// [`open`](Self::open) with store settings that take precedence over the
    /// environment, named as `object_store` names them for the URL's scheme
    /// (for S3: `endpoint`, `region`, `access_key_id`, `secret_access_key`,
    /// `allow_http`, ...). Unknown names are an error.
    pub fn open_with_options(url: &str, options: &[(&str, &str)]) -> Result<Remote> {
        let display = display_url(url);
        let cfg = |message: String| RemoteError::Config { remote: display.clone(), message };
        let parsed = if url.contains("://") {
            Url::parse(url).map_err(|e| cfg(format!("not a URL: {e}")))?
        } else {
            let abs = std::path::absolute(url).map_err(|e| cfg(e.to_string()))?;
            Url::from_file_path(&abs).map_err(|()| cfg("not an absolute path".into()))?
        };
        let unknown = |k: &str| cfg(format!("unknown remote setting `{k}`"));
        let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|e| cfg(e.to_string()))?;
        let built: object_store::Result<Arc<dyn ObjectStore>> = match scheme {
            ObjectStoreScheme::Local => {
                if let Some((k, _)) = options.first() {
                    return Err(unknown(k));
                }
                let dir = parsed.to_file_path().map_err(|()| cfg("not a local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| cfg(format!("creating {}: {e}", dir.display())))?;
                // The store is rooted at the directory, so the prefix is empty.
                return Remote::with_store(
                    Arc::new(
                        object_store::local::LocalFileSystem::new_with_prefix(&dir)
                            .map_err(|e| cfg(store_message(&e)))?,
                    ),
                    Path::default(),
                    display,
                );
            }
            ObjectStoreScheme::AmazonS3 => {
                let mut b = s3_builder(&parsed);
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(|_| unknown(k))?, *v);
                }
                if b.get_config_value(&AmazonS3ConfigKey::Endpoint).is_some_and(|e| e.starts_with("http://")) {
                    b = b.with_allow_http(true);
                }
                b.build().map(|s| Arc::new(s) as _)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(parsed.as_str());
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(|_| unknown(k))?, *v);
                }
                b.build().map(|s| Arc::new(s) as _)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(parsed.as_str());
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(|_| unknown(k))?, *v);
                }
                b.build().map(|s| Arc::new(s) as _)
            }
            ObjectStoreScheme::Http => {
                let mut b = object_store::http::HttpBuilder::new().with_url(&parsed[..url::Position::BeforePath]);
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(|_| unknown(k))?, *v);
                }
                b.build().map(|s| Arc::new(s) as _)
            }
            other => return Err(cfg(format!("{other:?} is not a supported remote"))),
        };
        let store = built.map_err(|e| cfg(store_message(&e)))?;
        Remote::with_store(store, prefix, display)
    }

    fn with_store(store: Arc<dyn ObjectStore>, prefix: Path, display: String) -> Result<Remote> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("saepipe-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Config {
                remote: display.clone(),
                message: format!("starting I/O runtime: {e}"),
            })?;
        Ok(Remote { store, layout: Layout::new(prefix), display, rt })
    }

    /// The remote as shown in messages: scheme, host and path only.
    pub fn display(&self) -> &str {
        &self.display
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub(crate) fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(f)
    }

    pub(crate) fn store_err(&self, action: &'static str, object: &Path, e: &object_store::Error) -> RemoteError {
        RemoteError::Store {
            remote: self.display.clone(),
            action,
            object: object.to_string(),
            message: store_message(e),
        }
    }
}

/// `scheme://host/path` of a URL, without user info, query or fragment.
pub(crate) fn display_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) if u.scheme() == "file" => u.path().to_string(),
        Ok(u) => {
            let host = u.host_str().unwrap_or_default();
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", u.scheme(), u.path().trim_end_matches('/'))
        }
        Err(_) => url.to_string(),
    }
}

/// S3 settings: `AWS_*` variables first, then the shared credentials and
/// config files for whatever they leave unset. (Plain `http://` endpoints, a
/// local S3-compatible server, are allowed by the caller because the user
/// named them.)
fn s3_builder(url: &Url) -> AmazonS3Builder {
    let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
    for (key, value) in aws_shared_files() {
        if b.get_config_value(&key).is_none() {
            b = b.with_config(key, value);
        }
    }
    b
}

/// Settings from `~/.aws/credentials` and `~/.aws/config` (or the files named by
/// `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`) for profile `AWS_PROFILE`
/// (default `default`), as the AWS CLI reads them.
fn aws_shared_files() -> Vec<(AmazonS3ConfigKey, String)> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let path_of = |var: &str, default: &str| {
        std::env::var_os(var).map(std::path::PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(default)))
    };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let mut out = Vec::new();
    let read = |p: Option<std::path::PathBuf>| p.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    let creds = ini_section(&read(path_of("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")), &profile);
    let config_section = if profile == "default" { profile.clone() } else { format!("profile {profile}") };
    let config = ini_section(&read(path_of("AWS_CONFIG_FILE", ".aws/config")), &config_section);
    for (name, key) in [
        ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
        ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
        ("aws_session_token", AmazonS3ConfigKey::Token),
    ] {
        if let Some(v) = creds.iter().find(|(k, _)| k == name) {
            out.push((key, v.1.clone()));
        }
    }
    for (name, key) in [("region", AmazonS3ConfigKey::Region), ("endpoint_url", AmazonS3ConfigKey::Endpoint)] {
        if let Some(v) = config.iter().find(|(k, _)| k == name) {
            out.push((key, v.1.clone()));
        }
    }
    out
}

/// The `key = value` pairs of section `[name]` of an INI file.
fn ini_section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == name;
        } else if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_drops_credentials_and_queries() {
        assert_eq!(display_url("s3://bucket/team/cache/"), "s3://bucket/team/cache");
        assert_eq!(display_url("https://user:secret@host:9000/b?sig=x#f"), "https://host:9000/b");
        assert_eq!(display_url("file:///srv/cache"), "/srv/cache");
    }

    #[test]
    fn ini_sections_are_read_like_the_aws_cli() {
        let text =
            "[default]\naws_access_key_id = A\n\n[profile lab]\n# c\nregion=eu-west-1\nEndpoint_URL = http://x\n";
        assert_eq!(ini_section(text, "default"), vec![("aws_access_key_id".into(), "A".into())]);
        assert_eq!(
            ini_section(text, "profile lab"),
            vec![("region".into(), "eu-west-1".into()), ("endpoint_url".into(), "http://x".into())]
        );
    }
}
