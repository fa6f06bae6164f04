//! The web console in a real browser (headless Chromium through ChromeDriver): the demo's
//! root URL is the console; a wrong password is refused; the buyer logs in, sees the demo
//! fleet, opens a device's power chart, submits a job with an input file through the form,
//! watches it finish live, and downloads its proof bundle, which the attest tool verifies
//! offline; the operator cannot see the buyer's job. Every page is checked for form controls
//! without a label, and read once without JavaScript. Screenshots go to
//! `target/console-screenshots/` (the test's artefacts).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hil_tests::browser::Browser;
use hil_tests::{TempDir, workspace_binary};

const DEMO: &str = env!("CARGO_BIN_EXE_heliostat-demo");

/// The running demo, stopped on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the demo printed at start: the console's address, the logins, the controller key.
struct Started {
    url: String,
    logins: Vec<(String, String)>,
    key: String,
}

fn start_demo(dir: &std::path::Path) -> (Demo, Started) {
    let mut child = Command::new(DEMO)
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--port",
            "0",
            "--api-port",
            "0",
        ])
        .args(["--agents", "3", "--record-ms", "1000", "--epoch-ms", "3000"])
        .args(["--jobs-every-s", "0", "--run-for-s", "600"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the demo");
    let out = BufReader::new(child.stdout.take().unwrap());
    let demo = Demo(child);
    let mut started = Started {
        url: String::new(),
        logins: Vec::new(),
        key: String::new(),
    };
    let mut seen = Vec::new();
    let mut lines = out.lines();
    for line in lines.by_ref() {
        let line = line.expect("the demo's output");
        let t = line.trim();
        if let Some(u) = t.strip_prefix("web console") {
            started.url = u.trim().trim_end_matches('/').to_string();
        } else if let Some(l) = t.strip_prefix("console login") {
            let (n, p) = l.trim().split_once(" / ").expect("name / password");
            started.logins.push((n.to_string(), p.to_string()));
        } else if let Some(k) = t.strip_prefix("controller public key") {
            started.key = k.trim().to_string();
        }
        seen.push(line.clone());
        if t.starts_with("(Ctrl-C stops it") {
            break;
        }
    }
    // The demo prints a status line every 10 s: keep reading, or it dies of a broken pipe.
    std::thread::spawn(move || lines.for_each(drop));
    assert!(
        started.url.starts_with("http://127.0.0.1:")
            && started.logins.len() == 2
            && started.key.len() == 64,
        "the demo did not print its console, logins and key:\n{}",
        seen.join("\n")
    );
    (demo, started)
}

fn shots_dir() -> PathBuf {
    // `target/console-screenshots`, beside the test binaries.
    let exe = PathBuf::from(DEMO);
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("console-screenshots")
}

fn log_in(b: &Browser, url: &str, name: &str, password: &str) {
    b.go(&format!("{url}/login"));
    b.type_into(&b.el("#name"), name);
    b.type_into(&b.el("#password"), password);
    b.click(&b.el("main.login button[type=submit]"));
}

/// Form controls with no label (a `<label for>` or an `aria-label`) on the page.
fn unlabelled(b: &Browser) -> Vec<String> {
    b.script(
        "return [...document.querySelectorAll('input:not([type=hidden]),select,textarea')]\
         .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))\
         .map(e => e.outerHTML);",
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
    .iter()
    .map(|v| v.to_string())
    .collect()
}

#[test]
fn the_console_in_a_real_browser_logs_in_shows_the_fleet_runs_a_job_and_proves_it() {
    let tmp = TempDir::new("console-browser");
    let (_demo, s) = start_demo(tmp.path());
    let (buyer, buyer_pw) = s
        .logins
        .iter()
        .find(|l| l.0 == "demo-buyer")
        .cloned()
        .unwrap();
    let (operator, operator_pw) = s
        .logins
        .iter()
        .find(|l| l.0 == "demo-operator")
        .cloned()
        .unwrap();
    let b = Browser::start(&shots_dir());

    // The root URL is the console, behind its login.
    b.go(&format!("{}/", s.url));
    assert!(b.url().contains("/login?next=/"), "{}", b.url());
    assert!(
        unlabelled(&b).is_empty(),
        "unlabelled: {:?}",
        unlabelled(&b)
    );
    b.screenshot("01-login");

    // A wrong password is refused, and says so.
    log_in(&b, &s.url, &buyer, "not the password at all");
    b.wait_until("the refusal", Duration::from_secs(10), |b| {
        b.find("p.error").is_some()
    });
    assert!(b.url().ends_with("/login"), "{}", b.url());
    assert_eq!(b.text(&b.el("p.error")), "Wrong account name or password.");
    assert!(b.find("table.fleet").is_none());

    // The buyer logs in and sees the demo's fleet, all three devices, live.
    log_in(&b, &s.url, &buyer, &buyer_pw);
    b.wait_until("the fleet table", Duration::from_secs(10), |b| {
        b.find("table.fleet").is_some()
    });
    assert_eq!(b.text(&b.el("#who")), "demo-buyer (buyer)");
    b.wait_until("three devices, online", Duration::from_secs(30), |b| {
        b.all("table.fleet tbody tr").len() == 3 && b.all("td.online").len() == 3
    });
    assert!(
        unlabelled(&b).is_empty(),
        "unlabelled: {:?}",
        unlabelled(&b)
    );
    b.screenshot("02-fleet");

    // A device's page draws its power chart from its signed records.
    let first = b.el("table.fleet tbody tr td a");
    let device = b.text(&first);
    assert!(device.starts_with("hs-"), "{device}");
    b.click(&first);
    b.wait_until("the power chart", Duration::from_secs(30), |b| {
        if b.find("svg.chart path.line").is_some() {
            return true;
        }
        b.go(&b.url());
        false
    });
    assert!(
        b.url().ends_with(&format!("/devices/{device}")),
        "{}",
        b.url()
    );
    let chart = b.el("svg.chart");
    assert!(
        b.text(&b.el("svg.chart title"))
            .contains("Power by channel")
            || b.attr(&chart, "aria-labelledby").is_some()
    );
    assert!(b.all("svg.chart path.s-load").len() == 1, "no load line");
    assert!(
        unlabelled(&b).is_empty(),
        "unlabelled: {:?}",
        unlabelled(&b)
    );
    // The power flow now: sun, battery and grid into the load, in watts.
    let load = b.text(&b.el("figure.flow [data-flow-leg=load]"));
    assert!(
        load.ends_with(" W")
            && load
                .trim_end_matches(" W")
                .parse::<f64>()
                .is_ok_and(|w| w > 0.0),
        "{load}"
    );
    b.screenshot("03-device");

    // A job through the form, with an input file: 100 items of 64 bytes.
    let input = tmp.path().join("items.bin");
    std::fs::write(
        &input,
        (0..6400u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    b.go(&format!("{}/jobs", s.url));
    assert!(
        unlabelled(&b).is_empty(),
        "unlabelled: {:?}",
        unlabelled(&b)
    );
    // Its price and carbon first, at each online offer.
    b.click(&b.el("section.estimate button[type=submit]"));
    b.wait_until("the estimate", Duration::from_secs(10), |b| {
        b.find("#estimate").is_some()
    });
    let rows = b.all("#estimate tbody tr");
    assert_eq!(rows.len(), 3, "an estimate at each of the demo's rigs");
    assert!(b.text(&rows[0]).contains(" g"), "{}", b.text(&rows[0]));
    assert!(
        unlabelled(&b).is_empty(),
        "unlabelled: {:?}",
        unlabelled(&b)
    );
    b.type_into(&b.el("#params"), "count=100 item_len=64");
    b.attach(&b.el("#input"), &input);
    b.type_into(&b.el("#deadline_h"), "2");
    b.click(&b.el("section.submit button[type=submit]"));
    b.wait_until("the job's page", Duration::from_secs(15), |b| {
        b.find("#job-facts").is_some()
    });
    let job = b.url().rsplit('/').next().unwrap().to_string();
    assert_eq!(job.len(), 32, "{}", b.url());
    b.screenshot("04-job-submitted");

    // It finishes while the page watches (server-sent events; the page reloads at the end).
    b.wait_until("the job to be done", Duration::from_secs(180), |b| {
        b.find("[data-col=state]")
            .is_some_and(|e| b.text(&e) == "done")
            && b.find("#carbon-h").is_some()
    });
    let events: Vec<String> = b
        .all("#job-events li .state")
        .iter()
        .map(|e| b.text(e))
        .collect();
    assert_eq!(
        events,
        ["queued", "scheduled", "running", "validating", "done"]
    );
    assert!(
        b.text(&b.el("dl.facts")).contains("chunks") || b.find("a[href*='/outputs/0']").is_some()
    );
    b.screenshot("05-job-done");

    // Its output downloads, and its proof verifies offline against the controller's key.
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let proof = format!(
        "{}{}",
        s.url,
        b.attr(&b.el("a[href*='/bundle']"), "href")
            .expect("a proof link")
    );
    let bundle = tmp.path().join("job.bundle.json");
    let mut fetched = false;
    for _ in 0..60 {
        let mut r = http.get(&proof).call().unwrap();
        if r.status() == 200 {
            std::fs::write(&bundle, r.body_mut().read_to_vec().unwrap()).unwrap();
            fetched = true;
            break;
        }
        // The bundle is ready once the epoch holding the receipt is closed.
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(fetched, "no proof bundle at {proof}");
    let attest = workspace_binary(DEMO, "attest", "attest");
    let v = Command::new(attest)
        .args(["verify", "--controller-key", &s.key])
        .arg(&bundle)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        report.contains(&job),
        "the verified bundle is not the job's: {report}"
    );

    // The same proof, checked in the browser by the verifier compiled to WebAssembly: with
    // the controller's key it verifies; with another key pinned it does not.
    b.go(&format!("{}/jobs/{job}", s.url));
    b.click(&b.el("#verify-here"));
    b.wait_until("the verify page", Duration::from_secs(10), |b| {
        b.find("#verify-form").is_some()
    });
    assert!(
        unlabelled(&b).is_empty(),
        "unlabelled: {:?}",
        unlabelled(&b)
    );
    b.type_into(&b.el("#controller-key"), &s.key);
    b.click(&b.el("#verify-button"));
    b.wait_until("the browser's verdict", Duration::from_secs(30), |b| {
        b.find("#verify-verdict").is_some()
    });
    let verdict = b.text(&b.el("#verify-result"));
    assert!(verdict.starts_with("Verified"), "{verdict}");
    assert!(
        verdict.contains("meter records") && verdict.contains("job energy"),
        "{verdict}"
    );
    b.screenshot("06-verified-in-browser");
    b.type_into(&b.el("#controller-key"), &"5b".repeat(32));
    b.click(&b.el("#verify-button"));
    b.wait_until("the refusal", Duration::from_secs(30), |b| {
        b.find("#verify-verdict")
            .is_some_and(|e| b.text(&e) == "Not verified")
    });

    // Another account does not see it: not in its list, and its page is "no such job".
    b.go(&format!("{}/jobs", s.url));
    b.click(&b.el("form.who button"));
    b.wait_until("the login page", Duration::from_secs(10), |b| {
        b.url().ends_with("/login")
    });
    log_in(&b, &s.url, &operator, &operator_pw);
    b.wait_until("the operator's fleet", Duration::from_secs(10), |b| {
        b.find("table.fleet").is_some()
    });
    // The operator tags two devices in one bulk action and filters the fleet by the tag.
    let boxes = b.all("table.fleet input[name=device]");
    assert_eq!(boxes.len(), 3, "an operator selects devices");
    b.click(&boxes[0]);
    b.click(&boxes[1]);
    b.type_into(&b.el("#bulk-tag"), "site-test");
    b.click(&b.el("#bulk div.actions button"));
    b.wait_until("the tags", Duration::from_secs(10), |b| {
        b.all("a.tag").len() == 2
    });
    b.go(&format!("{}/?tag=site-test", s.url));
    assert_eq!(b.all("table.fleet tbody tr").len(), 2);
    assert!(
        unlabelled(&b).is_empty(),
        "unlabelled: {:?}",
        unlabelled(&b)
    );
    b.screenshot("07-operator-tags");
    b.go(&format!("{}/jobs", s.url));
    assert!(
        !b.source().contains(&job),
        "the operator's job list shows the buyer's job"
    );
    b.go(&format!("{}/jobs/{job}", s.url));
    assert_eq!(b.text(&b.el("main h1")), "No such job");
    b.screenshot("08-other-account");

    // Pages read without JavaScript: the fleet is in the HTML the server sends.
    let page = http
        .get(format!("{}/?sort=id", s.url))
        .header("Cookie", &cookie(&http, &s.url, &buyer, &buyer_pw))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        page.contains(&device) && page.contains("<table class=\"fleet\""),
        "{page}"
    );
}

/// Logs in over plain HTTP and returns the session cookie (`name=value`).
fn cookie(http: &ureq::Agent, url: &str, name: &str, password: &str) -> String {
    let no_redirect: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let _ = http;
    let r = no_redirect
        .post(format!("{url}/login"))
        .send_form([("name", name), ("password", password), ("next", "/")])
        .unwrap();
    assert_eq!(r.status(), 303);
    r.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string()
}
