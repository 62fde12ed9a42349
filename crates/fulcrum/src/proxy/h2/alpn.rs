//! `protocol = "auto"`: each backend of the pool is spoken to in the protocol it chose by
//! ALPN (`h2` or `http/1.1`) on a TLS connection. What a worker already holds says it: an
//! open HTTP/2 connection to the backend, or an idle HTTP/1.1 one. Otherwise the attempt
//! connects, and the answer decides how this request goes and how the connection is kept.

use tokio::time::Instant;

use super::upstream::ToHttp2;
use crate::pool::LiveBackend;
use crate::proxy::h1::downstream::Downstream;
use crate::proxy::h1::exchange::{self, HttpContext, Next};
use crate::proxy::marks::Marks;
use crate::proxy::pipeline::{self, Attempt};
use crate::proxy::upstream;

/// One request of `client` on its way to backends that choose their protocol.
pub(crate) struct ByAlpn<'a, D> {
    pub ctx: &'a HttpContext,
    pub client: &'a mut D,
}

impl<D: Downstream> pipeline::Exchange for ByAlpn<'_, D> {
    type Done = Next;

    fn marks(&self) -> &Marks {
        &self.client.request().marks
    }

    async fn attempt(&mut self, backend: &LiveBackend, picked: Instant) -> Attempt<Next> {
        let ctx = self.ctx;
        let settings = ctx.pool.settings();
        let tls = ctx.backend_tls.as_deref();
        let key = (backend.addr, tls.map_or(0, |t| t.id));
        if ctx.h2_upstreams.speaks_h2(key) {
            let mut h2 = ToHttp2 {
                ctx,
                client: &mut *self.client,
            };
            return pipeline::Exchange::attempt(&mut h2, backend, picked).await;
        }
        if let Some(pooled) = ctx.upstreams.checkout(key.0, key.1, picked) {
            return exchange::over_http1(ctx, backend, self.client, picked, Some(pooled)).await;
        }
        let io = match upstream::connect(backend.addr, settings.connect_timeout, tls, &[]).await {
            Ok(io) => io,
            Err(e) => return Attempt::NotSent(e.to_string()),
        };
        if io.alpn() != Some(b"h2") {
            return exchange::over_new_http1(ctx, backend, self.client, io).await;
        }
        let adopted = ctx
            .h2_upstreams
            .adopt(
                key,
                io,
                settings.connect_timeout,
                settings.upstream_idle_timeout,
            )
            .await;
        if let Err(error) = adopted {
            return Attempt::NotSent(error);
        }
        let mut h2 = ToHttp2 {
            ctx,
            client: &mut *self.client,
        };
        pipeline::Exchange::attempt(&mut h2, backend, picked).await
    }
}
