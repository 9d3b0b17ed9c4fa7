//! The floor for the polling-read benchmark: a minimal hyper server that answers every request with the same
//! `VideoResource` JSON from memory (no routing, auth, store or cache). Whatever sora-shim costs above this is
//! the shim's own work. Run by `benches/run.sh` as `cargo bench --bench floor -- --port P`.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;

const BODY: &str = r#"{"id":"video_68d7512d07848190b3e45da0ecbebcde004da08e1e0678d5","object":"video","model":"sora-2","status":"completed","progress":100,"created_at":1758941485,"completed_at":1758941790,"expires_at":null,"prompt":"a red fox in snow","size":"1280x720","seconds":"4","remixed_from_video_id":null,"error":null}"#;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .map(|p| p.parse::<u16>().expect("--port takes a number"))
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                let mut resp = hyper::Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
                resp.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(resp)
            });
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
