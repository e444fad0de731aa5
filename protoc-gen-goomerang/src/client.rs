//! Emits `<svc>_client`: a typed stub that calls a service over a `Client` or a server-side `Connection`.

use heck::{ToSnakeCase, ToUpperCamelCase};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::docs;
use crate::model::{Service, Side};
use crate::names::{ident, type_path};

pub(crate) fn module(service: &Service, rt: &TokenStream) -> TokenStream {
    let module = format_ident!("{}_client", service.name.to_snake_case());
    let stub = format_ident!("{}Client", service.name.to_upper_camel_case());
    let full_name = &service.full_name;
    let (default_peer, caller) = match service.side {
        Side::Server => (quote!(#rt::codegen::Client), "clients call the server"),
        Side::Client => (
            quote!(#rt::codegen::Connection),
            "the server calls one client's connection",
        ),
    };
    let module_doc = format!(" Typed calls to `{full_name}` ({caller}).");
    let stub_doc = format!(
        " Calls `{full_name}` over any [`Peer`]({rt}::codegen::Peer): a `Client` (to its server) or a server-side `Connection` (to that client).",
        rt = rt.to_string().replace(' ', "")
    );
    let service_docs = docs::attrs(&service.docs);
    let methods = service.methods.iter().map(|m| {
        let name = ident(&m.rust_name);
        let path = &m.path;
        let input = type_path(&service.package, &m.input.full_name, m.input.nesting);
        let docs = docs::attrs(&m.docs);
        // A blank line between the proto's comment and ours, when there is one.
        let docs = if m.docs.is_empty() {
            docs
        } else {
            quote!(#docs #[doc = ""])
        };
        let deprecated = m.deprecated.then(|| quote!(#[deprecated]));
        if m.one_way {
            let calls = format!(" Sends `{path}`; one-way: returns once the message is queued.");
            quote! {
                #docs
                #[doc = #calls]
                #deprecated
                pub async fn #name(
                    &self,
                    message: impl #rt::codegen::IntoMessage<#input>,
                ) -> ::core::result::Result<(), #rt::codegen::Status> {
                    #rt::codegen::Peer::send_method(&self.peer, #path, message)
                        .await
                        .map_err(::core::convert::From::from)
                }
            }
        } else {
            let output = type_path(&service.package, &m.output.full_name, m.output.nesting);
            let full = ident(&m.rust_full_name);
            let calls = format!(" Calls `{path}` and returns the reply's payload.");
            let full_doc = format!(
                " Calls `{path}` and returns the whole reply: payload, headers and metadata. Takes a bare request or a `Message` (headers, timeout)."
            );
            quote! {
                #docs
                #[doc = #calls]
                #deprecated
                pub async fn #name(
                    &self,
                    request: impl #rt::codegen::IntoMessage<#input>,
                ) -> ::core::result::Result<#output, #rt::codegen::Status> {
                    #rt::codegen::Peer::request_method::<#input, #output>(&self.peer, #path, request)
                        .await
                        .map(#rt::codegen::Response::into_inner)
                }

                #[doc = #full_doc]
                #deprecated
                pub async fn #full(
                    &self,
                    request: impl #rt::codegen::IntoMessage<#input>,
                ) -> ::core::result::Result<#rt::codegen::Response<#output>, #rt::codegen::Status> {
                    #rt::codegen::Peer::request_method::<#input, #output>(&self.peer, #path, request)
                        .await
                }
            }
        }
    });
    quote! {
        #[doc = #module_doc]
        pub mod #module {
            #service_docs
            #[doc = ""]
            #[doc = #stub_doc]
            #[derive(Debug, Clone)]
            pub struct #stub<P = #default_peer> {
                peer: P,
            }

            impl<P: #rt::codegen::Peer> #stub<P> {
                /// A stub calling through `peer`.
                pub fn new(peer: P) -> Self {
                    Self { peer }
                }

                /// The peer the stub calls through.
                pub fn peer(&self) -> &P {
                    &self.peer
                }

                /// Gives the peer back.
                pub fn into_peer(self) -> P {
                    self.peer
                }

                #(#methods)*
            }
        }
    }
}
