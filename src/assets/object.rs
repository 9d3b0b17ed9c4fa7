//! Assets in S3-compatible object storage (AWS S3, MinIO, R2, Ceph …) through `object_store`.
//!
//! Writes of a stream go up as a multipart upload in parts of [`PART_BYTES`] (so a 2 GB video needs one part
//! of memory, not 2 GB) and the object exists under its key only once the upload completes; a failed write
//! aborts the upload. Reads are ranged GETs streamed through. Credentials come from the environment as the AWS
//! tools read them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …), never from the file.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{AssetError, ByteStream, Stored};

/// Part size of multipart uploads (S3's minimum is 5 MiB).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight at once: an upload holds at most this many parts (plus one filling) in memory.
const UPLOADS_IN_FLIGHT: usize = 2;

/// Where the assets go: `[assets] kind = "s3"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Prepended to every key (`sora-shim/` puts everything under that folder); may be empty.
    pub prefix: String,
    pub region: Option<String>,
    /// An S3-compatible server's URL (MinIO, R2 …); path-style requests. Without it, AWS itself.
    pub endpoint: Option<String>,
}

pub struct ObjectAssets {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    description: String,
}

impl std::fmt::Debug for ObjectAssets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

fn object_error(key: &str, e: object_store::Error) -> AssetError {
    AssetError::Object {
        key: key.to_owned(),
        not_found: matches!(e, object_store::Error::NotFound { .. }),
        message: e.to_string(),
    }
}

impl ObjectAssets {
    /// An S3 (or S3-compatible) bucket, with credentials from the environment.
    pub fn s3(settings: &S3Settings) -> Result<ObjectAssets, String> {
        Self::s3_with(object_store::aws::AmazonS3Builder::from_env(), settings)
    }

    /// As [`ObjectAssets::s3`], from a builder that already holds credentials (tests, embedding).
    pub fn s3_with(builder: object_store::aws::AmazonS3Builder, settings: &S3Settings) -> Result<ObjectAssets, String> {
        let mut builder = builder.with_bucket_name(&settings.bucket);
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| e.to_string())?;
        Ok(Self::new(
            Arc::new(store),
            &settings.prefix,
            format!("s3://{}/{}", settings.bucket, settings.prefix),
        ))
    }

    /// Any `object_store` backend (tests use the in-memory one).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, description: String) -> ObjectAssets {
        ObjectAssets {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            description,
        }
    }

    pub fn describe(&self) -> String {
        self.description.clone()
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    pub async fn put_stream<S>(&self, key: &str, chunks: &mut S) -> Result<Stored, AssetError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Unpin,
    {
        let io_err = |source| AssetError::Io {
            key: key.to_owned(),
            source,
        };
        let mut writer = BufWriter::with_capacity(Arc::clone(&self.store), self.path(key), PART_BYTES)
            .with_max_concurrency(UPLOADS_IN_FLIGHT);
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let written: Result<(), io::Error> = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                total += chunk.len() as u64;
                writer.write_all(&chunk).await?;
            }
            // Completes the multipart upload (or sends a single PUT for a small object).
            writer.shutdown().await
        }
        .await;
        if let Err(e) = written {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key, error = %abort, "could not abort a failed multipart upload");
            }
            return Err(io_err(e));
        }
        Ok(Stored {
            bytes: total,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    pub async fn size(&self, key: &str) -> Result<u64, AssetError> {
        let meta = self
            .store
            .head(&self.path(key))
            .await
            .map_err(|e| object_error(key, e))?;
        Ok(meta.size)
    }

    pub async fn read_range(&self, key: &str, start: u64, count: u64) -> Result<ByteStream, AssetError> {
        if count == 0 {
            return Ok(futures_util::stream::empty().boxed());
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..start + count)),
            ..GetOptions::default()
        };
        let got = self
            .store
            .get_opts(&self.path(key), options)
            .await
            .map_err(|e| object_error(key, e))?;
        Ok(got.into_stream().map_err(io::Error::other).boxed())
    }

    pub async fn read(&self, key: &str) -> Result<Vec<u8>, AssetError> {
        let got = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| object_error(key, e))?;
        Ok(got.bytes().await.map_err(|e| object_error(key, e))?.to_vec())
    }

    pub async fn delete(&self, key: &str) -> Result<(), AssetError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_error(key, e)),
        }
    }

    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), AssetError> {
        let under = self.path(prefix);
        let mut listed = self.store.list(Some(&under));
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| object_error(prefix, e))?;
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(object_error(prefix, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::AssetStore;

    /// The calls the shim makes, against object_store's in-memory backend (the S3 round trip itself is
    /// tested against a real S3-compatible server in tests/storage.rs).
    #[tokio::test]
    async fn put_read_ranges_and_delete_through_object_storage() {
        let scratch = tempfile::tempdir().unwrap();
        let memory = Arc::new(object_store::memory::InMemory::new());
        let object = ObjectAssets::new(Arc::clone(&memory) as Arc<dyn ObjectStore>, "pre/", "mem://".into());
        let store = AssetStore::with_object_store(object, scratch.path()).unwrap();
        let data: Vec<u8> = (0..(3 * PART_BYTES / 2)).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<Result<Bytes, io::Error>> =
            data.chunks(100_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let stored = store
            .put_stream("video_1/video.mp4", futures_util::stream::iter(chunks))
            .await
            .unwrap();
        assert_eq!(stored.bytes, data.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
        assert!(memory.head(&ObjectPath::from("pre/video_1/video.mp4")).await.is_ok());
        assert_eq!(store.size("video_1/video.mp4").await.unwrap(), data.len() as u64);
        let part: Vec<u8> = store
            .read_range("video_1/video.mp4", 10, 20)
            .await
            .unwrap()
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap();
        assert_eq!(part, data[10..30]);
        store.put_bytes("video_1/thumbnail.webp", b"webp").await.unwrap();
        let local = store.local_file("video_1/video.mp4").await.unwrap();
        assert_eq!(std::fs::read(&local.path).unwrap(), data);
        let path = local.path.clone();
        drop(local);
        assert!(!path.exists(), "the temporary copy is removed");
        store.delete_prefix("video_1").await.unwrap();
        assert!(store.size("video_1/video.mp4").await.unwrap_err().is_not_found());
        assert!(store.read("video_1/thumbnail.webp").await.unwrap_err().is_not_found());
    }
}
