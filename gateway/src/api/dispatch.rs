//! How a port hands its inference calls past its router. The HTTP and gRPC ports each serve a dispatcher: an
//! inference call goes straight to its handler, every other call to the port's router as before. Why: the routers
//! (axum's, and tonic's, which is one) box the route's service future and the handler's future on every call,
//! copying kilobytes of request state into fresh memory, which cost the gateway more L1 data misses per request
//! than the whole of a bare server's work. The dispatchers are generic over the handlers only because an `async`
//! future's type has no name to write down.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use tower::Service;
use tower::util::MapResponse;
use tower::util::future::MapResponseFuture;

/// The HTTP inference routes, which [`infer_target`] matches without the router.
pub const INFER_ROUTE: &str = "/v2/models/{model}/infer";
pub const INFER_VERSION_ROUTE: &str = "/v2/models/{model}/versions/{version}/infer";

/// The HTTP port's service: `handler(state, model, version, request)` for the requests [`infer_target`] takes,
/// the router for the rest.
#[derive(Clone)]
pub struct HttpApp<S, H> {
    pub router: Router,
    pub state: S,
    pub handler: H,
}

impl<S, H, F> Service<hyper::Request<Incoming>> for HttpApp<S, H>
where
    S: Clone,
    H: Fn(S, String, Option<String>, Request) -> F,
    F: Future<Output = Response>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Dispatch<F, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<Incoming>) -> Self::Future {
        match infer_target(req.method(), req.uri().path(), req.headers()) {
            Some((model, version)) => Dispatch::Direct {
                fut: (self.handler)(
                    self.state.clone(),
                    model.to_owned(),
                    version.map(str::to_owned),
                    req.map(axum::body::Body::new),
                ),
            },
            None => Dispatch::Routed { fut: self.router.call(req) },
        }
    }
}

/// The model and version of `POST /v2/models/{model}[/versions/{version}]/infer`, when the router would add nothing
/// to the request: no percent-escapes to decode in the names, no `Content-Encoding` to inflate. Everything else,
/// including every malformed or non-POST request on these paths, is the router's, so it is answered as before.
pub fn infer_target<'a>(method: &Method, path: &'a str, headers: &HeaderMap) -> Option<(&'a str, Option<&'a str>)> {
    if method != Method::POST || headers.contains_key(header::CONTENT_ENCODING) {
        return None;
    }
    let names = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    if names.contains('%') {
        return None;
    }
    let (model, version) = match names.split_once('/') {
        None => (names, None),
        Some((model, rest)) => (model, Some(rest.strip_prefix("versions/")?)),
    };
    // An empty name is the router's match too (answered 404 by the handler), so it is taken here the same way.
    let segment = |s: &str| !s.contains('/');
    (segment(model) && version.is_none_or(segment)).then_some((model, version))
}

/// The gRPC method that goes straight to its handler.
pub const MODEL_INFER_PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

type GrpcResponse = http::Response<tonic::body::Body>;
type ToTonic = fn(Response) -> GrpcResponse;

/// The gRPC port's service: `infer(request)` for `ModelInfer`, tonic's routes (as the axum router they are) for
/// every other call.
#[derive(Clone)]
pub struct GrpcApp<I> {
    routes: MapResponse<Router, ToTonic>,
    infer: I,
}

impl<I> GrpcApp<I> {
    pub fn new(routes: tonic::service::Routes, infer: I) -> Self {
        let to_tonic: ToTonic = |r| r.map(tonic::body::Body::new);
        Self { routes: MapResponse::new(routes.prepare().into_axum_router(), to_tonic), infer }
    }
}

impl<I, F> Service<http::Request<tonic::body::Body>> for GrpcApp<I>
where
    I: Fn(http::Request<tonic::body::Body>) -> F,
    F: Future<Output = GrpcResponse>,
{
    type Response = GrpcResponse;
    type Error = Infallible;
    type Future = Dispatch<Pin<Box<F>>, MapResponseFuture<RouteFuture<Infallible>, ToTonic>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() == MODEL_INFER_PATH {
            // Boxed once here: tonic's server stack (its timeout, concurrency limit and boxing layers) moves the
            // future it is given several times, and a pointer moves cheaper than the call's kilobytes of state
            // (callgrind: 98,558 -> 98,105 instructions and 1,883 -> 1,871 L1 data misses per request).
            Dispatch::Direct { fut: Box::pin((self.infer)(req)) }
        } else {
            Dispatch::Routed { fut: self.routes.call(req) }
        }
    }
}

pin_project_lite::pin_project! {
    /// One call's future: its handler's, or the router's. Held in place by the connection (no box of its own).
    #[project = DispatchProj]
    pub enum Dispatch<F, R> {
        Direct { #[pin] fut: F },
        Routed { #[pin] fut: R },
    }
}

impl<F, R, T> Future for Dispatch<F, R>
where
    F: Future<Output = T>,
    R: Future<Output = Result<T, Infallible>>,
{
    type Output = Result<T, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DispatchProj::Direct { fut } => fut.poll(cx).map(Ok),
            DispatchProj::Routed { fut } => fut.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Path;
    use axum::http::{HeaderValue, StatusCode};
    use axum::routing::{get, post};
    use proptest::prelude::*;
    use tower::ServiceExt;

    /// What axum's router makes of a request on the inference routes: `Some((model, version))` when one of them
    /// takes it, with the names as its `Path` extractor decodes them.
    fn routed(rt: &tokio::runtime::Runtime, method: &Method, path: &str) -> Option<(String, Option<String>)> {
        let router: Router = Router::new()
            .route(INFER_ROUTE, post(|Path(m): Path<String>| async move { m }))
            .route(INFER_VERSION_ROUTE, post(|Path((m, v)): Path<(String, String)>| async move { format!("{m}\n{v}") }))
            // Neighbours in the port's router whose static segments the matcher tries first.
            .route("/v2/models/stats", get(|| async { StatusCode::IM_A_TEAPOT }))
            .route("/v2/models/{model}/versions/{version}", get(|| async { StatusCode::IM_A_TEAPOT }))
            .route("/v2/models/{model}/stats", get(|| async { StatusCode::IM_A_TEAPOT }));
        let req = axum::http::Request::builder().method(method).uri(path).body(Body::empty()).ok()?;
        let resp = rt.block_on(router.oneshot(req)).ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = rt.block_on(axum::body::to_bytes(resp.into_body(), 1 << 16)).ok()?;
        let text = String::from_utf8(body.to_vec()).ok()?;
        Some(match text.split_once('\n') {
            Some((m, v)) => (m.to_owned(), Some(v.to_owned())),
            None => (text, None),
        })
    }

    fn target(method: &Method, path: &str, encoded: bool) -> Option<(String, Option<String>)> {
        let mut headers = axum::http::HeaderMap::new();
        if encoded {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        infer_target(method, path, &headers).map(|(m, v)| (m.to_owned(), v.map(str::to_owned)))
    }

    #[test]
    fn the_bypass_takes_the_plain_inference_requests_and_nothing_else() {
        let post = Method::POST;
        assert_eq!(target(&post, "/v2/models/digits/infer", false), Some(("digits".into(), None)));
        assert_eq!(
            target(&post, "/v2/models/breast-cancer/versions/2/infer", false),
            Some(("breast-cancer".into(), Some("2".into())))
        );
        for path in [
            "/v2/models/a%2Db/infer",
            "/v2/models/a/versions/2/3/infer",
            "/v2/models/a/infer/",
            "/v2/models/a/version/2/infer",
            "/v2/models/infer",
        ] {
            assert_eq!(target(&post, path, false), None, "{path}");
        }
        assert_eq!(target(&post, "/v2/models//infer", false), Some((String::new(), None)), "as the router matches it");
        assert_eq!(target(&post, "/v2/models/digits/infer", true), None, "a compressed body is inflated by the router");
        assert_eq!(target(&Method::GET, "/v2/models/digits/infer", false), None, "the router answers 405");
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("versions".to_owned()),
            Just("infer".to_owned()),
            Just("models".to_owned()),
            Just("stats".to_owned()),
            Just("ready".to_owned()),
            Just("config".to_owned()),
            "[a-zA-Z0-9._~%-]{1,6}",
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        let segments = prop::collection::vec(segment(), 0..5);
        (prop_oneof![Just("/v2/models/"), Just("/v2/"), Just("/")], segments).prop_map(|(prefix, s)| {
            let mut p = format!("{prefix}{}", s.join("/"));
            if p.len() % 3 != 0 {
                p.push_str("/infer");
            }
            p
        })
    }

    proptest! {
        /// Whatever the path, the bypass takes a request only where the router's inference routes would, with the
        /// same names, and takes every such request that has no escapes to decode.
        #[test]
        fn the_bypass_agrees_with_the_router(path in path(), get in any::<bool>()) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let method = if get { Method::GET } else { Method::POST };
            let Some(by_router) = routed(&rt, &method, &path) else {
                prop_assert_eq!(target(&method, &path, false), None);
                return Ok(());
            };
            if path.contains('%') {
                prop_assert_eq!(target(&method, &path, false), None);
            } else {
                prop_assert_eq!(target(&method, &path, false), Some(by_router));
            }
        }
    }
}
