//! The alerts page (operators): what fires and is pending now, the latest firings and
//! resolutions with their webhook delivery, the silences, and the form that adds one.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::page::{self, Nav};
use super::session::{CsrfForm, Viewer};
use super::when;
use crate::api::{ApiJson, ApiState, Auth};

/// `GET /alerts`.
pub async fn alerts(State(s): State<ApiState>, viewer: Viewer) -> Response {
    let v = match crate::api::alerts::list(State(s.clone()), Auth(viewer.caller)).await {
        Ok(v) => v.0,
        Err(e) => return page::failed(&viewer, Nav::Alerts, "Alerts", e),
    };
    let empty = Vec::new();
    let states = v["states"].as_array().unwrap_or(&empty);
    let events = v["events"].as_array().unwrap_or(&empty);
    let silences = v["silences"].as_array().unwrap_or(&empty);
    let body = html! {
        h1 { "Alerts" }
        p.note { "Rules are in the controller's configuration (" code { "[[alerts.rule]]" } "): a delay before firing and a level to clear at, so a flapping value does not page anyone twice. Firings and resolutions go to the webhook unless silenced." }
        table.alerts #alert-states {
            caption { "Now (" (states.iter().filter(|a| a["state"] == "firing").count()) " firing)" }
            thead { tr { th scope="col" { "Rule" } th scope="col" { "Subject" } th scope="col" { "State" } th scope="col" { "Value" } th scope="col" { "Since" } } }
            tbody {
                @for a in states {
                    tr {
                        td { (a["rule"].as_str().unwrap_or_default()) }
                        td { (subject_link(a["subject"].as_str().unwrap_or_default())) }
                        td { span class={"state " (if a["state"] == "firing" { "failed" } else { "pending" })} { (a["state"].as_str().unwrap_or_default()) } }
                        td.num { (format!("{:.2}", a["value"].as_f64().unwrap_or(0.0))) }
                        td { (when(a["since_ms"].as_u64().unwrap_or(0))) }
                    }
                }
            }
        }
        @if states.is_empty() { p { "All clear." } }
        h2 { "Silences" }
        @if !silences.is_empty() {
            table.alerts {
                thead { tr { th scope="col" { "Rule" } th scope="col" { "Subject" } th scope="col" { "Until" } th scope="col" { "Why" } th scope="col" { "" } } }
                tbody {
                    @for x in silences {
                        tr {
                            td { (x["rule"].as_str().unwrap_or("any rule")) }
                            td { (x["subject"].as_str().unwrap_or("any subject")) }
                            td { (when(x["until_ms"].as_u64().unwrap_or(0))) }
                            td { (x["reason"].as_str().unwrap_or_default()) }
                            td {
                                form method="post" action={"/alerts/silences/" (x["id"]) "/end"} {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    button type="submit" { "End" }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action="/alerts/silences" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            div.grid {
                label for="silence-rule" { "Rule" }
                select #silence-rule name="rule" {
                    option value="" { "any rule" }
                    @for r in &s.console.alert_rules { option value=(r) { (r) } }
                }
                label for="silence-subject" { "Subject" }
                input #silence-subject type="text" name="subject" placeholder="device:hs-... or job:... (empty: any)";
                label for="silence-hours" { "For (hours)" }
                input #silence-hours type="number" name="hours" min="0.1" max="720" step="0.1" value="4";
                label for="silence-reason" { "Why" }
                input #silence-reason type="text" name="reason" required placeholder="maintenance";
            }
            button type="submit" { "Silence" }
        }
        h2 { "History" }
        table.alerts #alert-events {
            caption { "The latest firings and resolutions, newest first" }
            thead { tr { th scope="col" { "When" } th scope="col" { "Rule" } th scope="col" { "Subject" } th scope="col" { "Status" } th scope="col" { "Detail" } th scope="col" { "Webhook" } } }
            tbody {
                @for e in events {
                    tr {
                        td { (when(e["at_ms"].as_u64().unwrap_or(0))) }
                        td { (e["rule"].as_str().unwrap_or_default()) }
                        td { (subject_link(e["subject"].as_str().unwrap_or_default())) }
                        td { span class={"state " (if e["status"] == "firing" { "failed" } else { "done" })} { (e["status"].as_str().unwrap_or_default()) } }
                        td { (e["detail"].as_str().unwrap_or_default()) }
                        td {
                            @if e["silenced"] == true { "silenced" }
                            @else if let Some(t) = e["delivered_ms"].as_u64() { "sent " (when(t)) }
                            @else if e["attempts"].as_u64().unwrap_or(0) > 0 { "not yet (" (e["attempts"]) " tries: " (e["last_error"].as_str().unwrap_or_default()) ")" }
                            @else { "waiting" }
                        }
                    }
                }
            }
        }
    };
    page::page("Alerts", &viewer, Nav::Alerts, body).into_response()
}

fn subject_link(subject: &str) -> maud::Markup {
    html! {
        @if let Some(d) = subject.strip_prefix("device:") { a href={"/devices/" (d)} { code { (d) } } }
        @else if let Some(j) = subject.strip_prefix("job:") { "job " code { (j) } }
        @else { (subject) }
    }
}

/// The silence form.
#[derive(Debug, Deserialize)]
pub struct SilenceForm {
    csrf: String,
    rule: Option<String>,
    subject: Option<String>,
    hours: f64,
    reason: String,
}

/// `POST /alerts/silences`.
pub async fn silence(
    State(s): State<ApiState>,
    viewer: Viewer,
    headers: HeaderMap,
    axum::Form(f): axum::Form<SilenceForm>,
) -> Response {
    if let Err(r) = viewer.check_form(&headers, &f.csrf) {
        return r.into_response();
    }
    let body = crate::api::alerts::SilenceBody {
        rule: f.rule,
        subject: f.subject,
        hours: f.hours,
        reason: f.reason,
    };
    match crate::api::alerts::silence(State(s), Auth(viewer.caller), ApiJson(body)).await {
        Ok(_) => Redirect::to("/alerts").into_response(),
        Err(e) => page::failed(&viewer, Nav::Alerts, "Not silenced", e),
    }
}

/// `POST /alerts/silences/{id}/end`.
pub async fn end_silence(
    State(s): State<ApiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<u64>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = viewer.check_form(&headers, &f.csrf) {
        return r.into_response();
    }
    match crate::api::alerts::end_silence(State(s), Auth(viewer.caller), Path(id)).await {
        Ok(_) => Redirect::to("/alerts").into_response(),
        Err(e) => page::failed(&viewer, Nav::Alerts, "Not ended", e),
    }
}
