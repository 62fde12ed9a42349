//! TLS to backends: a pool with `tls` verifies its backends' certificates (its own CA, the
//! name it is told), reuses the TLS connections, probes them over TLS, and refuses a backend
//! whose certificate does not verify, as it refuses one that does not answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::pki::*;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// An HTTPS backend answering `name`; counts its TLS connections.
async fn https_backend(
    pki: &Pki,
    name: &'static str,
    pair: &(PathBuf, PathBuf),
) -> (SocketAddr, Arc<AtomicUsize>) {
    let acceptor = TlsAcceptor::from(Arc::new(pki.server_config(pair)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        name.as_bytes(),
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_pool_verifies_reuses_and_probes_its_backends_over_tls() {
    let pki = Pki::new("upstream");
    let (addr, connections) =
        https_backend(&pki, "secure", &pki.server("backend", &["backend.test"])).await;
    let tls = format!(
        "tls = {{ server_name = \"backend.test\", ca = \"{}\" }}\n\
         [pools.app.health]\ninterval = \"100ms\"\nreadiness = {{ path = \"/health\" }}\n",
        toml_path(&pki.ca_path())
    );
    let proxy = start_proxy("http", "round_robin", &[(addr, 1)], "", &tls);
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await, (200, "secure".to_string()));
    }
    // Readiness probes (one connection each, every 100 ms) run over TLS as well, so the
    // backend stays active; the requests themselves reuse one pooled TLS connection per
    // worker at most.
    let status = proxy
        .wait_for(Duration::from_secs(5), "a readiness probe over TLS", |s| {
            let probe = &s["backends"][0]["last_probe"];
            probe["check"] == "readiness" && probe["passed"] == true
        })
        .await;
    assert_eq!(backend_state(&status, addr), "active", "{status:#}");
    assert_eq!(status["backends"][0]["last_probe"]["result"], "status 200");
    let before = connections.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(client.get("/").await.0, 200);
    }
    let opened = connections.load(Ordering::SeqCst) - before;
    // 20 requests on one client connection: at most the probes in that time plus one.
    assert!(opened <= 4, "20 requests opened {opened} TLS connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_certificate_does_not_verify_gets_no_request() {
    let pki = Pki::new("upstream-wrong");
    let (addr, connections) =
        https_backend(&pki, "secure", &pki.server("backend", &["backend.test"])).await;
    // Told to expect another name: the handshake fails, and the client gets 502.
    let tls = format!(
        "tls = {{ server_name = \"elsewhere.test\", ca = \"{}\" }}\nconnect_attempts = 1\n",
        toml_path(&pki.ca_path())
    );
    let proxy = start_proxy("http", "round_robin", &[(addr, 1)], "", &tls);
    let (status, _) = Client::connect(proxy.addr).await.get("/").await;
    assert_eq!(status, 502);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a request was served"
    );
    let status = proxy.status().await;
    assert_eq!(status["backends"][0]["failures"], 1, "{status:#}");

    // Without a CA of its own the pool trusts the system's store, which does not know this
    // test's CA either.
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(addr, 1)],
        "",
        "tls = { server_name = \"backend.test\" }\nconnect_attempts = 1\n",
    );
    let (status, _) = Client::connect(proxy.addr).await.get("/").await;
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_can_speak_tls_to_its_backends() {
    let pki = Pki::new("upstream-tcp");
    let acceptor = TlsAcceptor::from(Arc::new(
        pki.server_config(&pki.server("echo", &["echo.test"])),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(&buf).await.unwrap();
        tls.flush().await.unwrap();
    });
    let proxy = start_proxy(
        "tcp",
        "round_robin",
        &[(addr, 1)],
        "",
        &format!(
            "tls = {{ server_name = \"echo.test\", ca = \"{}\" }}\n",
            toml_path(&pki.ca_path())
        ),
    );
    let mut plain = TcpStream::connect(proxy.addr).await.unwrap();
    plain.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), plain.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello");
}

#[test]
fn check_refuses_an_unreadable_ca_naming_the_pool() {
    let text = "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
                [pools.app]\nbackends = [{ addr = \"127.0.0.1:1\" }]\ntls = { ca = \"/nonexistent/ca.pem\" }\n";
    let config = fulcrum_core::config::Config::from_toml(text).unwrap();
    let errors = fulcrum::secrets::read(&config).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("pools.app.tls.ca: /nonexistent/ca.pem: cannot read it"),
        "{}",
        errors[0]
    );
}

/// An HTTPS backend that speaks only HTTP/2 (ALPN `h2`), answering `h2`; counts its
/// connections.
async fn h2_https_backend(pki: &Pki, pair: &(PathBuf, PathBuf)) -> (SocketAddr, Arc<AtomicUsize>) {
    let mut config = pki.server_config(pair);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    let response = http::Response::new(());
                    if let Ok(mut send) = respond.send_response(response, false) {
                        let _ = send.send_data(Bytes::from_static(b"h2"), true);
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_pool_speaks_to_each_backend_in_the_protocol_it_chose() {
    let pki = Pki::new("upstream-auto");
    let pair = pki.server("backend", &["backend.test"]);
    let (h1_addr, h1_connections) = https_backend(&pki, "h1", &pair).await;
    let (h2_addr, h2_connections) = h2_https_backend(&pki, &pair).await;
    let pool = format!(
        "protocol = \"auto\"\ntls = {{ server_name = \"backend.test\", ca = \"{}\" }}\n",
        toml_path(&pki.ca_path())
    );
    let proxy = start_proxy(
        "http",
        "round_robin",
        &[(h1_addr, 1), (h2_addr, 1)],
        "",
        &pool,
    );
    let mut client = Client::connect(proxy.addr).await;
    let mut answers = Vec::new();
    for _ in 0..10 {
        let (status, body) = client.get("/").await;
        assert_eq!(status, 200, "{body}");
        answers.push(body);
    }
    let tally = tally(answers);
    assert_eq!((tally["h1"], tally["h2"]), (5, 5), "{tally:?}");
    // Each kept its connection: one each (this client's requests stay on one worker).
    assert_eq!(h1_connections.load(Ordering::SeqCst), 1);
    assert_eq!(h2_connections.load(Ordering::SeqCst), 1);
}
