//! Asset storage: finished videos, thumbnails, spritesheets and the inputs clients uploaded. Local directory
//! now (object storage later, behind the same calls). Every write goes to a temporary name, is synced and
//! renamed into place, so a crash never leaves a half-written asset under its final key.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::fs::{self, File};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("invalid asset key {0:?}")]
    BadKey(String),
    #[error("asset {key}: {source}")]
    Io { key: String, source: io::Error },
}

impl AssetError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, AssetError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Size and digest of a stored asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct AssetStore {
    root: PathBuf,
}

impl AssetStore {
    pub fn new(root: &Path) -> io::Result<AssetStore> {
        std::fs::create_dir_all(root.join(".tmp"))?;
        Ok(AssetStore { root: root.to_owned() })
    }

    fn path(&self, key: &str) -> Result<PathBuf, AssetError> {
        let ok = !key.is_empty()
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != ".." && !part.starts_with(".tmp"))
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b));
        if ok {
            Ok(self.root.join(key))
        } else {
            Err(AssetError::BadKey(key.to_owned()))
        }
    }

    fn temp_path(&self) -> PathBuf {
        self.root.join(".tmp").join(crate::video::new_id("part"))
    }

    /// Stores `bytes` under `key`.
    pub async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<Stored, AssetError> {
        let io_err = |source| AssetError::Io {
            key: key.to_owned(),
            source,
        };
        let dest = self.path(key)?;
        let tmp = self.temp_path();
        let result = async {
            let mut f = File::create(&tmp).await?;
            f.write_all(bytes).await?;
            f.sync_all().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp).await;
            return Err(io_err(e));
        }
        self.commit(key, &tmp, &dest).await?;
        count_stored(bytes.len() as u64);
        Ok(Stored {
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        })
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

    /// Opens an asset for reading; returns the file and its length.
    pub async fn open(&self, key: &str) -> Result<(File, u64), AssetError> {
        let io_err = |source| AssetError::Io {
            key: key.to_owned(),
            source,
        };
        let file = File::open(self.path(key)?).await.map_err(io_err)?;
        let len = file.metadata().await.map_err(io_err)?.len();
        Ok((file, len))
    }

    /// Reads a whole (small) asset, e.g. a reference image for a backend.
    pub async fn read(&self, key: &str) -> Result<Vec<u8>, AssetError> {
        fs::read(self.path(key)?).await.map_err(|source| AssetError::Io {
            key: key.to_owned(),
            source,
        })
    }

    /// Local path of an asset, for backends that work on files.
    pub fn local_path(&self, key: &str) -> Result<PathBuf, AssetError> {
        self.path(key)
    }

    /// Removes every asset under `prefix/` (a job's or character's folder). Missing is fine.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), AssetError> {
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

    /// Clears temporary files left by a crash mid-write.
    pub async fn sweep_temporaries(&self) -> io::Result<usize> {
        let mut n = 0;
        let mut entries = fs::read_dir(self.root.join(".tmp")).await?;
        while let Some(e) = entries.next_entry().await? {
            fs::remove_file(e.path()).await?;
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
        assert!(store.open("video_1/video.mp4").await.unwrap_err().is_not_found());
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
