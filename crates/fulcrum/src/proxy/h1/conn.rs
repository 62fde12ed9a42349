//! One client connection: requests read one after another (pipelined ones too), each
//! proxied whole before the next head is read, with the two client timers a proxy needs:
//!
//! - a **header deadline**: from the first byte of a request head (from accept, for the first
//!   request) the whole head must arrive within `header_timeout`, however slowly it trickles;
//!   when it does not, the client gets `408 Request Timeout` and the connection is closed;
//! - an **idle timeout** between requests on a keep-alive connection: when it passes, the
//!   connection is closed quietly.
//!
//! While it waits for a request the connection holds no buffer (see `buffer`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::buffer::ReadBuf;
use super::exchange::{self, Client, HttpRoute};
use super::relay;
use super::request::{self, RequestHead, RequestRules};
use crate::proxy::error::ProxyError;
use crate::proxy::worker::Stop;

/// Serves `stream` until the client closes, a timer ends it, an error makes it unusable, or
/// fulcrum shuts down (a request in progress is finished first).
pub async fn serve(route: Rc<HttpRoute>, mut stream: TcpStream, peer: SocketAddr, stop: Rc<Stop>) {
    let peer_text = exchange::peer_text(peer);
    let rules = RequestRules {
        max_request_line_bytes: route.limits.max_request_line_bytes,
        settings: &route.pool.settings,
        peer: peer.ip(),
        peer_text: &peer_text,
    };
    let mut input = ReadBuf::new(Rc::clone(&route.buffers));
    // The first head is due within the header timeout from accept; later ones from the
    // moment their first bytes arrive (set only when a head has to be waited for).
    let mut head_deadline = Some(Instant::now() + route.limits.header_timeout);
    let mut first = true;
    loop {
        if input.is_empty() && !first {
            input.release_if_empty();
            // A client that sends its next request at once needs no timer.
            let ready_now = matches!(
                relay::poll_once(std::pin::pin!(stream.readable())).await,
                Poll::Ready(Ok(()))
            );
            if !ready_now {
                let woke = tokio::select! {
                    biased;
                    ready = stream.readable() => ready.is_ok(),
                    () = stop.wait() => false,
                    () = tokio::time::sleep(route.idle_timeout) => false,
                };
                if !woke {
                    return;
                }
            }
            head_deadline = None;
        }
        first = false;
        let mut upstream_head = route.buffers.take_write();
        // Boxed for the same reason as the exchange below.
        let head = Box::pin(read_head(
            &route,
            &rules,
            &mut stream,
            &mut input,
            head_deadline,
            &mut upstream_head,
            &stop,
        ))
        .await;
        let keep_alive = match head {
            Ok(Some(request)) => {
                input.consume(request.len);
                let mut client = Client {
                    stream: &mut stream,
                    input: &mut input,
                    request: &request,
                    upstream_head: &upstream_head,
                    shutting_down: stop.is_stopped(),
                };
                // Boxed: the exchange's state is large and only lives for the request, while
                // this task lives as long as the (mostly idle) connection.
                Box::pin(exchange::proxy(&route, &mut client)).await
            }
            Ok(None) => false,
            Err(error) => {
                tracing::debug!(%peer, %error, "bad request");
                let mut out = Vec::new();
                error.write_response(&mut out, true);
                let _ = relay::write_slice(&mut stream, &out, route.idle_timeout).await;
                false
            }
        };
        route.buffers.give_write(upstream_head);
        if !keep_alive || stop.is_stopped() {
            return;
        }
    }
}

/// Reads until a whole request head is buffered. `Ok(None)`: the client closed (or fulcrum
/// is shutting down) before a request began.
async fn read_head(
    route: &HttpRoute,
    rules: &RequestRules<'_>,
    stream: &mut TcpStream,
    input: &mut ReadBuf,
    mut deadline: Option<Instant>,
    upstream_head: &mut Vec<u8>,
    stop: &Stop,
) -> Result<Option<RequestHead>, ProxyError> {
    let limit = route.limits.max_header_bytes;
    loop {
        if !input.is_empty() {
            if let Some(head) = request::parse(input.filled(), rules, upstream_head)? {
                return Ok(Some(head));
            }
            if input.len() >= limit {
                return Err(ProxyError::HeadTooLarge);
            }
        }
        let read = async {
            if input.is_empty() {
                // Nothing of a request yet: shutting down closes the connection now.
                tokio::select! {
                    read = input.read_from(stream, limit) => Some(read),
                    () = stop.wait() => None,
                }
            } else {
                Some(input.read_from(stream, limit).await)
            }
        };
        let mut read = std::pin::pin!(read);
        let read = match relay::poll_once(read.as_mut()).await {
            Poll::Ready(read) => read,
            Poll::Pending => {
                let due =
                    *deadline.get_or_insert_with(|| Instant::now() + route.limits.header_timeout);
                tokio::time::timeout_at(due, read)
                    .await
                    .map_err(|_| ProxyError::HeaderTimeout)?
            }
        };
        match read {
            None | Some(Ok(0) | Err(_)) => return Ok(None),
            Some(Ok(_)) => {}
        }
    }
}
