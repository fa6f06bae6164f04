//! A real browser for tests: Debian's Chromium driven headless through ChromeDriver over
//! the W3C WebDriver protocol (JSON over HTTP). Both are found with [`crate::require`]
//! (packages `chromium` and `chromium-driver`); the driver is started on a free port, each
//! [`Browser`] gets a fresh profile, and both go when it is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{TempDir, free_port, wait_for_port};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: TempDir,
    http: ureq::Agent,
    /// Where [`Browser::screenshot`] writes.
    pub shots: PathBuf,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session; screenshots go to `shots`.
    pub fn start(shots: &Path) -> Browser {
        let chromium = crate::require("chromium", "chromium");
        let chromedriver = crate::require("chromedriver", "chromium-driver");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "chromedriver did not listen on 127.0.0.1:{port}"
        );
        let profile = TempDir::new("chromium-profile");
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        // The flags Chromium needs to start as root in a container with no network beyond
        // loopback (its background services would only fail to connect).
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut answer: Value = http
            .post(format!("{base}/session"))
            .send_json(&caps)
            .expect("chromedriver answers")
            .body_mut()
            .read_json()
            .expect("chromedriver's answer is JSON");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        answer.take();
        std::fs::create_dir_all(shots).expect("the screenshot folder");
        Browser {
            driver,
            base,
            session,
            _profile: profile,
            http,
            shots: shots.to_path_buf(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut r = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, b) => self
                .http
                .post(&url)
                .send_json(b.unwrap_or_else(|| json!({}))),
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = r.status();
        let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }

    /// Opens a URL.
    pub fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    /// The page's URL now.
    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's HTML now.
    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let mut r = self
            .http
            .post(&url)
            .send_json(json!({"using": "css selector", "value": css}))
            .expect("WebDriver find");
        let status = r.status();
        let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        if status.is_success() {
            return v["value"][ELEMENT].as_str().map(|s| Element(s.to_string()));
        }
        // "no such element" is an answer; anything else is the driver failing.
        assert_eq!(
            v["value"]["error"], "no such element",
            "WebDriver find {css}: {status} {v}"
        );
        None
    }

    /// The first element matching a CSS selector; panics naming it when there is none.
    pub fn el(&self, css: &str) -> Element {
        self.find(css)
            .unwrap_or_else(|| panic!("no element {css} on {}:\n{}", self.url(), self.source()))
    }

    /// Every element matching a CSS selector.
    pub fn all(&self, css: &str) -> Vec<Element> {
        self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_string())))
        .collect()
    }

    /// Types into an element (a file input takes a path).
    pub fn type_into(&self, e: &Element, text: &str) {
        self.call("POST", &format!("/element/{}/clear", e.0), None);
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        );
    }

    /// Sets a file input's file.
    pub fn attach(&self, e: &Element, file: &Path) {
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": file.display().to_string()})),
        );
    }

    /// Clicks an element.
    pub fn click(&self, e: &Element) {
        self.call("POST", &format!("/element/{}/click", e.0), None);
    }

    /// An element's visible text.
    pub fn text(&self, e: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// An element's attribute (or property).
    pub fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.call("GET", &format!("/element/{}/attribute/{name}", e.0), None)
            .as_str()
            .map(String::from)
    }

    /// Runs a script in the page and returns what it returns.
    pub fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    /// Waits until `check` says yes, or panics with `what` and the page after `limit`.
    pub fn wait_until(&self, what: &str, limit: Duration, mut check: impl FnMut(&Browser) -> bool) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "timed out waiting for {what} on {}:\n{}",
            self.url(),
            self.source()
        );
    }

    /// Saves a PNG of the window as `{name}.png` in [`Browser::shots`]; its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
