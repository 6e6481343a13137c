//! Headless Chromium driven through ChromeDriver's W3C WebDriver API (JSON over HTTP, so
//! reqwest is all it takes). `scripts/services.sh browser` installs both; a test fails, never
//! skips, when they are missing.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A ChromeDriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    _profile: std::path::PathBuf,
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
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let bytes = r.bytes().await.unwrap_or_default();
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::fs::create_dir_all(profile).unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
            client,
            _profile: profile.to_owned(),
        };
        let v = browser.call("POST", "/session", Some(caps)).await;
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let response = request.send().await.expect("chromedriver answers");
        let status = response.status();
        let bytes = response.bytes().await.expect("chromedriver answers");
        let v: Value = serde_json::from_slice(&bytes).expect("chromedriver answers JSON");
        if !status.is_success() {
            return Err(format!("{status} {}", v["value"]["message"]));
        }
        Ok(v["value"].clone())
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for the page to load.
    pub async fn open(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    /// The element matching a CSS selector (panics when there is none).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                &self.at("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    /// How many elements match a CSS selector.
    pub async fn count(&self, css: &str) -> usize {
        let v = self
            .call(
                "POST",
                &self.at("/elements"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v.as_array().map(Vec::len).unwrap_or(0)
    }

    /// The rendered text of the element matching `css` (found again if the page reloaded
    /// between finding and reading it).
    pub async fn text(&self, css: &str) -> String {
        let mut last = String::new();
        for _ in 0..20 {
            let found = self
                .try_call(
                    "POST",
                    &self.at("/element"),
                    Some(json!({ "using": "css selector", "value": css })),
                )
                .await;
            let read = match found {
                Ok(v) => {
                    let id = v[ELEMENT].as_str().unwrap_or("").to_owned();
                    self.try_call("GET", &self.at(&format!("/element/{id}/text")), None)
                        .await
                }
                Err(e) => Err(e),
            };
            match read {
                Ok(v) => return v.as_str().unwrap_or("").to_owned(),
                Err(e) => last = e,
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
        let id = self.find(css).await;
        self.call("POST", &self.at(&format!("/element/{id}/click")), None)
            .await;
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Saves a PNG screenshot of the viewport to `path`; returns its size in bytes.
    pub async fn screenshot(&self, path: &Path) -> usize {
        let v = self.call("GET", &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, &png).unwrap();
        png.len()
    }
}

impl Browser {
    /// Ends the session (Chromium closes) and stops the driver.
    pub async fn close(mut self) {
        let path = format!("/session/{}", self.session);
        self.client
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .ok();
        self.session.clear();
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
