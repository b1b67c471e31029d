//! JSON-RPC 2.0 over HTTP POST, shared by the devnet bundler and the gas manager emulator.
//!
//! The envelope rules live here once so both services answer bad input the same way and never
//! stop serving because of it: malformed JSON is -32700, a body that is not a request object
//! (or a wrong `jsonrpc` / `method` / `id`) is -32600, an over-size body is HTTP 413 with a
//! -32600 body, and an unknown method is -32601 (each service lists what it serves). Batches
//! (a JSON array of requests) are answered element by element. Every request is logged at debug
//! with its id and method, every error reply with its code and message.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use attestmesh_types::jsonrpc::{ErrorObject, Response, codes};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::debug;

/// `tracing` target of the request log of both services (the `service` field says which).
pub const LOG_TARGET: &str = "attestmesh::devnet::jsonrpc";

/// Default cap on a request body. A UserOperation with a registration proof is a few KiB; a
/// megabyte leaves room for batches while keeping a runaway client from exhausting memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// The outcome of one method call.
pub(crate) type MethodResult = Result<Value, ErrorObject>;

/// One JSON-RPC service: a name for logs and a dispatcher from method name to result.
pub(crate) trait Methods: Send + Sync + 'static {
    /// Names the service in logs ("bundler", "gas manager").
    const SERVICE: &'static str;

    /// Answers `method` with `params` (always an array or an object; absent params are `[]`).
    fn call(&self, method: &str, params: Value) -> impl Future<Output = MethodResult> + Send;
}

struct Served<M> {
    methods: Arc<M>,
    max_body_bytes: usize,
}

/// The router of a service: POST on any path (Alchemy-style URLs carry a path, alto serves `/`).
pub(crate) fn router<M: Methods>(methods: Arc<M>, max_body_bytes: usize) -> Router {
    let served = Arc::new(Served {
        methods,
        max_body_bytes,
    });
    Router::new()
        .fallback(handle::<M>)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(served)
}

async fn handle<M: Methods>(
    State(served): State<Arc<Served<M>>>,
    method: Method,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    if method != Method::POST {
        let error = invalid_request(format!(
            "HTTP {method} is not served: send a JSON-RPC 2.0 request with HTTP POST"
        ));
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            axum::Json(Response::err(Value::Null, error)),
        )
            .into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            debug!(target: LOG_TARGET, service = M::SERVICE, limit = served.max_body_bytes, "request body too large");
            let error = invalid_request(format!(
                "the request body is larger than {} bytes; send smaller requests",
                served.max_body_bytes
            ));
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(Response::err(Value::Null, error)),
            )
                .into_response();
        }
        Err(rejection) => {
            let error = invalid_request(format!("cannot read the request body: {rejection}"));
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(Response::err(Value::Null, error)),
            )
                .into_response();
        }
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            debug!(target: LOG_TARGET, service = M::SERVICE, %err, "unparsable request");
            let error = ErrorObject::new(
                codes::PARSE_ERROR,
                format!("the request body is not valid JSON: {err}"),
            );
            return axum::Json(Response::err(Value::Null, error)).into_response();
        }
    };
    match request {
        Value::Array(batch) if batch.is_empty() => {
            let error = invalid_request("an empty batch is not a request");
            axum::Json(Response::err(Value::Null, error)).into_response()
        }
        Value::Array(batch) => {
            let mut replies = Vec::with_capacity(batch.len());
            for request in batch {
                replies.push(answer(served.methods.as_ref(), request).await);
            }
            axum::Json(replies).into_response()
        }
        request => axum::Json(answer(served.methods.as_ref(), request).await).into_response(),
    }
}

/// Checks the envelope of one request, calls the method and wraps the outcome.
async fn answer<M: Methods>(methods: &M, request: Value) -> Response {
    let Value::Object(mut request) = request else {
        return Response::err(
            Value::Null,
            invalid_request("a JSON-RPC request must be a JSON object"),
        );
    };
    let id = request.remove("id").unwrap_or(Value::Null);
    if !matches!(id, Value::Null | Value::Number(_) | Value::String(_)) {
        return Response::err(
            Value::Null,
            invalid_request("\"id\" must be a number, a string or null"),
        );
    }
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Response::err(id, invalid_request("\"jsonrpc\" must be \"2.0\""));
    }
    let Some(Value::String(method)) = request.remove("method") else {
        return Response::err(
            id,
            invalid_request("\"method\" must be a string naming the method"),
        );
    };
    let params = match request.remove("params") {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(params @ (Value::Array(_) | Value::Object(_))) => params,
        Some(_) => {
            return Response::err(
                id,
                invalid_request("\"params\" must be an array or an object"),
            );
        }
    };
    debug!(target: LOG_TARGET, service = M::SERVICE, %id, %method, "request");
    let started = Instant::now();
    let outcome = methods.call(&method, params).await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(result) => {
            debug!(target: LOG_TARGET, service = M::SERVICE, %id, %method, elapsed_ms, "result");
            Response::ok(id, result)
        }
        Err(error) => {
            debug!(target: LOG_TARGET, service = M::SERVICE, %id, %method, code = error.code, message = %error.message, elapsed_ms, "error reply");
            Response::err(id, error)
        }
    }
}

/// -32600: the request is not a valid JSON-RPC request.
pub(crate) fn invalid_request(message: impl Into<String>) -> ErrorObject {
    ErrorObject::new(codes::INVALID_REQUEST, message)
}

/// -32602: the params are not what the method takes.
pub(crate) fn invalid_params(message: impl Into<String>) -> ErrorObject {
    ErrorObject::new(codes::INVALID_PARAMS, message)
}

/// -32603: the service could not do its work (a dependency failed); the message says which.
pub(crate) fn internal_error(message: impl Into<String>) -> ErrorObject {
    ErrorObject::new(codes::INTERNAL_ERROR, message)
}

/// -32601, listing what the service does serve.
pub(crate) fn method_not_found(service: &str, method: &str, served: &[&str]) -> ErrorObject {
    ErrorObject::new(
        codes::METHOD_NOT_FOUND,
        format!(
            "the {service} does not serve {method:?}; it serves {}",
            served.join(", ")
        ),
    )
}

/// Positional parameter `index`, called `name` in errors, decoded as `T`. A decoding failure
/// names the parameter and the field inside it (e.g. `params[0] (userOperation) field nonce`).
pub(crate) fn param<T: DeserializeOwned>(
    params: &Value,
    index: usize,
    name: &str,
) -> Result<T, ErrorObject> {
    let value = positional(params, index, name)?
        .ok_or_else(|| invalid_params(format!("params[{index}] ({name}) is missing")))?;
    decode(value, index, name)
}

fn positional<'a>(
    params: &'a Value,
    index: usize,
    name: &str,
) -> Result<Option<&'a Value>, ErrorObject> {
    match params {
        Value::Array(items) => Ok(items.get(index)),
        _ => Err(invalid_params(format!(
            "params must be a positional array (params[{index}] is {name}), not an object"
        ))),
    }
}

fn decode<T: DeserializeOwned>(value: &Value, index: usize, name: &str) -> Result<T, ErrorObject> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            invalid_params(format!("params[{index}] ({name}): {inner}"))
        } else {
            invalid_params(format!("params[{index}] ({name}) field {path}: {inner}"))
        }
    })
}

/// Fails with -32602 when more than `max` params were given (a client sending extra params
/// most likely speaks another version of the method).
pub(crate) fn at_most(params: &Value, max: usize, usage: &str) -> Result<(), ErrorObject> {
    match params {
        Value::Array(items) if items.len() > max => Err(invalid_params(format!(
            "{} params given, at most {max} are taken: {usage}",
            items.len()
        ))),
        _ => Ok(()),
    }
}

pub use attestmesh_service::http::{ServeError, Server as HttpServer};
