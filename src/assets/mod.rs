//! Asset storage: finished videos, thumbnails, spritesheets and the inputs clients uploaded, behind one set of
//! calls over two backings:
//!
//! - a local directory (the default): every write goes to a temporary name, is synced and renamed into place,
//!   so a crash never leaves a half-written asset under its final key;
//! - S3-compatible object storage through `object_store` ([`object`]): large writes go up as multipart uploads
//!   of bounded parts, reads stream ranged GETs, so memory stays bounded either way; an object appears under its
//!   key only when its upload completes.
//!
//! Work that needs a file on disk (probing a video, deriving previews) gets one from [`AssetStore::local_file`]:
//! the asset itself when local, a temporary copy otherwise.

pub mod object;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("invalid asset key {0:?}")]
    BadKey(String),
    #[error("asset {key}: {source}")]
    Io { key: String, source: io::Error },
    #[error("asset {key}: object storage: {message}")]
    Object {
        key: String,
        message: String,
        not_found: bool,
    },
}

impl AssetError {
    pub fn is_not_found(&self) -> bool {
        match self {
            AssetError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            AssetError::Object { not_found, .. } => *not_found,
            AssetError::BadKey(_) => false,
        }
    }

    /// The disk (or quota) under local storage is full: nothing is wrong with the asset or its source, and the
    /// same write succeeds once space is freed.
    pub fn is_storage_full(&self) -> bool {
        match self {
            AssetError::Io { source, .. } => is_storage_full(source),
            AssetError::Object { .. } | AssetError::BadKey(_) => false,
        }
    }
}

/// ENOSPC or EDQUOT.
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// A stream of an asset's bytes.
pub type ByteStream = futures_util::stream::BoxStream<'static, Result<Bytes, io::Error>>;

/// A file on local disk holding an asset; a temporary copy is removed when dropped.
pub struct LocalFile {
    pub path: PathBuf,
    temporary: bool,
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Size and digest of a stored asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
}

/// Keys are relative paths of safe characters: no empty, `.`, `..` or hidden-temporary segments.
pub fn check_key(key: &str) -> Result<(), AssetError> {
    let ok = !key.is_empty()
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.starts_with(".tmp"))
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AssetError::BadKey(key.to_owned()))
    }
}

/// Where assets are kept, as the config says (`[assets] kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetStorage {
    Local {
        dir: PathBuf,
    },
    S3 {
        settings: object::S3Settings,
        /// Local space for temporary copies and work files.
        scratch: PathBuf,
    },
}

/// Asset storage that cannot be opened at start-up (the directory, the bucket's settings, the scratch space).
#[derive(Debug, thiserror::Error)]
#[error("cannot open asset storage at {at}: {reason}")]
pub struct OpenError {
    at: String,
    reason: String,
}

#[derive(Clone)]
pub struct AssetStore {
    /// The local directory (all assets, or only scratch space and temporaries when `object` is set).
    root: PathBuf,
    object: Option<std::sync::Arc<object::ObjectAssets>>,
}

impl std::fmt::Debug for AssetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.object {
            None => write!(f, "AssetStore(local {})", self.root.display()),
            Some(o) => write!(f, "AssetStore({o:?})"),
        }
    }
}

impl AssetStore {
    /// Assets in a local directory.
    pub fn new(root: &Path) -> io::Result<AssetStore> {
        std::fs::create_dir_all(root.join(".tmp"))?;
        Ok(AssetStore {
            root: root.to_owned(),
            object: None,
        })
    }

    /// Assets in object storage; `scratch` is a local directory for temporary copies and work files.
    pub fn with_object_store(object: object::ObjectAssets, scratch: &Path) -> io::Result<AssetStore> {
        std::fs::create_dir_all(scratch.join(".tmp"))?;
        Ok(AssetStore {
            root: scratch.to_owned(),
            object: Some(std::sync::Arc::new(object)),
        })
    }

    /// The storage a config names.
    pub fn open(storage: &AssetStorage) -> Result<AssetStore, OpenError> {
        let failed = |at: &dyn std::fmt::Display, e: &dyn std::fmt::Display| OpenError {
            at: at.to_string(),
            reason: e.to_string(),
        };
        match storage {
            AssetStorage::Local { dir } => AssetStore::new(dir).map_err(|e| failed(&dir.display(), &e)),
            AssetStorage::S3 { settings, scratch } => {
                let object =
                    object::ObjectAssets::s3(settings).map_err(|e| failed(&format!("s3://{}", settings.bucket), &e))?;
                AssetStore::with_object_store(object, scratch).map_err(|e| failed(&scratch.display(), &e))
            }
        }
    }

    /// Where the assets are, for logs: a directory or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match &self.object {
            None => self.root.display().to_string(),
            Some(o) => o.describe(),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf, AssetError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn temp_path(&self) -> PathBuf {
        self.root.join(".tmp").join(crate::video::new_id("part"))
    }

    /// Stores `bytes` under `key` (one chunk of [`AssetStore::put_stream`]).
    pub async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<Stored, AssetError> {
        let chunk = Ok::<_, io::Error>(Bytes::copy_from_slice(bytes));
        self.put_stream(key, futures_util::stream::iter([chunk])).await
    }

    /// Copies the file at `src` into storage under `key`, hashing as it streams (constant memory).
    pub async fn put_file(&self, key: &str, src: &Path) -> Result<Stored, AssetError> {
        let input = File::open(src).await.map_err(|source| AssetError::Io {
            key: key.to_owned(),
            source,
        })?;
        self.put_stream(key, ReaderStream::with_capacity(input, 256 * 1024))
            .await
    }

    /// Stores a stream of chunks under `key` (a download, a copy), hashing as it goes; memory stays bounded by
    /// one chunk. If the stream fails, nothing is stored under `key`.
    pub async fn put_stream<S>(&self, key: &str, mut chunks: S) -> Result<Stored, AssetError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Unpin,
    {
        if let Some(o) = &self.object {
            check_key(key)?;
            let stored = o.put_stream(key, &mut chunks).await?;
            count_stored(stored.bytes);
            return Ok(stored);
        }
        let io_err = |source| AssetError::Io {
            key: key.to_owned(),
            source,
        };
        let dest = self.path(key)?;
        let tmp = self.temp_path();
        let result = async {
            let mut out = File::create(&tmp).await?;
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                out.write_all(&chunk).await?;
                total += chunk.len() as u64;
            }
            out.sync_all().await?;
            Ok(Stored {
                bytes: total,
                sha256: hex::encode(hasher.finalize()),
            })
        }
        .await;
        match result {
            Ok(stored) => {
                self.commit(key, &tmp, &dest).await?;
                count_stored(stored.bytes);
                Ok(stored)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp).await;
                Err(io_err(e))
            }
        }
    }

    async fn commit(&self, key: &str, tmp: &Path, dest: &Path) -> Result<(), AssetError> {
        let io_err = |source| AssetError::Io {
            key: key.to_owned(),
            source,
        };
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).await.map_err(io_err)?;
        }
        fs::rename(tmp, dest).await.map_err(io_err)
    }

    /// The size of an asset in bytes.
    pub async fn size(&self, key: &str) -> Result<u64, AssetError> {
        if let Some(o) = &self.object {
            check_key(key)?;
            return o.size(key).await;
        }
        fs::metadata(self.path(key)?)
            .await
            .map(|m| m.len())
            .map_err(|source| AssetError::Io {
                key: key.to_owned(),
                source,
            })
    }

    /// `count` bytes of an asset from `start`, as a stream of chunks (constant memory).
    pub async fn read_range(&self, key: &str, start: u64, count: u64) -> Result<ByteStream, AssetError> {
        if let Some(o) = &self.object {
            check_key(key)?;
            return o.read_range(key, start, count).await;
        }
        let io_err = |source| AssetError::Io {
            key: key.to_owned(),
            source,
        };
        let mut file = File::open(self.path(key)?).await.map_err(io_err)?;
        if start > 0 {
            file.seek(io::SeekFrom::Start(start)).await.map_err(io_err)?;
        }
        Ok(ReaderStream::with_capacity(file.take(count), 256 * 1024).boxed())
    }

    /// Reads a whole (small) asset, e.g. a reference image for a backend.
    pub async fn read(&self, key: &str) -> Result<Vec<u8>, AssetError> {
        if let Some(o) = &self.object {
            check_key(key)?;
            return o.read(key).await;
        }
        fs::read(self.path(key)?).await.map_err(|source| AssetError::Io {
            key: key.to_owned(),
            source,
        })
    }

    /// The asset as a file on local disk: itself when stored locally, else a temporary copy.
    pub async fn local_file(&self, key: &str) -> Result<LocalFile, AssetError> {
        let Some(_) = &self.object else {
            return Ok(LocalFile {
                path: self.path(key)?,
                temporary: false,
            });
        };
        let copy = LocalFile {
            path: self.temp_path(),
            temporary: true,
        };
        let io_err = |source| AssetError::Io {
            key: key.to_owned(),
            source,
        };
        let mut out = File::create(&copy.path).await.map_err(io_err)?;
        let size = self.size(key).await?;
        let mut chunks = self.read_range(key, 0, size).await?;
        while let Some(chunk) = chunks.next().await {
            out.write_all(&chunk.map_err(io_err)?).await.map_err(io_err)?;
        }
        out.flush().await.map_err(io_err)?;
        Ok(copy)
    }

    /// A local work directory for `name` (under the data directory; the caller removes it).
    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf, AssetError> {
        check_key(name)?;
        Ok(self.root.join(".tmp").join(format!("work-{}", name.replace('/', "-"))))
    }

    /// Removes one asset. Missing is fine.
    pub async fn delete(&self, key: &str) -> Result<(), AssetError> {
        if let Some(o) = &self.object {
            check_key(key)?;
            return o.delete(key).await;
        }
        match fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AssetError::Io {
                key: key.to_owned(),
                source,
            }),
        }
    }

    /// Removes every asset under `prefix/` (a job's or character's folder). Missing is fine.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), AssetError> {
        if let Some(o) = &self.object {
            check_key(prefix)?;
            return o.delete_prefix(prefix).await;
        }
        let dir = self.path(prefix)?;
        match fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AssetError::Io {
                key: prefix.to_owned(),
                source,
            }),
        }
    }

    /// Clears temporary files and work directories left by a crash mid-write.
    pub async fn sweep_temporaries(&self) -> io::Result<usize> {
        let mut n = 0;
        let mut entries = fs::read_dir(self.root.join(".tmp")).await?;
        while let Some(e) = entries.next_entry().await? {
            if e.file_type().await?.is_dir() {
                fs::remove_dir_all(e.path()).await?;
            } else {
                fs::remove_file(e.path()).await?;
            }
            n += 1;
        }
        Ok(n)
    }
}

/// `sora_shim_asset_bytes_stored_total`.
fn count_stored(bytes: u64) {
    if let Some(m) = crate::metrics::get() {
        m.asset_bytes_stored.inc_by(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = AssetStore::new(dir.path()).unwrap();
        let s = store.put_bytes("video_1/video.mp4", b"hello").await.unwrap();
        assert_eq!(s.bytes, 5);
        assert_eq!(s.sha256, hex::encode(Sha256::digest(b"hello")));
        let src = dir.path().join("src.bin");
        std::fs::write(&src, b"hello").unwrap();
        assert_eq!(store.put_file("video_1/copy.bin", &src).await.unwrap(), s);
        assert_eq!(store.read("video_1/copy.bin").await.unwrap(), b"hello");
        store.delete_prefix("video_1").await.unwrap();
        assert!(store.size("video_1/video.mp4").await.unwrap_err().is_not_found());
        store.delete_prefix("video_1").await.unwrap();
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = AssetStore::new(dir.path()).unwrap();
        for bad in ["", "../x", "a/../../x", "/etc/passwd", "a//b", ".tmp/x", "a b", "a\\b"] {
            assert!(store.path(bad).is_err(), "{bad}");
        }
        assert!(store.path("video_1/inputs/input_reference.png").is_ok());
    }
}
