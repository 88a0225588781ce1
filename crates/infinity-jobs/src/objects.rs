//! Media objects: the originals of uploads (private) and their variants
//! (public), stored under content-derived keys so a key never changes
//! meaning.

use std::io;
use std::path::PathBuf;

use async_trait::async_trait;

/// The version of the variant pipeline. A change to how variants are made
/// gets a new version, so old URLs keep their bytes.
pub const PIPELINE_VERSION: &str = "v1";

/// The variant sizes made for every upload: the longest side in pixels.
pub const VARIANT_SIZES: [u32; 3] = [1280, 640, 160];

/// Returns the key of an upload's original bytes.
pub fn original_key(digest: &str) -> String {
    format!("originals/{}/{digest}", &digest[..2])
}

/// Returns the key of one variant of an upload.
pub fn variant_key(digest: &str, size: u32) -> String {
    format!("media/{}/{digest}/{PIPELINE_VERSION}-{size}", &digest[..2])
}

/// Returns the public URL path of one variant.
pub fn variant_path(digest: &str, size: u32) -> String {
    format!("/media/{digest}/{PIPELINE_VERSION}-{size}")
}

/// An object store: a local folder now, an S3-compatible service later.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `bytes` under `key` atomically; storing the same key again
    /// replaces it whole.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()>;
    /// Returns the bytes under `key`, or `None`.
    async fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
}

/// Objects as files below one folder.
pub struct LocalFolder {
    root: PathBuf,
}

impl LocalFolder {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let safe = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
        if !safe {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid object key {key:?}"),
            ));
        }
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl ObjectStore for LocalFolder {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        let path = self.path(key)?;
        let folder = path.parent().expect("a key has a parent folder");
        tokio::fs::create_dir_all(folder).await?;
        // Write beside the target and rename, so a reader never sees half a
        // file and a crash leaves at worst a stray temporary file.
        let temporary = folder.join(format!(".{}.tmp", rand::random::<u64>()));
        tokio::fs::write(&temporary, &bytes).await?;
        let file = tokio::fs::File::open(&temporary).await?;
        file.sync_all().await?;
        tokio::fs::rename(&temporary, &path).await
    }

    async fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_then_get() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFolder::new(dir.path());
        let key = variant_key(&"ab".repeat(32), 640);
        store.put(&key, b"bytes".to_vec()).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().unwrap(), b"bytes");
        assert!(store.get("media/none").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFolder::new(dir.path().join("objects"));
        for key in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "",
            "a/./b",
            "a\\b",
        ] {
            assert!(store.put(key, vec![1]).await.is_err(), "{key:?} accepted");
            assert!(store.get(key).await.is_err(), "{key:?} accepted");
        }
    }

    #[test]
    fn keys_and_paths_carry_the_version() {
        let digest = "0f".repeat(32);
        assert_eq!(
            variant_path(&digest, 160),
            format!("/media/{digest}/v1-160")
        );
        assert_eq!(original_key(&digest), format!("originals/0f/{digest}"));
    }
}
