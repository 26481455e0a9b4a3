//! The app under test on a real socket, and a browser that keeps cookies.

use axum::Router;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct TestApp {
    pub addr: SocketAddr,
    runner: Runner,
}

enum Runner {
    Tokio(tokio::task::JoinHandle<()>),
    Actix(Option<actix_web::dev::ServerHandle>),
}

impl Drop for TestApp {
    fn drop(&mut self) {
        match &mut self.runner {
            Runner::Tokio(task) => task.abort(),
            Runner::Actix(handle) => {
                if let Some(h) = handle.take() {
                    // Stopping needs a running system of its own.
                    std::thread::spawn(move || {
                        actix_web::rt::System::new().block_on(h.stop(false))
                    });
                }
            }
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn browser(&self) -> Browser {
        Browser::new(self.addr)
    }
}

/// Serves `router` on 127.0.0.1 on a free port.
pub async fn spawn_app(router: Router) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    TestApp {
        addr,
        runner: Runner::Tokio(task),
    }
}

/// Serves an actix app (built by `factory` in each worker) on 127.0.0.1 on a free port, in
/// its own actix system on its own thread, as a real actix deployment runs.
pub fn spawn_actix<F, T, B>(factory: F) -> TestApp
where
    B: actix_web::body::MessageBody + 'static,
    F: Fn() -> actix_web::App<T> + Send + Clone + 'static,
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(factory)
                .workers(2)
                .disable_signals()
                .listen(listener)
                .unwrap()
                .run();
            tx.send(server.handle()).unwrap();
            let _ = server.await;
        })
    });
    let handle = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("actix server started");
    TestApp {
        addr,
        runner: Runner::Actix(Some(handle)),
    }
}

/// What a request returned.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub set_cookies: Vec<String>,
    pub body: String,
    pub elapsed: Duration,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// Every header, names lower case, in order.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// Reads a response whose request was sent at `start`.
    async fn read(res: reqwest::Response, start: std::time::Instant) -> Answer {
        let status = res.status().as_u16();
        let header_texts = |name: &str| -> Vec<String> {
            res.headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        let set_cookies = header_texts("set-cookie");
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let retry_after = header_texts("retry-after").pop();
        let body = res.text().await.unwrap_or_default();
        Answer {
            status,
            set_cookies,
            body,
            elapsed: start.elapsed(),
            retry_after,
            headers,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// A client with a cookie jar (name -> value), honouring `Max-Age=0` removal. Clones share
/// the jar, like tabs of one browser.
#[derive(Clone)]
pub struct Browser {
    base: String,
    client: reqwest::Client,
    pub jar: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Self {
        Browser {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .pool_max_idle_per_host(64)
                // Redirects are answers to check (and carry cookies): never followed.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The same app and cookies, but an independent jar from now on.
    pub fn fork(&self) -> Browser {
        let jar = self.jar.lock().unwrap().clone();
        Browser {
            base: self.base.clone(),
            client: self.client.clone(),
            jar: Arc::new(Mutex::new(jar)),
        }
    }

    /// The same cookies against another app (another instance behind a load balancer).
    pub fn pointed_at(&self, app: &TestApp) -> Browser {
        let mut b = self.fork();
        b.base = format!("http://{}", app.addr);
        b
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.lock().unwrap().insert(name.into(), value.into());
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Option<serde_json::Value>) -> Answer {
        self.send(reqwest::Method::POST, path, body).await
    }
    pub async fn put(&self, path: &str, body: serde_json::Value) -> Answer {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Answer {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Polls `GET path` until it answers 200 (returned), within `limit`; every answer before
    /// that must be a 503 (the store is coming back), never a 500 or a hang.
    pub async fn get_until_ok(&self, path: &str, limit: Duration) -> Answer {
        let start = std::time::Instant::now();
        loop {
            let r = self.get(path).await;
            if r.status == 200 {
                return r;
            }
            assert_eq!(r.status, 503, "only 503 while the store comes back: {r:?}");
            assert!(start.elapsed() < limit, "not served again within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` with exactly this `Cookie` header (raw bytes, not the jar): what a browser
    /// sends with duplicate names or non-ASCII values. The jar is left as it is.
    pub async fn get_with_cookie_header(&self, path: &str, raw: &[u8]) -> Answer {
        let start = std::time::Instant::now();
        let res = self
            .client
            .get(format!("{}{}", self.base, path))
            .header(
                "cookie",
                reqwest::header::HeaderValue::from_bytes(raw).expect("a header value"),
            )
            .send()
            .await
            .expect("request failed");
        Answer::read(res, start).await
    }

    /// A client without cookies that sends `Authorization: Bearer <token>` (an operator's
    /// script on the admin routes).
    pub fn admin(&self, token: &str) -> Browser {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .default_headers(headers)
            .build()
            .unwrap();
        Browser {
            base: self.base.clone(),
            client,
            jar: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The same jar, sending these headers with every request (what a proxy adds).
    pub fn with_headers(&self, headers: &[(&str, &str)]) -> Browser {
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .default_headers(map)
            .build()
            .unwrap();
        Browser {
            base: self.base.clone(),
            client,
            jar: self.jar.clone(),
        }
    }

    /// The same jar, sending `User-Agent: <agent>` (a named device).
    pub fn with_agent(&self, agent: &str) -> Browser {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .user_agent(agent.to_string())
            .build()
            .unwrap();
        Browser {
            base: self.base.clone(),
            client,
            jar: self.jar.clone(),
        }
    }

    /// The handle `GET /sessions` shows for this browser's own session (`current`).
    pub async fn own_handle(&self) -> String {
        let r = self.get("/sessions").await;
        assert_eq!(r.status, 200, "{r:?}");
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["current"] == true)
            .unwrap()["handle"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `POST path` with a form body (`application/x-www-form-urlencoded`), as a browser posts
    /// an HTML form.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.send_body(
            reqwest::Method::POST,
            path,
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
            &[],
        )
        .await
    }

    /// `POST path` with this body and `Content-Type`.
    pub async fn post_with_body(&self, path: &str, content_type: &str, body: &[u8]) -> Answer {
        self.send_body(
            reqwest::Method::POST,
            path,
            Some((content_type, body.to_vec())),
            &[],
        )
        .await
    }

    /// The origin this client talks to (`http://127.0.0.1:PORT`): what a page of this app
    /// sends as `Origin`.
    pub fn origin(&self) -> &str {
        &self.base
    }

    /// Any request: `method path`, an optional body with its `Content-Type`, extra headers
    /// (what a browser adds: `Origin`, `Sec-Fetch-Site`, ...).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.send_body(method, path, body, headers).await
    }

    /// `POST path` with extra headers and no body.
    pub async fn post_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send_body(reqwest::Method::POST, path, None, headers)
            .await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Answer {
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        self.send_body(method, path, body, &[]).await
    }

    async fn send_body(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        let cookie_header = {
            let jar = self.jar.lock().unwrap();
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !cookie_header.is_empty() {
            req = req.header("cookie", cookie_header);
        }
        if let Some((content_type, b)) = body {
            req = req.header("content-type", content_type).body(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let start = std::time::Instant::now();
        let res = req.send().await.expect("request failed");
        let answer = Answer::read(res, start).await;
        {
            let mut jar = self.jar.lock().unwrap();
            for sc in &answer.set_cookies {
                let first = sc.split(';').next().unwrap();
                let (name, value) = first.split_once('=').unwrap();
                let removed = sc.to_ascii_lowercase().contains("max-age=0");
                if removed {
                    jar.remove(name);
                } else {
                    jar.insert(name.to_string(), value.to_string());
                }
            }
        }
        answer
    }
}

/// Percent-encodes a form value (everything but unreserved characters).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The CSRF token in the first form of an HTML page (the demos' `/` page).
pub fn token_in(html: &str) -> String {
    let at = html
        .find("name=\"csrf_token\" value=\"")
        .unwrap_or_else(|| panic!("no token in {html}"));
    let rest = &html[at + "name=\"csrf_token\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}
