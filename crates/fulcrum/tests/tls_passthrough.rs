//! TLS passthrough by SNI: fulcrum reads the ClientHello's server name, routes the connection
//! to a pool without terminating TLS, and the backend's own certificate reaches the client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::pki::*;
use fulcrum::app::RunningApp;
use fulcrum_core::config::Config;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A TLS backend with its own certificate, answering every request with `name`.
async fn tls_backend(pki: &Pki, name: &'static str, pair: &(PathBuf, PathBuf)) -> SocketAddr {
    let acceptor = TlsAcceptor::from(Arc::new(pki.server_config(pair)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if !matches!(tls.read(&mut byte).await, Ok(1)) {
                        return;
                    }
                    head.push(byte[0]);
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

fn start(listener_extra: &str, pools: &[(&str, SocketAddr)]) -> (RunningApp, SocketAddr) {
    let pools: Vec<String> = pools
        .iter()
        .map(|(name, addr)| format!("[pools.{name}]\nbackends = [{{ addr = \"{addr}\" }}]\n"))
        .collect();
    let text = format!(
        "[[listeners]]\nname = \"pass\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tls_passthrough\"\n{listener_extra}\n{}",
        pools.join("")
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let app = RunningApp::start(&config).unwrap();
    let addr = app.listener_addr("pass").unwrap();
    (app, addr)
}

/// A TLS request through fulcrum for `sni`: the certificate's first name and the answer.
async fn fetch(pki: &Pki, addr: SocketAddr, sni: &str) -> std::io::Result<(String, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = TlsConnector::from(Arc::new(pki.client_config(None)));
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    let first_name = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .unwrap();
    tls.write_all(format!("GET / HTTP/1.1\r\nhost: {sni}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((first_name, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_name_reaches_its_pool_and_the_backends_own_certificate_reaches_the_client() {
    let pki = Pki::new("passthrough");
    // The db backend also answers for other.test, the name no route takes.
    let db = tls_backend(&pki, "db", &pki.server("db", &["db.test", "other.test"])).await;
    let apps = tls_backend(&pki, "apps", &pki.server("apps", &["*.apps.test"])).await;
    let routes = "routes = [ { server_name = \"db.test\", pool = \"db\" }, { server_name = \"*.apps.test\", pool = \"apps\" } ]";
    let (app, addr) = start(routes, &[("db", db), ("apps", apps)]);
    assert_eq!(
        fetch(&pki, addr, "db.test").await.unwrap(),
        ("db.test".to_string(), "db".to_string())
    );
    assert_eq!(
        fetch(&pki, addr, "shop.apps.test").await.unwrap(),
        ("*.apps.test".to_string(), "apps".to_string())
    );
    // No route and no default pool: closed without a word.
    assert!(fetch(&pki, addr, "other.test").await.is_err());
    // Not TLS at all: closed.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: db.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    app.shutdown();

    // With a default pool, unknown names (and clients without SNI) go there.
    let (app, addr) = start(
        &format!("pool = \"db\"\n{routes}"),
        &[("db", db), ("apps", apps)],
    );
    assert_eq!(fetch(&pki, addr, "other.test").await.unwrap().1, "db");
    app.shutdown();
}
