//! Headless Chromium driven through ChromeDriver with fantoccini (a maintained WebDriver
//! client). `scripts/services.sh browser` installs both; a test fails, never skips, when they
//! are missing.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A ChromeDriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    client: Option<Client>,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium (a fresh profile, no background traffic).
    pub async fn start(profile: &Path) -> Self {
        for exe in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(exe).exists(),
                "{exe} is missing: run `scripts/services.sh browser` (installs Debian's chromium and chromium-driver)"
            );
        }
        let port = super::free_addr().rsplit(':').next().unwrap().to_owned();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        std::fs::create_dir_all(profile).unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps);
        // ChromeDriver takes a moment to listen.
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            match builder.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no WebDriver session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Self {
            driver,
            client: Some(client),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Opens `url` and waits for the page to load.
    pub async fn open(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// How many elements match a CSS selector.
    pub async fn count(&self, css: &str) -> usize {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .map(|e| e.len())
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
    }

    /// The rendered text of the element matching `css` (found again if the page reloaded
    /// between finding and reading it).
    pub async fn text(&self, css: &str) -> String {
        let mut last = String::new();
        for _ in 0..20 {
            match self.client().find(Locator::Css(css)).await {
                Ok(element) => match element.text().await {
                    Ok(text) => return text,
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot read the text of {css}: {last}")
    }

    /// Waits (up to 10 s, as a page reloads after a form post) until the text of `css` is
    /// `want`.
    pub async fn wait_text(&self, css: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css).await;
            if text == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} reads {text:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let element = self
            .client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"));
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        self.client()
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Saves a PNG screenshot of the viewport to `path`; returns its size in bytes.
    pub async fn screenshot(&self, path: &Path) -> usize {
        let png = self.client().screenshot().await.expect("screenshot");
        assert_eq!(&png[..4], b"\x89PNG", "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, &png).unwrap();
        png.len()
    }

    /// Ends the session (Chromium closes) and stops the driver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            client.close().await.ok();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver leads its own process group, Chromium included: end them all.
        let group = format!("-{}", self.driver.id());
        Command::new("kill")
            .args(["-9", "--", &group])
            .status()
            .ok();
        self.driver.kill().ok();
        self.driver.wait().ok();
    }
}
