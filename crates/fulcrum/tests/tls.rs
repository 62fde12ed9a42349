//! TLS termination end to end, with certificates the tests make (rcgen): the certificate
//! chosen by SNI, TLS versions, rotation from disk without touching open connections, client
//! certificates, TLS on a TCP listener, the handshake deadline, and `check`'s file errors.
//! Clients: rustls (what the tests control byte for byte), curl and openssl s_client (what
//! operators use).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::pki::*;
use common::*;
use fulcrum_core::config::Config;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

fn tls_table(pairs: &[&(PathBuf, PathBuf)], extra: &str) -> String {
    let certs: Vec<String> = pairs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                toml_path(c),
                toml_path(k)
            )
        })
        .collect();
    format!("tls = {{ certificates = [{}]{extra} }}", certs.join(", "))
}

/// fulcrum with an HTTPS listener (`pairs` and `extra` in its `tls` table) in front of `backend`.
fn tls_proxy(backend: &Backend, pairs: &[&(PathBuf, PathBuf)], extra: &str) -> Proxy {
    start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        &tls_table(pairs, extra),
        "",
    )
}

async fn handshake(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The DNS names of the certificate the server presented.
fn presented_names(stream: &TlsStream<TcpStream>) -> Vec<String> {
    let chain = stream.get_ref().1.peer_certificates().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn http_over(stream: TlsStream<TcpStream>) -> Sender {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut Sender, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
    sender.ready().await.unwrap();
    let mut request = Request::get("/").header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_each_certificate_by_its_own_names_and_the_first_for_unknown_names() {
    let pki = Pki::new("sni");
    let a = pki.server("a", &["a.test"]);
    let b = pki.server("b", &["b.test", "*.apps.test"]);
    let backend = Backend::named("backend", Duration::ZERO).await;
    let proxy = tls_proxy(&backend, &[&a, &b], "");
    for (sni, want) in [
        ("a.test", "a.test"),
        ("b.test", "b.test"),
        ("web.apps.test", "b.test"),
        ("A.TEST", "a.test"),
    ] {
        let stream = handshake(proxy.addr, pki.client_config(None), sni)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(presented_names(&stream)[0], want, "certificate for {sni}");
        let mut sender = http_over(stream).await;
        assert_eq!(get(&mut sender, sni, &[]).await, (200, "backend".into()));
    }
    // An unknown name gets the first certificate, which a verifying client then refuses.
    let refused = handshake(proxy.addr, pki.client_config(None), "other.test").await;
    assert!(refused.is_err(), "a certificate for other.test was served");
    // What an operator would type: openssl shows the default certificate's subject names.
    let out = openssl_s_client(proxy.addr, &["-servername", "nothing.test"], &pki);
    assert!(out.contains("DNS:a.test"), "{out}");
    let out = openssl_s_client(proxy.addr, &["-servername", "x.apps.test"], &pki);
    assert!(out.contains("DNS:*.apps.test"), "{out}");
    // The backend is told the client came over TLS.
    assert_eq!(backend.last_headers()["x-forwarded-proto"], "https");
}

/// Runs `openssl s_client` against `addr` and returns what it printed (the certificate text
/// included), with the protocol and cipher lines.
fn openssl_s_client(addr: SocketAddr, args: &[&str], pki: &Pki) -> String {
    let openssl = installed(&["/usr/bin/openssl"], "openssl");
    let mut child = std::process::Command::new(openssl)
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(pki.ca_path())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    // The presented certificate as text, through `openssl x509`.
    let mut x509 = std::process::Command::new(openssl)
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    x509.stdin.take().unwrap().write_all_sync(pem.as_bytes());
    let text = x509.wait_with_output().unwrap();
    format!(
        "{pem}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&text.stdout)
    )
}

/// openssl s_client made no session: no certificate came, no cipher was agreed.
fn assert_no_session(out: &str) {
    assert!(out.contains("no peer certificate available"), "{out}");
    assert!(out.contains("Cipher is (NONE)"), "{out}");
}

trait WriteAllSync {
    fn write_all_sync(self, bytes: &[u8]);
}

impl WriteAllSync for std::process::ChildStdin {
    fn write_all_sync(mut self, bytes: &[u8]) {
        use std::io::Write;
        let _ = self.write_all(bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_with_aead_suites_only_and_nothing_older() {
    let pki = Pki::new("versions");
    let a = pki.server("a", &["a.test"]);
    let backend = Backend::named("backend", Duration::ZERO).await;
    let proxy = tls_proxy(&backend, &[&a], "");
    let out = openssl_s_client(proxy.addr, &["-servername", "a.test", "-tls1_3"], &pki);
    assert!(out.contains("TLSv1.3"), "{out}");
    let out = openssl_s_client(proxy.addr, &["-servername", "a.test", "-tls1_2"], &pki);
    assert!(out.contains("TLSv1.2"), "{out}");
    assert!(
        out.contains("ECDHE-ECDSA-AES256-GCM-SHA384")
            || out.contains("ECDHE-ECDSA-CHACHA20-POLY1305")
            || out.contains("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "TLS 1.2 without an AEAD suite: {out}"
    );
    // TLS 1.1 is not offered: the handshake fails. (Debian's openssl may itself refuse to
    // offer 1.1 at its default security level; either way no session is made.)
    let out = openssl_s_client(
        proxy.addr,
        &[
            "-servername",
            "a.test",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
        &pki,
    );
    assert_no_session(&out);
    // A listener with min_version = "1.3" refuses 1.2.
    let strict = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        &tls_table(&[&a], ", min_version = \"1.3\""),
        "",
    );
    let out = openssl_s_client(strict.addr, &["-servername", "a.test", "-tls1_2"], &pki);
    assert_no_session(&out);
    // curl, as a user would run it.
    let curl = installed(&["/usr/bin/curl"], "curl");
    let out = std::process::Command::new(curl)
        .args(["-sS", "--cacert"])
        .arg(pki.ca_path())
        .args([
            "--resolve",
            &format!("a.test:{}:127.0.0.1", proxy.addr.port()),
        ])
        .arg(format!("https://a.test:{}/", proxy.addr.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "backend", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_new_handshakes_while_open_connections_keep_working() {
    let pki = Pki::new("rotation");
    let a = pki.server("a", &["a.test"]);
    let backend = Backend::named("backend", Duration::ZERO).await;
    let proxy = tls_proxy(&backend, &[&a], "");
    let before = handshake(proxy.addr, pki.client_config(None), "a.test")
        .await
        .unwrap();
    let old_der = before.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut open = http_over(before).await;
    assert_eq!(get(&mut open, "a.test", &[]).await.0, 200);

    // Renewed: a new key and certificate for the same name, replacing the files.
    pki.server("a", &["a.test", "www.a.test"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stream = handshake(proxy.addr, pki.client_config(None), "a.test")
            .await
            .unwrap();
        let der = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        if der != old_der {
            assert!(presented_names(&stream).contains(&"www.a.test".to_string()));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection opened before the renewal still works.
    assert_eq!(get(&mut open, "a.test", &[]).await, (200, "backend".into()));

    // A broken pair on disk keeps the served one and is reported by the admin API.
    std::fs::write(&a.1, "not a key").unwrap();
    let admin = proxy.app().admin_addr().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let (code, body) = Client::connect(admin).await.get("/api/tls").await;
        assert_eq!(code, 200, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if !status["listeners"][0]["rotation"]["error"].is_null() {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let listener = &status["listeners"][0];
    assert_eq!(listener["listener"], "front");
    assert!(
        listener["rotation"]["error"]
            .as_str()
            .unwrap()
            .contains("listeners[0].tls.certificates[0].key"),
        "{status:#}"
    );
    assert_eq!(listener["certificates"][0]["names"][1], "www.a.test");
    assert!(listener["certificates"][0]["not_after"].as_i64().unwrap() > 0);
    assert!(listener["handshakes"]["tls13"].as_u64().unwrap() >= 2);
    let still = handshake(proxy.addr, pki.client_config(None), "a.test")
        .await
        .unwrap();
    assert!(presented_names(&still).contains(&"www.a.test".to_string()));

    // Asked to reload now: 422 while the pair is broken, 200 once a good pair is back.
    let (code, body) = Client::connect(admin)
        .await
        .call("POST", "/api/tls/reload", "")
        .await;
    assert_eq!(code, 422, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["listeners"][0]["reloaded"], false, "{body}");
    assert!(
        answer["listeners"][0]["error"]
            .as_str()
            .unwrap()
            .contains("is not a PEM private key"),
        "{body}"
    );
    pki.server("a", &["a.test", "api.a.test"]);
    let (code, body) = Client::connect(admin)
        .await
        .call("POST", "/api/tls/reload", "")
        .await;
    assert_eq!(code, 200, "{body}");
    let renewed = handshake(proxy.addr, pki.client_config(None), "api.a.test")
        .await
        .unwrap();
    assert!(presented_names(&renewed).contains(&"api.a.test".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_their_subject_reaches_the_backend() {
    let pki = Pki::new("mtls");
    let a = pki.server("a", &["a.test"]);
    let alice = pki.client("alice", "alice");
    let backend = Backend::named("backend", Duration::ZERO).await;
    let extra = format!(
        ", client_ca = \"{}\", client_subject_header = \"X-Client-Subject\"",
        toml_path(&pki.ca_path())
    );
    let proxy = tls_proxy(&backend, &[&a], &extra);
    // Without a certificate: refused (TLS 1.3 reports it at the first read).
    let refused = match handshake(proxy.addr, pki.client_config(None), "a.test").await {
        Err(_) => true,
        Ok(mut stream) => {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
            let mut buf = [0u8; 64];
            !matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate was served");
    assert_eq!(backend.requests(), 0);

    let stream = handshake(
        proxy.addr,
        pki.client_config(Some((&alice.0, &alice.1))),
        "a.test",
    )
    .await
    .unwrap();
    let mut sender = http_over(stream).await;
    let (status, _) = get(&mut sender, "a.test", &[("x-client-subject", "CN=mallory")]).await;
    assert_eq!(status, 200);
    let seen = backend.last_headers();
    let subjects: Vec<_> = seen.get_all("x-client-subject").iter().collect();
    assert_eq!(subjects.len(), 1, "{seen:?}");
    assert_eq!(subjects[0], "CN=alice, O=Example");

    // Optional: no certificate is fine, and a client-sent subject is still removed.
    let optional = start_proxy(
        "http",
        "round_robin",
        &[(backend.addr, 1)],
        &tls_table(&[&a], &format!("{extra}, client_auth = \"optional\"")),
        "",
    );
    let stream = handshake(optional.addr, pki.client_config(None), "a.test")
        .await
        .unwrap();
    let mut sender = http_over(stream).await;
    let (status, _) = get(&mut sender, "a.test", &[("x-client-subject", "CN=mallory")]).await;
    assert_eq!(status, 200);
    assert!(backend.last_headers().get("x-client-subject").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_terminates_tls_and_sends_plain_bytes() {
    let pki = Pki::new("tcp");
    let a = pki.server("a", &["a.test"]);
    let echo = echo_backend().await;
    let proxy = start_proxy(
        "tcp",
        "round_robin",
        &[(echo, 1)],
        &tls_table(&[&a], ""),
        "",
    );
    let mut stream = handshake(proxy.addr, pki.client_config(None), "a.test")
        .await
        .unwrap();
    stream.write_all(b"hello through TLS").await.unwrap();
    let mut buf = [0u8; 17];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello through TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_handshake_is_cut_off_at_the_handshake_timeout() {
    let pki = Pki::new("handshake");
    let a = pki.server("a", &["a.test"]);
    let backend = Backend::named("backend", Duration::ZERO).await;
    let proxy = tls_proxy(&backend, &[&a], ", handshake_timeout = \"300ms\"");
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the connection was not closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn check_and_run_refuse_unusable_certificate_files_naming_each() {
    let pki = Pki::new("check");
    let a = pki.server("a", &["a.test"]);
    let b = pki.server("b", &["b.test"]);
    let nameless = pki.client("nameless", "not a host name");
    let missing = (pki.dir.join("missing.pem"), pki.dir.join("missing.key"));
    // a's certificate with b's key: they do not go together.
    let mismatched = (a.0.clone(), b.1.clone());
    let text = format!(
        "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n{}\n\
         [pools.app]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n",
        tls_table(&[&missing, &mismatched, &nameless], "")
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let errors = fulcrum::secrets::read(&config).unwrap_err();
    let want = [
        "listeners[0].tls.certificates[0].cert: cannot read",
        "listeners[0].tls.certificates[1].key:",
        "listeners[0].tls.certificates[2].cert:",
    ];
    assert_eq!(errors.len(), want.len(), "{errors:#?}");
    for (error, want) in errors.iter().zip(want) {
        assert!(error.starts_with(want), "{error} (want {want})");
    }
    assert!(errors[1].contains("does not go with"), "{}", errors[1]);
    assert!(errors[2].contains("no DNS name"), "{}", errors[2]);
    // The binary says the same and starts nothing.
    let path = pki.dir.join("fulcrum.toml");
    std::fs::write(&path, &text).unwrap();
    for command in ["check", "run"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .args([command, "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command} accepted it");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for want in want {
            assert!(
                stderr.contains(want),
                "{command}: {want} missing from {stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_finds_only_tls_1_2_and_1_3_with_forward_secret_aead_suites() {
    let pki = Pki::new("scan");
    let a = pki.server("a", &["a.test"]);
    let backend = Backend::named("backend", Duration::ZERO).await;
    let proxy = tls_proxy(&backend, &[&a], "");
    let sslscan = installed(&["/usr/bin/sslscan"], "sslscan");
    // The proxy runs on its own threads: a blocking child process here holds up nothing.
    let out = std::process::Command::new(sslscan)
        .args(["--no-colour", "--sni-name=a.test"])
        .arg(proxy.addr.to_string())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    for (protocol, state) in [
        ("SSLv2", "disabled"),
        ("SSLv3", "disabled"),
        ("TLSv1.0", "disabled"),
        ("TLSv1.1", "disabled"),
        ("TLSv1.2", "enabled"),
        ("TLSv1.3", "enabled"),
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with(protocol) && l.split_whitespace().count() == 2)
            .unwrap_or_else(|| panic!("no {protocol} line in:\n{report}"));
        assert!(line.ends_with(state), "{line}\n{report}");
    }
    let suites: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Accepted") || l.starts_with("Preferred"))
        .collect();
    assert!(suites.len() >= 4, "{report}");
    for line in &suites {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (protocol, cipher) = (fields[1], fields[4]);
        assert!(protocol == "TLSv1.2" || protocol == "TLSv1.3", "{line}");
        let aead = cipher.contains("GCM") || cipher.contains("CHACHA20");
        let forward_secret = protocol == "TLSv1.3" || cipher.starts_with("ECDHE-");
        assert!(aead && forward_secret, "weak suite: {line}");
    }
    assert!(
        report.contains("Session renegotiation not supported"),
        "{report}"
    );
}

#[test]
fn a_certificate_close_to_expiry_is_warned_about_at_start() {
    use std::io::{BufRead, BufReader};
    let pki = Pki::new("expiry");
    let soon = pki.server_expiring("soon", &["soon.test"], 5);
    let later = pki.server("later", &["later.test"]);
    let text = format!(
        "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n{}\n\
         [pools.app]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n",
        tls_table(&[&soon, &later], "")
    );
    let path = pki.dir.join("fulcrum.toml");
    std::fs::write(&path, &text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["run", "-c"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let done = line.contains("fulcrum serving");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join("\n");
    let warning = lines
        .iter()
        .find(|l| l.contains("TLS certificate expires soon"))
        .unwrap_or_else(|| panic!("no expiry warning in:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains("soon.test"),
        "{warning}"
    );
    assert!(
        warning.contains("days_left=4") || warning.contains("days_left=5"),
        "{warning}"
    );
    assert!(
        lines.iter().any(|l| l.contains("TLS certificate")
            && l.contains("later.test")
            && l.contains("INFO")),
        "{log}"
    );
}
