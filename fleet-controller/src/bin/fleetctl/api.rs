//! The controller's HTTP API as fleetctl calls it: a bearer token, JSON answers, and an
//! API error (status, `reason`, message) as a typed error.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

/// The API, with or without a token.
pub struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
#[error("{status} {reason}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub reason: String,
    pub message: String,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(300)))
                .http_status_as_error(false)
                .build(),
        );
        Api {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    fn auth(&self) -> Result<String> {
        let t = self
            .token
            .as_deref()
            .context("this needs a token: --token-file FILE or FLEETCTL_TOKEN")?;
        Ok(format!("Bearer {t}"))
    }

    fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>> {
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .read_to_end(&mut body)
            .context("reading the answer")?;
        if status >= 400 {
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            return Err(ApiError {
                status,
                reason: v["reason"].as_str().unwrap_or("unknown").to_string(),
                message: v["message"]
                    .as_str()
                    .map_or_else(|| String::from_utf8_lossy(&body).into_owned(), String::from),
            }
            .into());
        }
        Ok(body)
    }

    pub fn get(&self, path: &str, token: bool) -> Result<Vec<u8>> {
        let mut r = self.agent.get(format!("{}{path}", self.base));
        if token {
            r = r.header("Authorization", &self.auth()?);
        }
        Api::answer(
            r.call()
                .with_context(|| format!("GET {}{path}", self.base))?,
        )
    }

    pub fn json(&self, path: &str, token: bool) -> Result<Value> {
        Ok(serde_json::from_slice(&self.get(path, token)?)?)
    }

    pub fn send(&self, method: &str, path: &str, body: Vec<u8>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = self.auth()?;
        let resp = match method {
            "PUT" => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send(body),
            _ => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body),
        }
        .with_context(|| format!("{method} {url}"))?;
        Ok(serde_json::from_slice(&Api::answer(resp)?)?)
    }
}
