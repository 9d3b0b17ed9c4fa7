//! Outputs into our storage: an inline data URL decoded, or a download streamed in constant memory with a
//! timeout on every chunk (and the provider's credentials only where the mapping says its outputs need them).

use super::*;

impl MappedBackend {
    /// Copies one output (inline data URL, or a download) into asset storage.
    pub(super) async fn fetch_output(
        &self,
        output: &Output,
        assets: &AssetStore,
        key: &str,
    ) -> Result<Stored, BackendError> {
        let OutputLocation::Url { url, auth } = &output.location else {
            return Err(self.error(BackendErrorKind::Unavailable, "a mapped backend has only URL outputs"));
        };
        if let Some(inline) = url.strip_prefix("data:") {
            // Some providers (Vertex without an output bucket) return the video inline, base64-encoded.
            // A retry would decode the same text: the job fails (as a mapping error) rather than being retried.
            let not_base64 = || self.mapping_error("outputs: an inline data URL that is not base64".into());
            let (_, data) = inline.split_once(";base64,").ok_or_else(not_base64)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()
                .filter(|b| !b.is_empty())
                .ok_or_else(not_base64)?;
            let chunk = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
            return assets
                .put_stream(key, chunk)
                .await
                .map_err(|e| BackendError::storing(&self.name, &e, "store"));
        }
        let (headers, query) = if *auth { self.auth().await? } else { (vec![], vec![]) };
        let url = if query.is_empty() {
            url.clone()
        } else {
            self.url(url, &query)
        };
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let resp = self
            .http
            .download(&url, &headers, &self.trusted_hosts)
            .await
            .map_err(|e| self.error(BackendErrorKind::Unavailable, format!("download: {e}")))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            // Expired or refused: the poll will be asked again for fresh URLs.
            return Err(self.error(
                BackendErrorKind::Unavailable,
                format!("download answered HTTP {status}"),
            ));
        }
        // Per chunk, not for the whole body: a long video may take many timeouts to arrive.
        let chunk_timeout = self.http.timeout();
        let body = resp.into_body().into_data_stream();
        let stream = body.map(|r| r.map_err(std::io::Error::other));
        // A provider that stops sending mid-download must not hold the job forever.
        let stream = tokio_stream_timeout(stream, chunk_timeout);
        assets
            .put_stream(key, Box::pin(stream))
            .await
            .map_err(|e| BackendError::storing(&self.name, &e, "download"))
    }
}

/// Ends a stream with an error when no chunk arrives within `timeout`.
fn tokio_stream_timeout<S>(
    stream: S,
    timeout: Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
{
    futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut s = state?;
        match tokio::time::timeout(timeout, s.next()).await {
            Ok(Some(item)) => Some((item, Some(s))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "download stalled")),
                None,
            )),
        }
    })
}
