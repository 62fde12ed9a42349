//! gRPC through fulcrum end to end: tonic backends in-process behind a pool with
//! `protocol = "http2"`, a tonic client in front. Unary calls spread over the pool one by
//! one, a server stream of 1 000 messages, an error status in trailers, a deadline that
//! expires.
//!
//! The service is written without codegen (no protoc): messages derive `prost::Message`, the
//! routing is a `tower` service doing what tonic-build's output does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

/// What one backend saw.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    last_timeout: Mutex<Option<String>>,
}

#[derive(Clone)]
struct EchoService {
    name: &'static str,
    seen: Arc<Seen>,
}

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "fulcrum.test.Echo";
}

impl Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let (name, seen) = (self.name, Arc::clone(&self.seen));
        seen.calls.fetch_add(1, Ordering::SeqCst);
        *seen.last_timeout.lock().unwrap() = request
            .headers()
            .get("grpc-timeout")
            .map(|v| v.to_str().unwrap().to_string());
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Echo, Echo>::default());
        match request.uri().path() {
            "/fulcrum.test.Echo/Say" => Box::pin(async move {
                let say = tower::service_fn(move |call: Request<Echo>| async move {
                    let text = format!("{name}: {}", call.into_inner().text);
                    Ok::<_, Status>(Response::new(Echo { text, count: 1 }))
                });
                Ok(grpc.unary(say, request).await)
            }),
            "/fulcrum.test.Echo/Fail" => Box::pin(async move {
                let fail = tower::service_fn(|_: Request<Echo>| async {
                    Err::<Response<Echo>, _>(Status::not_found("no such echo"))
                });
                Ok(grpc.unary(fail, request).await)
            }),
            "/fulcrum.test.Echo/Slow" => Box::pin(async move {
                let slow = tower::service_fn(|call: Request<Echo>| async move {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok::<_, Status>(Response::new(call.into_inner()))
                });
                Ok(grpc.unary(slow, request).await)
            }),
            "/fulcrum.test.Echo/Count" => Box::pin(async move {
                let count = tower::service_fn(move |call: Request<Echo>| async move {
                    let n = call.into_inner().count;
                    let messages = (0..n).map(move |i| {
                        Ok(Echo {
                            text: format!("{name} {i}"),
                            count: i,
                        })
                    });
                    Ok::<_, Status>(Response::new(tokio_stream::iter(messages)))
                });
                Ok(grpc.server_streaming(count, request).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

/// A tonic server on 127.0.0.1 answering as `name`.
async fn grpc_backend(name: &'static str) -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let service = EchoService {
        name,
        seen: Arc::clone(&seen),
    };
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, seen)
}

async fn client(addr: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn say(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    method: &'static str,
    request: Request<Echo>,
) -> Result<Echo, Status> {
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(method);
    client
        .unary(request, path, ProstCodec::<Echo, Echo>::default())
        .await
        .map(Response::into_inner)
}

fn hello(text: &str) -> Request<Echo> {
    Request::new(Echo {
        text: text.to_string(),
        count: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_cross_fulcrum_each_balanced_on_its_own() {
    let backends = [
        grpc_backend("a").await,
        grpc_backend("b").await,
        grpc_backend("c").await,
    ];
    let list: Vec<(SocketAddr, u32)> = backends.iter().map(|(a, _)| (*a, 1)).collect();
    let proxy = start_proxy("http", "round_robin", &list, "", "protocol = \"http2\"");
    let mut grpc = client(proxy.addr).await;

    // Unary: 30 calls on one client connection, 10 to each backend.
    let mut answers = Vec::new();
    for i in 0..30 {
        answers.push(
            say(&mut grpc, "/fulcrum.test.Echo/Say", hello(&i.to_string()))
                .await
                .unwrap()
                .text,
        );
    }
    assert_eq!(answers[0].split(": ").nth(1), Some("0"));
    let tally = tally(
        answers
            .iter()
            .map(|a| a.split(':').next().unwrap().to_string()),
    );
    assert_eq!(
        tally.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{tally:?}"
    );
    let calls: Vec<usize> = backends
        .iter()
        .map(|(_, s)| s.calls.load(Ordering::SeqCst))
        .collect();
    assert_eq!(calls, vec![10, 10, 10]);

    // Server streaming: 1 000 messages, in order, then the OK status in trailers.
    grpc.ready().await.unwrap();
    let request = Request::new(Echo {
        text: String::new(),
        count: 1000,
    });
    let path = http::uri::PathAndQuery::from_static("/fulcrum.test.Echo/Count");
    let mut stream = grpc
        .server_streaming(request, path, ProstCodec::<Echo, Echo>::default())
        .await
        .unwrap()
        .into_inner();
    let mut received = 0u32;
    while let Some(message) = stream.message().await.unwrap() {
        assert_eq!(message.count, received);
        received += 1;
    }
    assert_eq!(received, 1000);

    // An error status travels in the trailers (here a trailers-only response).
    let failed = say(&mut grpc, "/fulcrum.test.Echo/Fail", hello("x"))
        .await
        .unwrap_err();
    assert_eq!(
        (failed.code(), failed.message()),
        (Code::NotFound, "no such echo")
    );

    // A deadline: the backend is told (grpc-timeout), and the call ends when it passes.
    let mut timed = hello("late");
    timed.set_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let late = say(&mut grpc, "/fulcrum.test.Echo/Slow", timed)
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::Cancelled, "{late:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let told: Vec<Option<String>> = backends
        .iter()
        .map(|(_, s)| s.last_timeout.lock().unwrap().clone())
        .collect();
    assert!(
        told.iter()
            .flatten()
            .any(|t| t.ends_with('m') || t.ends_with('u')),
        "{told:?}"
    );

    // And the connection still carries calls.
    let after = say(&mut grpc, "/fulcrum.test.Echo/Say", hello("after"))
        .await
        .unwrap();
    assert!(after.text.ends_with(": after"), "{after:?}");
}
