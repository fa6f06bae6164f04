//! A tiny HTTP/1.1 server for tests that stands in for a receiver (a webhook, a collector):
//! it keeps every request's path and body and answers with the status a handler chooses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Reads requests off one connection (keep-alive, `Content-Length` bodies) and answers each
/// with `handle(path, body)`'s status line and no body, until the client closes it.
pub fn serve_requests(conn: TcpStream, mut handle: impl FnMut(&str, &[u8]) -> &'static str) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let status = handle(&path, &body);
        let _ = write!(out, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
    }
}

/// Requests taken: (path, body).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A receiver on a free port of 127.0.0.1 that keeps what it is sent.
pub struct HttpSink {
    port: u16,
    received: Received,
    status: Arc<Mutex<&'static str>>,
}

impl HttpSink {
    /// Starts it, answering `200 OK`.
    pub fn start() -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the HTTP sink");
        let port = listener.local_addr().expect("its address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new("200 OK"));
        let (rx, st) = (received.clone(), status.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (rx, st) = (rx.clone(), st.clone());
                std::thread::spawn(move || {
                    serve_requests(conn, |path, body| {
                        let answer = *st.lock().unwrap();
                        if answer.starts_with('2') {
                            rx.lock().unwrap().push((path.to_string(), body.to_vec()));
                        }
                        answer
                    })
                });
            }
        });
        HttpSink {
            port,
            received,
            status,
        }
    }

    /// Its URL with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What it took so far: (path, body).
    pub fn received(&self) -> Vec<(String, Vec<u8>)> {
        self.received.lock().unwrap().clone()
    }

    /// Answers every later request with `status` (`"503 Service Unavailable"`: the
    /// receiver is down; what it refuses it does not keep).
    pub fn answer(&self, status: &'static str) {
        *self.status.lock().unwrap() = status;
    }
}
