//! A webhook receiver for alert tests: records every JSON body POSTed to it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;

pub struct Receiver {
    pub url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let sink = bodies.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(v);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, bodies }
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits up to `within` for a body that satisfies `pred`.
    pub async fn wait_for(&self, within: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(b) = self.bodies().into_iter().find(|b| pred(b)) {
                return Some(b);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }
}

/// The alert named `name` in an Alertmanager webhook body, if it is there with `status`.
pub fn alert<'a>(body: &'a serde_json::Value, name: &str, status: &str) -> Option<&'a serde_json::Value> {
    body["alerts"].as_array()?.iter().find(|a| a["labels"]["alertname"] == name && a["status"] == status)
}
