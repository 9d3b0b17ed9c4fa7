//! Finalize: a finished job's outputs are copied into our storage, the previews a backend did not give are
//! derived, and only then is the video `completed`. A copy that fails is retried from a fresh poll (provider URLs
//! expire); a disk that is full makes the job wait without using up its attempts.

use super::*;

impl Worker {
    /// Copies every output into our storage, derives the previews a backend did not give, and only then marks
    /// the job completed. A failed copy is retried from a fresh poll (provider URLs expire), a bounded number of
    /// times.
    pub(super) async fn finalize(
        &self,
        mut job: Job,
        outputs: Vec<Output>,
        backend: &dyn Backend,
    ) -> Result<Next, StoreError> {
        let mut assets = Vec::with_capacity(Variant::ALL.len());
        for output in outputs {
            let key = format!("{}/{}", job.id, output.variant.file_name());
            match backend.fetch(&output, &self.assets, &key).await {
                Ok(s) => assets.push(Asset {
                    variant: output.variant,
                    key,
                    bytes: s.bytes,
                    sha256: s.sha256,
                }),
                Err(e) => return self.finalize_failed(job, e).await,
            }
        }
        let Some(video) = assets.iter().find(|a| a.variant == Variant::Video).cloned() else {
            let error = JobError {
                code: "internal_error".into(),
                message: "The video backend finished without a video.".into(),
            };
            return Ok(self.fail(job, error).await);
        };
        match self.derive_missing_previews(&job, &video, &mut assets).await {
            Ok(produced) => job.produced = Some(produced),
            Err(DeriveError::StorageFull(message)) => {
                let e = crate::backends::BackendError::new(backend.name(), BackendErrorKind::StorageFull, message);
                return self.finalize_failed(job, e).await;
            }
            Err(DeriveError::Unreadable(message)) => {
                tracing::error!(job = %job.id, %message, "the finished video cannot be read");
                let error = JobError {
                    code: "internal_error".into(),
                    message: format!("The video backend produced a file that is not a playable MP4: {message}"),
                };
                return Ok(self.fail(job, error).await);
            }
        }
        job.assets = assets;
        job.state = State::Completed;
        job.progress = 100;
        let now = now_unix();
        job.completed_at = Some(now);
        // When the assets go, as Sora's `expires_at` said; the sweeper (src/retention.rs) deletes them then.
        job.expires_at = self
            .live
            .load()
            .retention_for(&job.tenant)
            .map(|r| now + r.as_secs() as i64);
        let job = self.save(job).await?;
        tracing::info!(job = %job.id, backend = backend.name(), "video completed");
        count_finished(&job, "completed");
        Ok(Next::Stop)
    }

    async fn finalize_failed(&self, mut job: Job, e: crate::backends::BackendError) -> Result<Next, StoreError> {
        if let BackendErrorKind::Rejected(error) = e.kind {
            return Ok(self.fail(job, error).await);
        }
        if let BackendErrorKind::StorageFull = e.kind {
            // Our disk, not the provider: the job keeps its attempts and waits in `finalizing` (the provider keeps
            // the output; a later poll fetches fresh URLs), and nothing half-written is kept.
            tracing::error!(job = %job.id, error = %e, "asset storage is full; the copy will be tried again");
            if let Some(m) = crate::metrics::get() {
                m.storage_full.with_label_values(&["finalize"]).inc();
            }
            job.next_attempt_at_ms = now_unix_ms() + self.config.retry_max.as_millis() as i64;
            self.save(job).await?;
            return Ok(Next::After(Duration::ZERO));
        }
        job.attempts += 1;
        if job.attempts > MAX_FINALIZE_ATTEMPTS {
            let error = JobError {
                code: "asset_download_failed".into(),
                message: format!(
                    "The finished video could not be copied from the video backend: {}",
                    e.message
                ),
            };
            return Ok(self.fail(job, error).await);
        }
        tracing::warn!(job = %job.id, error = %e, "cannot copy an output yet; will poll again");
        job.next_attempt_at_ms = now_unix_ms() + self.backoff(job.attempts, e.retry_after);
        self.save(job).await?;
        Ok(Next::After(Duration::ZERO))
    }

    /// A turn at the media work (probing, decoding frames for previews): CPU-bound, so no more run at once than
    /// there are cores. Unbounded, every job finishing at the same moment (up to `max_active_steps`) decoded at
    /// once on its own blocking thread, each with its decoder, frames and stack: 10,000 jobs finishing together
    /// peaked at 836 MiB.
    async fn media_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, DeriveError> {
        Arc::clone(&self.media)
            .acquire_owned()
            .await
            .map_err(|e| DeriveError::Unreadable(e.to_string()))
    }

    /// Reads the stored video (its real size and length) and writes a thumbnail and spritesheet if missing.
    async fn derive_missing_previews(
        &self,
        job: &Job,
        video: &Asset,
        assets: &mut Vec<Asset>,
    ) -> Result<Produced, DeriveError> {
        // Probing and preview derivation work on a file: the asset itself, or a temporary copy from object storage.
        let video_file = self
            .assets
            .local_file(&video.key)
            .await
            .map_err(DeriveError::from_asset)?;
        let video_path = video_file.path.clone();
        let missing: Vec<Variant> = [Variant::Thumbnail, Variant::Spritesheet]
            .into_iter()
            .filter(|v| !assets.iter().any(|a| a.variant == *v))
            .collect();
        let slot = self.media_slot().await?;
        if missing.is_empty() {
            let info = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                crate::media::probe_mp4_file(&video_path)
            })
            .await
            .map_err(|e| DeriveError::Unreadable(e.to_string()))?
            .ok_or_else(|| DeriveError::Unreadable("not an MP4 with a video track".to_owned()))?;
            return Ok(Produced {
                width: info.width,
                height: info.height,
                duration_ms: info.duration_ms,
            });
        }
        let work = self
            .assets
            .scratch_dir(&format!("{}/previews", job.id))
            .map_err(DeriveError::from_asset)?;
        tokio::fs::create_dir_all(&work).await.map_err(DeriveError::from_io)?;
        let dir = work.clone();
        let derived = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            crate::previews::derive_previews(&video_path, &dir)
        })
        .await
        .map_err(|e| DeriveError::Unreadable(e.to_string()))?;
        let info = match derived {
            Ok(info) => info,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&work).await;
                return Err(DeriveError::from_preview(e));
            }
        };
        for variant in missing {
            let key = format!("{}/{}", job.id, variant.file_name());
            let stored = self.assets.put_file(&key, &work.join(variant.file_name())).await;
            let stored = match stored {
                Ok(stored) => stored,
                Err(e) => {
                    let _ = tokio::fs::remove_dir_all(&work).await;
                    return Err(DeriveError::from_asset(e));
                }
            };
            assets.push(Asset {
                variant,
                key,
                bytes: stored.bytes,
                sha256: stored.sha256,
            });
        }
        let _ = tokio::fs::remove_dir_all(&work).await;
        Ok(Produced {
            width: info.width,
            height: info.height,
            duration_ms: info.duration_ms,
        })
    }
}

/// Why the previews of a stored video could not be made: our disk is full (try again later), or the video
/// itself cannot be read (the job fails).
enum DeriveError {
    StorageFull(String),
    Unreadable(String),
}

impl DeriveError {
    fn from_io(e: std::io::Error) -> DeriveError {
        if crate::assets::is_storage_full(&e) {
            DeriveError::StorageFull(e.to_string())
        } else {
            DeriveError::Unreadable(e.to_string())
        }
    }

    fn from_asset(e: crate::assets::AssetError) -> DeriveError {
        if e.is_storage_full() {
            DeriveError::StorageFull(e.to_string())
        } else {
            DeriveError::Unreadable(e.to_string())
        }
    }

    fn from_preview(e: crate::previews::PreviewError) -> DeriveError {
        match e {
            crate::previews::PreviewError::Io(e) => DeriveError::from_io(e),
            crate::previews::PreviewError::Image(image::ImageError::IoError(e)) => DeriveError::from_io(e),
            e => DeriveError::Unreadable(e.to_string()),
        }
    }
}
