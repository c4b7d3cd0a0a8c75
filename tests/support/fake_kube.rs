//! A fake Kubernetes API server: list and watch of pods (`GET /api/v1/pods`, honouring
//! `fieldSelector=spec.nodeName=…`, `resourceVersion` and `watch=1`), over TLS with its own test
//! CA on loopback, requiring a bearer token. Tests add, change and delete pods; watches see the
//! events; [`FakeKube::compact`] expires old resource versions (a resumed watch then gets 410).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Body, Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::pki::TestPki;

/// The bearer token the fake accepts.
pub const TOKEN: &str = "fake-service-account-token";

#[derive(Debug, Default)]
struct State {
    /// Current resource version.
    version: u64,
    /// Live pods by UID.
    pods: HashMap<String, Value>,
    /// Every event so far: (version, type, object).
    history: Vec<(u64, &'static str, Value)>,
    /// Versions at or below this are too old to watch from (0: none).
    compacted: u64,
    /// Open watches with their node filter.
    watchers: Vec<(Option<String>, mpsc::UnboundedSender<Bytes>)>,
    /// Query strings of every request.
    queries: Vec<String>,
}

/// A running fake API server; its runtime stops when dropped.
pub struct FakeKube {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// PEM of its CA (`[kubernetes] ca_file`).
    pub ca_pem: PathBuf,
    /// File holding [`TOKEN`] (`[kubernetes] token_file`).
    pub token_file: PathBuf,
    state: Arc<Mutex<State>>,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKube")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeKube {
    /// Listens on 127.0.0.1 (a free port).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::write(dir.path(), &["127.0.0.1"]);
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
        let config = crate::pki::server_config(&pki.chain_pem, &pki.key_pem);
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind fake API server");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        std::future::ready(Ok::<_, Infallible>(handle(&req, &state)))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem: pki.ca_pem,
            token_file,
            state,
            _dir: dir,
            _runtime: runtime,
        }
    }

    /// The `[kubernetes]` section pointing an agent at this server, watching `node`.
    pub fn agent_config(&self, node: &str) -> String {
        format!(
            "[kubernetes]\nenabled = \"on\"\napi_server = \"https://{}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\nnode_name = \"{node}\"\n",
            self.addr,
            self.token_file.display(),
            self.ca_pem.display()
        )
    }

    /// Adds or replaces a pod (by `metadata.uid`): `ADDED` or `MODIFIED` to watchers.
    pub fn put_pod(&self, pod: Value) {
        let mut s = self.state.lock().expect("state");
        let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
        let kind = if s.pods.contains_key(&uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let pod = s.stamp(pod);
        s.pods.insert(uid, pod.clone());
        s.publish(kind, pod);
    }

    /// Deletes a pod: `DELETED` to watchers.
    pub fn delete_pod(&self, uid: &str) {
        let mut s = self.state.lock().expect("state");
        if let Some(pod) = s.pods.remove(uid) {
            let pod = s.stamp(pod);
            s.publish("DELETED", pod);
        }
    }

    /// Forgets history up to now and ends every open watch: a watch resumed from the current
    /// version or an older one gets `410 Gone`, as after an etcd compaction; a list then serves
    /// a version to watch from once something changed.
    pub fn compact(&self) {
        let mut s = self.state.lock().expect("state");
        s.compacted = s.version;
        s.history.clear();
        s.watchers.clear();
    }

    /// Query strings of every request so far.
    pub fn queries(&self) -> Vec<String> {
        self.state.lock().expect("state").queries.clone()
    }
}

impl State {
    fn stamp(&mut self, mut pod: Value) -> Value {
        self.version += 1;
        pod["metadata"]["resourceVersion"] = json!(self.version.to_string());
        pod
    }

    fn publish(&mut self, kind: &'static str, pod: Value) {
        let node = node_of(&pod);
        let line = event_line(kind, &pod);
        self.watchers.retain(|(filter, tx)| {
            filter.as_deref().is_some_and(|f| f != node) || tx.send(line.clone()).is_ok()
        });
        self.history.push((self.version, kind, pod));
    }
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

type Reply = Response<BoxBody<Bytes, Infallible>>;

fn reply(status: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason})
}

fn handle(req: &Request<Incoming>, state: &Mutex<State>) -> Reply {
    let query = req.uri().query().unwrap_or("").to_owned();
    let mut s = state.lock().expect("state");
    s.queries.push(query.clone());
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !authorized {
        return reply(StatusCode::UNAUTHORIZED, &status(401, "Unauthorized"));
    }
    if req.uri().path() != "/api/v1/pods" {
        return reply(StatusCode::NOT_FOUND, &status(404, "NotFound"));
    }
    let params: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    let node = params
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
        .map(str::to_owned);
    let on_node = |pod: &Value| node.as_deref().is_none_or(|n| node_of(pod) == n);
    if params.get("watch").is_some_and(|w| w == "1" || w == "true") {
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel();
        if s.compacted > 0 && from <= s.compacted {
            let _ = tx.send(event_line("ERROR", &status(410, "Expired")));
        } else {
            for (_, kind, pod) in s.history.iter().filter(|(v, _, p)| *v > from && on_node(p)) {
                let _ = tx.send(event_line(kind, pod));
            }
            s.watchers.push((node, tx.clone()));
        }
        drop(tx);
        let body = Response::builder()
            .header("content-type", "application/json")
            .body(BoxBody::new(Events(rx)))
            .expect("response");
        return body;
    }
    let mut items: Vec<&Value> = s.pods.values().filter(|p| on_node(p)).collect();
    items.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_owned());
    let list = json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": s.version.to_string()},
        "items": items,
    });
    reply(StatusCode::OK, &list)
}

/// Percent-decoding of a query value.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(h) = v.get(i + 1..i + 3)
            && let Ok(x) = u8::from_str_radix(h, 16)
        {
            out.push(x);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A streamed watch body: one JSON event per line, until the fake drops the sender.
struct Events(mpsc::UnboundedReceiver<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// A pod object on `node` with one container `container` whose runtime id is `container_id`,
/// owned by `owner` (`(kind, name)`), with `labels`.
pub fn pod(
    uid: &str,
    namespace: &str,
    name: &str,
    node: &str,
    (container, container_id): (&str, &str),
    owner: Option<(&str, &str)>,
    labels: &[(&str, &str)],
) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let owners: Vec<Value> = owner
        .map(|(kind, name)| json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "owner-uid", "controller": true, "blockOwnerDeletion": true}))
        .into_iter()
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": labels, "ownerReferences": owners},
        "spec": {"nodeName": node, "containers": [{"name": container, "image": "python:3"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": container, "containerID": format!("containerd://{container_id}"), "ready": true}
        ]}
    })
}
