//! A real headless Chromium driven through Debian's `chromedriver` over the W3C WebDriver
//! protocol (plain JSON over HTTP, spoken with reqwest): start one per test, navigate, find
//! elements by CSS, click, type, read text, run a script, take screenshots. The browser
//! and its driver are one process group, killed when the `Browser` is dropped.
//!
//! When `/usr/bin/chromedriver` or `/usr/bin/chromium` is missing the test fails with a
//! message to run `scripts/test.sh` (which installs them): never a silent skip.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::env::free_port;
use super::poll::eventually;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// W3C's name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a fresh headless Chromium session
    /// (`width` × `height` window).
    pub async fn start(width: u32, height: u32) -> Browser {
        for path in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: run scripts/test.sh (it installs Debian's chromium and \
                 chromium-driver for the browser tests)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let base = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), "chromedriver answers", || {
            let client = client.clone();
            let url = format!("{base}/status");
            async move {
                let r = client.get(url).send().await.map_err(|e| e.to_string())?;
                let v: Value = r.json().await.map_err(|e| e.to_string())?;
                match v["value"]["ready"].as_bool() {
                    Some(true) => Ok(()),
                    _ => Err(v.to_string()),
                }
            }
        })
        .await;
        let profile = tempfile::Builder::new()
            .prefix("crt-chromium-")
            .tempdir()
            .expect("profile dir");
        let args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ]);
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            }}
        });
        let resp: Value = client
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session answer");
        let id = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {resp}"))
            .to_string();
        Browser {
            driver,
            client,
            session: format!("{base}/session/{id}"),
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.expect("webdriver answers JSON");
        assert!(
            status.is_success(),
            "webdriver {method} {path}: {status}: {v}"
        );
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's HTML as the browser holds it.
    pub async fn source(&self) -> String {
        self.get("/source")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element matching `css`, if any.
    pub async fn try_find(&self, css: &str) -> Option<String> {
        let resp = self
            .client
            .post(format!("{}/element", self.session))
            .json(&json!({ "using": "css selector", "value": css }))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        v["value"][ELEMENT].as_str().map(str::to_string)
    }

    /// The element matching `css`; fails the test when there is none.
    pub async fn find(&self, css: &str) -> String {
        match self.try_find(css).await {
            Some(e) => e,
            None => panic!(
                "no element matches {css:?} on {}:\n{}",
                self.current_url().await,
                self.source().await
            ),
        }
    }

    /// Every element matching `css`.
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.post(&format!("/element/{e}/click"), json!({})).await;
    }

    /// Clicks `css` and waits until the page the click leads to has loaded (a form
    /// submission or a link: the old document must be gone).
    pub async fn click_and_wait(&self, css: &str) {
        self.execute("window.__crtOldPage = true;", json!([])).await;
        self.click(css).await;
        eventually(Duration::from_secs(15), "the next page to load", || async {
            let resp = self
                .client
                .post(format!("{}/execute/sync", self.session))
                .json(&json!({
                    "script": "return window.__crtOldPage === undefined && document.readyState === 'complete';",
                    "args": []
                }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let v: Value = resp.json().await.map_err(|e| e.to_string())?;
            match v["value"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(v.to_string()),
            }
        })
        .await;
    }

    /// Types `text` into the field matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.post(&format!("/element/{e}/clear"), json!({})).await;
        self.post(&format!("/element/{e}/value"), json!({ "text": text }))
            .await;
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.get(&format!("/element/{e}/text"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current value of a form field (`property` value).
    pub async fn value(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.get(&format!("/element/{e}/property/value"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its result.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Runs an asynchronous script: it calls `arguments[arguments.length - 1](result)`.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": args }))
            .await
    }

    /// Grants a permission (e.g. `clipboard-read`) to the current origin.
    pub async fn grant(&self, permission: &str) {
        self.post(
            "/permissions",
            json!({ "descriptor": { "name": permission }, "state": "granted" }),
        )
        .await;
    }

    /// Accepts `window.confirm` dialogs by replacing it for the current page.
    pub async fn auto_confirm(&self) {
        self.execute("window.confirm = function () { return true; };", json!([]))
            .await;
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("screenshot written");
    }

    /// Ends the browser session (the driver is killed on drop).
    pub async fn close(self) {
        let _ = self
            .client
            .delete(self.session.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver started the browser in its process group: end them together.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
