//! The frame every console page shares: head, navigation, who is logged in, and the log-out
//! form. Pages are plain HTML that reads without JavaScript; `console.js` only adds live
//! updates (server-sent events) where a page asks for them.

use maud::{DOCTYPE, Markup, html};

use super::session::Viewer;

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Devices.
    Fleet,
    /// Offers.
    Market,
    /// The viewer's jobs.
    Jobs,
    /// Epochs and anchors.
    Evidence,
    /// Balances and history.
    Ledger,
    /// Alerts (operators).
    Alerts,
}

const SECTIONS: [(Nav, &str, &str); 5] = [
    (Nav::Fleet, "/", "Fleet"),
    (Nav::Market, "/market", "Market"),
    (Nav::Jobs, "/jobs", "Jobs"),
    (Nav::Evidence, "/evidence", "Evidence"),
    (Nav::Ledger, "/ledger", "Ledger"),
];

fn head(title: &str, scripts: &[&str]) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Heliostat" }
            link rel="stylesheet" href="/console/console.css";
            script src="/console/console.js" defer {}
            @for s in scripts { script src=(s) defer {} }
        }
    }
}

/// A page without navigation (login, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    bare_with(title, body, &[])
}

/// A page without navigation that loads more scripts of the console's own.
pub fn bare_with(title: &str, body: Markup, scripts: &[&str]) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, scripts))
            body { (body) }
        }
    }
}

/// A page of the console for a logged-in viewer.
pub fn page(title: &str, viewer: &Viewer, active: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, &[]))
            body {
                header.top {
                    a.brand href="/" { "☀ Heliostat" }
                    nav aria-label="Sections" {
                        ul {
                            @for (nav, href, label) in SECTIONS.iter().copied().chain(viewer.operator().then_some((Nav::Alerts, "/alerts", "Alerts"))) {
                                li {
                                    @if nav == active {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.who method="post" action="/logout" {
                        span #who { (viewer.name) " (" (viewer.caller.kind.as_str()) ")" }
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Log out" }
                    }
                }
                main { (body) }
                footer {
                    "Every number here comes from signed meter records; "
                    a href="/evidence" { "check the evidence" } "."
                }
            }
        }
    }
}

/// A page saying what went wrong, inside the frame.
pub fn problem(viewer: &Viewer, active: Nav, title: &str, why: &str) -> Markup {
    page(
        title,
        viewer,
        active,
        html! { h1 { (title) } p.error role="alert" { (why) } },
    )
}

/// The page for an error of the API's handlers, with the status the API gives it.
pub fn failed(
    viewer: &Viewer,
    active: Nav,
    title: &str,
    e: crate::api::AppError,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let why = e.to_string();
    let status = e.into_response().status();
    (status, problem(viewer, active, title, &why)).into_response()
}
