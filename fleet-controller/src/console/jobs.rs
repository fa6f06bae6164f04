//! The viewer's jobs: the list with the form that submits one (inputs uploaded with it),
//! a job's page (state, live progress and events, outputs, carbon statement, proof), its
//! events as server-sent events that resume where a dropped connection left them, and its
//! outputs' bytes. Everything goes through the API's handlers with the viewer as caller:
//! another account's job is "no such job" here exactly as it is there.

use std::convert::Infallible;
use std::ops::Not as _;
use std::time::Duration;

use attest::Hash32;
use axum::body::Body;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::carbon::{EstimateQuery, estimate_section, statement_section};
use super::page::{self, Nav};
use super::session::{CsrfForm, Viewer, same_origin};
use super::when;
use crate::api::{ApiJson, ApiQuery, ApiState, AppError, Auth};

fn state_badge(state: &str) -> Markup {
    html! { span class={"state " (state)} data-col="state" { (state) } }
}

fn job_form(viewer: &Viewer, error: Option<&str>) -> Markup {
    html! {
        section.submit aria-labelledby="submit-h" {
            h2 #submit-h { "Submit a job" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/jobs" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                div.grid {
                    label for="kernel" { "Kernel" }
                    select #kernel name="kernel" {
                        option value="sha256_batch" { "sha256_batch: hash fixed-size items" }
                        option value="mandelbrot" { "mandelbrot: render a frame" }
                        option value="matmul_f32" { "matmul_f32: multiply matrices" }
                    }
                    label for="params" { "Parameters" }
                    input #params type="text" name="params" value="count=100 item_len=64" aria-describedby="params-help";
                    small #params-help { "NAME=VALUE pairs, space-separated, as the kernel takes them." }
                    label for="input" { "Input files" }
                    input #input type="file" name="input" multiple;
                    label for="deadline_h" { "Due in (hours)" }
                    input #deadline_h type="number" name="deadline_h" min="1" max="720" value="24";
                    label for="max_price" { "Price ceiling (credits per GPU-hour)" }
                    input #max_price type="number" name="max_price" min="0" step="0.000001" value="1";
                    label for="min_renewable" { "Least renewable share (%)" }
                    input #min_renewable type="number" name="min_renewable" min="0" max="100" placeholder="none";
                    label for="max_co2e_g" { "Most CO₂e for the job (g)" }
                    input #max_co2e_g type="number" name="max_co2e_g" min="0" step="0.001" placeholder="none";
                    label for="flexible" { "May wait for the sun" }
                    input #flexible type="checkbox" name="flexible" value="on";
                }
                button type="submit" { "Submit" }
            }
        }
    }
}

async fn list_page(s: ApiState, viewer: Viewer, error: Option<String>) -> Response {
    list_page_with(s, viewer, error, EstimateQuery::default()).await
}

async fn list_page_with(
    s: ApiState,
    viewer: Viewer,
    error: Option<String>,
    eq: EstimateQuery,
) -> Response {
    let estimate = match (eq.est_price, eq.est_hours) {
        (Some(p), Some(h)) if p >= 0.0 && h > 0.0 && p.is_finite() && h.is_finite() => {
            let body = crate::api::jobs::EstimateBody {
                max_price_micro_per_gpu_hour: (p * 1e6).round() as u64,
                max_duration_ms: (h * 3_600_000.0) as u64,
                hardware: Default::default(),
            };
            crate::api::jobs::estimate(State(s.clone()), Auth(viewer.caller), ApiJson(body))
                .await
                .ok()
                .map(|j| j.0)
        }
        _ => None,
    };
    let q = serde_json::from_value(json!({"limit": 200})).map(ApiQuery);
    let jobs = match q {
        Ok(q) => crate::api::jobs::list(State(s), Auth(viewer.caller), q).await,
        Err(e) => Err(AppError::Internal(e.to_string())),
    };
    let jobs = match jobs {
        Ok(j) => j.1.0,
        Err(e) => return page::failed(&viewer, Nav::Jobs, "Jobs", e),
    };
    let empty = Vec::new();
    let jobs = jobs.as_array().unwrap_or(&empty);
    let body = html! {
        h1 { "Jobs" }
        table.jobs {
            caption { "Your jobs, newest first" }
            thead { tr { th scope="col" { "Job" } th scope="col" { "Workload" } th scope="col" { "State" } th scope="col" { "Submitted" } th scope="col" { "Due" } } }
            tbody {
                @for j in jobs {
                    @let id = j["id"].as_str().unwrap_or_default();
                    tr {
                        td { a href={"/jobs/" (id)} { code { (id) } } }
                        td { (j["workload"].as_str().unwrap_or_default()) }
                        td { (state_badge(j["state"].as_str().unwrap_or_default())) }
                        td { (when(j["created_ms"].as_u64().unwrap_or(0))) }
                        td { (when(j["deadline_ms"].as_u64().unwrap_or(0))) }
                    }
                }
            }
        }
        @if jobs.is_empty() { p { "No jobs yet." } } @else { p { a href="/jobs.csv" download { "These jobs as CSV" } } }
        (estimate_section(estimate.as_ref(), &eq))
        @if viewer.caller.scopes.has(crate::accounts::Scope::Submit) { (job_form(&viewer, error.as_deref())) }
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, page::page("Jobs", &viewer, Nav::Jobs, body)).into_response()
}

/// `GET /jobs`.
pub async fn list(
    State(s): State<ApiState>,
    viewer: Viewer,
    Query(q): Query<EstimateQuery>,
) -> Response {
    list_page_with(s, viewer, None, q).await
}

/// The job form's fields as read from the multipart body.
#[derive(Debug, Default)]
struct Posted {
    csrf: String,
    kernel: String,
    params: String,
    deadline_h: String,
    max_price: String,
    min_renewable: String,
    max_co2e_g: String,
    flexible: bool,
    inputs: Vec<Vec<u8>>,
}

/// Most bytes of a text field.
const MAX_FIELD: usize = 4096;

async fn read_form(mut mp: Multipart, max_file: usize) -> Result<Posted, String> {
    let mut p = Posted::default();
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| format!("the form could not be read: {e}"))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let is_file = name == "input";
        let limit = if is_file { max_file } else { MAX_FIELD };
        let mut bytes = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| format!("the form could not be read: {e}"))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(if is_file {
                    format!(
                        "an input file is larger than this form takes ({limit} bytes); upload it with fleetctl"
                    )
                } else {
                    format!("the field {name} is too long")
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if is_file {
            // A file input left empty sends one part with no name and no bytes.
            if !bytes.is_empty() || field.file_name().is_some_and(|n| !n.is_empty()) {
                p.inputs.push(bytes);
            }
            continue;
        }
        let text = String::from_utf8(bytes).map_err(|_| format!("the field {name} is not text"))?;
        match name.as_str() {
            "csrf" => p.csrf = text,
            "kernel" => p.kernel = text,
            "params" => p.params = text,
            "deadline_h" => p.deadline_h = text,
            "max_price" => p.max_price = text,
            "min_renewable" => p.min_renewable = text,
            "max_co2e_g" => p.max_co2e_g = text,
            "flexible" => p.flexible = text == "on",
            _ => {}
        }
    }
    Ok(p)
}

fn number(field: &str, text: &str) -> Result<Option<f64>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Some)
        .ok_or_else(|| format!("{field}: {t:?} is not a number of zero or more"))
}

/// The API's job request for a posted form (inputs named by their hashes).
fn request(p: &Posted, inputs: &[Hash32], now_ms: u64) -> Result<Value, String> {
    let mut params = Vec::new();
    for pair in p.params.split_whitespace() {
        let (n, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("parameter {pair:?}: NAME=VALUE"))?;
        let v: i64 = v
            .parse()
            .map_err(|_| format!("parameter {n}: {v:?} is not a whole number"))?;
        params.push(json!({"name": n, "value": v}));
    }
    let deadline_h = number("Due in", &p.deadline_h)?
        .unwrap_or(24.0)
        .min(24.0 * 365.0);
    let price = number("Price ceiling", &p.max_price)?.unwrap_or(1.0);
    let mut job = json!({
        "workload": {"builtin": {"kernel": p.kernel, "params": params}},
        "inputs": inputs.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "deadline_ms": now_ms + (deadline_h * 3_600_000.0) as u64,
        "max_price_micro_per_gpu_hour": (price * 1e6).round() as u64,
        "flexible": p.flexible,
    });
    match (
        number("Least renewable share", &p.min_renewable)?,
        number("Most CO2e", &p.max_co2e_g)?,
    ) {
        (Some(_), Some(_)) => {
            return Err("give a least renewable share or a most CO2e, not both".into());
        }
        (Some(pct), None) => {
            if pct > 100.0 {
                return Err("the renewable share is a percentage, 0 to 100".into());
            }
            job["carbon"] = json!({"min_renewable_share_ppm": ((pct * 1e4).round() as u32).max(1)});
        }
        (None, Some(g)) => job["carbon"] = json!({"max_co2e_mg": (g * 1000.0).round() as u64}),
        (None, None) => {}
    }
    Ok(job)
}

/// `POST /jobs`: uploads the form's input files (as blobs of the viewer's, within its
/// quota) and submits the job; on to its page, or the form again with the reason.
pub async fn submit(
    State(s): State<ApiState>,
    viewer: Viewer,
    headers: HeaderMap,
    mp: Multipart,
) -> Response {
    if let Err(r) = same_origin(&headers) {
        return r.into_response();
    }
    let posted = match read_form(mp, s.console.max_upload_bytes).await {
        Ok(p) => p,
        Err(e) => return list_page(s, viewer, Some(e)).await,
    };
    if let Err(r) = viewer.check_csrf(&posted.csrf) {
        return r.into_response();
    }
    let mut hashes = Vec::new();
    for bytes in &posted.inputs {
        let hash = Hash32::digest(bytes);
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&bytes.len().to_string()) {
            h.insert(header::CONTENT_LENGTH, v);
        }
        let put = crate::api::blobs::put(
            State(s.clone()),
            Auth(viewer.caller),
            Path(hash.to_hex()),
            h,
            Body::from(bytes.clone()),
        )
        .await;
        if let Err(e) = put {
            return list_page(s, viewer, Some(format!("uploading an input: {e}"))).await;
        }
        hashes.push(hash);
    }
    let req = match request(&posted, &hashes, crate::runtime::now_ms())
        .and_then(|v| serde_json::from_value(v).map_err(|e| format!("the job: {e}")))
    {
        Ok(r) => r,
        Err(e) => return list_page(s, viewer, Some(e)).await,
    };
    match crate::api::jobs::submit(State(s.clone()), Auth(viewer.caller), ApiJson(req)).await {
        Ok((_, job)) => {
            let id = job.0["id"].as_str().unwrap_or_default().to_string();
            Redirect::to(&format!("/jobs/{id}")).into_response()
        }
        Err(e) => list_page(s, viewer, Some(e.to_string())).await,
    }
}

/// `GET /jobs/{id}`.
pub async fn show(State(s): State<ApiState>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let job = match crate::api::jobs::show(State(s.clone()), Auth(viewer.caller), Path(id.clone()))
        .await
    {
        Ok(j) => j.0,
        Err(e) => {
            let status = if matches!(e, AppError::UnknownJob(_) | AppError::BadJobId(_)) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            return (
                status,
                page::problem(&viewer, Nav::Jobs, "No such job", &e.to_string()),
            )
                .into_response();
        }
    };
    let results =
        crate::api::jobs::results(State(s.clone()), Auth(viewer.caller), Path(id.clone()))
            .await
            .map(|j| j.0)
            .ok();
    let state = job["state"].as_str().unwrap_or_default().to_string();
    let device = job["device"].as_str().map(String::from);
    let statement = match (&device, state.as_str()) {
        (Some(d), "done") => {
            let (pool, intensity) = (s.store.clone(), s.intensity.clone());
            let (d, j) = (
                attest::DeviceId::parse(d).ok(),
                crate::jobs::parse_job_id(&id),
            );
            tokio::task::spawn_blocking(move || {
                let (d, j) = (d?, j?);
                let st = pool.get().ok()?;
                crate::bundles::job_statement(&*st, d, j, &intensity)
                    .ok()
                    .map(|x| x.0)
            })
            .await
            .ok()
            .flatten()
        }
        _ => None,
    };
    let history = job["history"].as_array().cloned().unwrap_or_default();
    let last_seq = history.last().and_then(|h| h["seq"].as_u64()).unwrap_or(0);
    let progress = &job["progress"];
    let is_final = job["final"].as_bool().unwrap_or(false)
        || ["done", "failed", "cancelled", "expired"].contains(&state.as_str());
    let body = html! {
        h1 { "Job " code { (id) } }
        dl.facts #job-facts data-live=[is_final.not().then(|| format!("/jobs/{id}/live?after={last_seq}"))] {
            dt { "State" } dd { (state_badge(&state)) }
            dt { "Workload" } dd { (job["workload"].as_str().unwrap_or_default()) }
            dt { "Device" } dd { @if let Some(d) = &device { a href={"/devices/" (d)} { code { (d) } } } @else { "not placed yet" } }
            dt { "Progress" } dd data-col="progress" {
                @if state == "done" || state == "validating" {
                    "all chunks run"
                } @else if let (Some(done), Some(all)) = (progress["chunks_done"].as_u64(), progress["chunks"].as_u64()) {
                    progress max=(all) value=(done) { (done) " of " (all) } " " (done) " of " (all) " chunks"
                    @if progress["paused"].as_bool() == Some(true) { " (paused by the power governor)" }
                } @else { "–" }
            }
            dt { "Due" } dd { (when(job["deadline_ms"].as_u64().unwrap_or(0))) }
            dt { "Flexible" } dd { (if job["flexible"].as_bool() == Some(true) { "yes, may wait for the sun" } else { "no" }) }
        }
        @if !is_final && state != "validating" {
            form method="post" action={"/jobs/" (id) "/cancel"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button.danger type="submit" { "Cancel the job" }
            }
        }
        h2 { "Events" }
        ol.events #job-events {
            @for h in &history {
                li data-seq=(h["seq"].as_u64().unwrap_or(0)) {
                    time { (when(h["at_ms"].as_u64().unwrap_or(0))) } " " (state_badge(h["state"].as_str().unwrap_or_default())) " " (h["reason"].as_str().unwrap_or_default())
                }
            }
        }
        @if let Some(r) = &results {
            @if let Some(outs) = r["outputs"].as_array().filter(|o| !o.is_empty()) {
                h2 { "Results" }
                ul {
                    @for o in outs {
                        @let i = o["index"].as_u64().unwrap_or(0);
                        li { a href={"/jobs/" (id) "/outputs/" (i)} download={"job-" (id) "-output-" (i) ".bin"} { "Output " (i) } " (" (o["bytes"]) " bytes, SHA-256 " code { (o["sha256"].as_str().unwrap_or_default()) } ")" }
                    }
                }
            }
        }
        @if let (Some(st), Some(d)) = (&statement, &device) { (statement_section(st, d, &id)) }
    };
    page::page(&format!("Job {id}"), &viewer, Nav::Jobs, body).into_response()
}

/// Where a live stream starts when the browser has no `Last-Event-ID` yet.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LiveQuery {
    /// The last history `seq` the page shows.
    after: Option<u32>,
}

/// `GET /jobs/{id}/live`: the job's events as server-sent events (`event: job`, the `id` of
/// each its history `seq`), then its progress (`event: progress`); a client that reconnects
/// sends `Last-Event-ID` and gets only what came after. Ends when the job does.
pub async fn live(
    State(s): State<ApiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
    headers: HeaderMap,
) -> Response {
    let after: Option<u32> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(q.after);
    // The job must be the viewer's before anything streams.
    if let Err(e) =
        crate::api::jobs::show(State(s.clone()), Auth(viewer.caller), Path(id.clone())).await
    {
        return (StatusCode::NOT_FOUND, e.to_string()).into_response();
    }
    let stream = futures_util::stream::unfold(
        (s, viewer, id, after, None::<u64>, false),
        |(s, viewer, id, after, progress_after, ended)| async move {
            if ended {
                return None;
            }
            let mut q = json!({"wait_ms": 25_000});
            if let Some(a) = after {
                q["after"] = json!(a);
            }
            if let Some(p) = progress_after {
                q["progress_after"] = json!(p);
            }
            let q = serde_json::from_value(q).ok()?;
            let got = crate::api::jobs::events(
                State(s.clone()),
                Auth(viewer.caller),
                Path(id.clone()),
                ApiQuery(q),
            )
            .await;
            let Ok(v) = got.map(|j| j.0) else {
                return Some((
                    vec![
                        Event::default()
                            .event("gone")
                            .data("the job could not be read"),
                    ],
                    (s, viewer, id, after, progress_after, true),
                ));
            };
            let mut events = Vec::new();
            let mut after = after;
            for e in v["events"].as_array().into_iter().flatten() {
                let seq = e["seq"].as_u64().unwrap_or(0) as u32;
                after = Some(seq);
                events.push(
                    Event::default()
                        .event("job")
                        .id(seq.to_string())
                        .data(e.to_string()),
                );
            }
            let mut progress_after = progress_after;
            if let Some(at) = v["progress"]["at_ms"].as_u64()
                && progress_after.is_none_or(|p| at > p)
            {
                progress_after = Some(at);
                events.push(
                    Event::default()
                        .event("progress")
                        .data(v["progress"].to_string()),
                );
            }
            let ended = v["final"].as_bool().unwrap_or(false);
            if ended {
                events.push(Event::default().event("end").data(v["state"].to_string()));
            }
            Some((events, (s, viewer, id, after, progress_after, ended)))
        },
    );
    use futures_util::StreamExt as _;
    let flat =
        stream.flat_map(|evs| futures_util::stream::iter(evs.into_iter().map(Ok::<_, Infallible>)));
    Sse::new(flat)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// `POST /jobs/{id}/cancel`.
pub async fn cancel(
    State(s): State<ApiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = viewer.check_form(&headers, &f.csrf) {
        return r.into_response();
    }
    match crate::api::jobs::cancel(State(s), Auth(viewer.caller), Path(id.clone())).await {
        Ok(_) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Err(e) => page::failed(&viewer, Nav::Jobs, "Not cancelled", e),
    }
}

/// `GET /jobs/{id}/outputs/{index}`: one output's bytes, as the API serves its blob.
pub async fn output(
    State(s): State<ApiState>,
    viewer: Viewer,
    Path((id, index)): Path<(String, u64)>,
) -> Response {
    let r = match crate::api::jobs::results(State(s.clone()), Auth(viewer.caller), Path(id)).await {
        Ok(r) => r.0,
        Err(e) => return (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    };
    let Some(hash) = r["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["index"].as_u64() == Some(index))
        .and_then(|o| o["sha256"].as_str().map(String::from))
    else {
        return (StatusCode::NOT_FOUND, "no such output").into_response();
    };
    match crate::api::blobs::get(State(s), Auth(viewer.caller), Path(hash)).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_becomes_the_apis_request() {
        let p = Posted {
            kernel: "sha256_batch".into(),
            params: "count=2 item_len=64".into(),
            deadline_h: "2".into(),
            max_price: "0.5".into(),
            min_renewable: "80".into(),
            flexible: true,
            ..Posted::default()
        };
        let h = Hash32::digest(b"x");
        let v = request(&p, &[h], 1_000).unwrap();
        assert_eq!(v["deadline_ms"], 1_000 + 7_200_000);
        assert_eq!(v["max_price_micro_per_gpu_hour"], 500_000);
        assert_eq!(v["carbon"]["min_renewable_share_ppm"], 800_000);
        assert_eq!(v["workload"]["builtin"]["params"][1]["value"], 64);
        assert_eq!(v["inputs"][0], h.to_hex());
        let req: crate::jobs::JobRequest = serde_json::from_value(v).unwrap();
        assert!(req.flexible);

        let bad = Posted {
            params: "count".into(),
            ..p
        };
        assert!(request(&bad, &[], 0).unwrap_err().contains("NAME=VALUE"));
        let both = Posted {
            params: String::new(),
            min_renewable: "1".into(),
            max_co2e_g: "1".into(),
            ..Posted::default()
        };
        assert!(request(&both, &[], 0).unwrap_err().contains("not both"));
        let neg = Posted {
            max_price: "-1".into(),
            ..Posted::default()
        };
        assert!(request(&neg, &[], 0).unwrap_err().contains("Price ceiling"));
    }
}
