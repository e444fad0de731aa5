//! `Peer`: what typed stubs call through — a `Client` (to its server) or a `Connection` (to that peer).

use std::future::Future;

use crate::conn::connection::Connection;
use crate::error::Error;
use crate::wire::message::{IntoMessage, Payload, Response};
use crate::wire::status::Status;

/// Something one-way messages and requests can be sent through. Generated
/// `*Client` stubs are generic over it, so the same stub calls the server
/// from a [`Client`](crate::Client) and calls one client from the server via its [`Connection`].
pub trait Peer: Clone + Send + Sync + 'static {
    /// Sends a one-way message; see [`Connection::send`].
    fn send<T: Payload>(
        &self,
        message: impl IntoMessage<T>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sends a request and awaits the reply; see [`Connection::request`].
    fn request<Req: Payload, Resp: Payload>(
        &self,
        message: impl IntoMessage<Req>,
    ) -> impl Future<Output = Result<Response<Resp>, Status>> + Send;

    /// Sends a one-way message to a method; see [`Connection::send_method`].
    fn send_method<T: Payload>(
        &self,
        method: &'static str,
        message: impl IntoMessage<T>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Calls a method and awaits the reply; see [`Connection::request_method`].
    fn request_method<Req: Payload, Resp: Payload>(
        &self,
        method: &'static str,
        message: impl IntoMessage<Req>,
    ) -> impl Future<Output = Result<Response<Resp>, Status>> + Send;
}

impl Peer for Connection {
    fn send<T: Payload>(
        &self,
        message: impl IntoMessage<T>,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        Connection::send(self, message)
    }

    fn request<Req: Payload, Resp: Payload>(
        &self,
        message: impl IntoMessage<Req>,
    ) -> impl Future<Output = Result<Response<Resp>, Status>> + Send {
        Connection::request(self, message)
    }

    fn send_method<T: Payload>(
        &self,
        method: &'static str,
        message: impl IntoMessage<T>,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        Connection::send_method(self, method, message)
    }

    fn request_method<Req: Payload, Resp: Payload>(
        &self,
        method: &'static str,
        message: impl IntoMessage<Req>,
    ) -> impl Future<Output = Result<Response<Resp>, Status>> + Send {
        Connection::request_method(self, method, message)
    }
}
