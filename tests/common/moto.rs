//! moto in server mode: an S3-compatible server on loopback for the object-storage tests (`.ci/test` installs
//! it and sets SORA_SHIM_TEST_MOTO).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto's S3 on 127.0.0.1, killed on drop.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto, or explains how to get it. Under CI it must be there.
    pub fn start() -> Option<Moto> {
        let bin = std::env::var("SORA_SHIM_TEST_MOTO")
            .unwrap_or_else(|_| format!("{}/target/s3-venv/bin/moto_server", env!("CARGO_MANIFEST_DIR")));
        if !std::path::Path::new(&bin).exists() {
            assert!(
                std::env::var("CI").is_err(),
                "moto_server not found at {bin}: `bash .ci/test` installs it"
            );
            eprintln!("skipping: moto_server not found at {bin} (run `bash .ci/test` once to install it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Moto { child, url })
    }

    /// Creates a bucket (moto accepts unsigned requests).
    pub fn bucket(&self, name: &str) {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .arg(format!("{}/{name}", self.url))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status.stdout), "200");
    }

    /// Keys in a bucket (ListObjectsV2, read crudely from the XML).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let out = Command::new("curl")
            .arg("-s")
            .arg(format!("{}/{bucket}?list-type=2", self.url))
            .output()
            .unwrap();
        let xml = String::from_utf8_lossy(&out.stdout).into_owned();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next().map(str::to_owned))
            .collect()
    }
}
