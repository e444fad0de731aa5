//! Emits `<svc>_server`: the trait a service implementation fills in, and the wrapper that registers it.

use heck::{ToSnakeCase, ToUpperCamelCase};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::docs;
use crate::model::{Service, Side};
use crate::names::{ident, type_path, upper_camel};

pub(crate) fn module(service: &Service, rt: &TokenStream) -> TokenStream {
    let module = format_ident!("{}_server", service.name.to_snake_case());
    let trait_name = ident(&upper_camel(&service.name));
    let wrapper = format_ident!("{}Server", service.name.to_upper_camel_case());
    let full_name = &service.full_name;
    let (implementor, builder) = match service.side {
        Side::Server => ("the server", "Server::builder()"),
        Side::Client => ("clients", "Client::builder()"),
    };
    let module_doc = format!(
        " The side that implements `{full_name}` ({implementor}): implement [`{trait_name}`]({module}::{trait_name}) and register it with `{builder}.service({wrapper}::new(..))`."
    );
    let trait_docs = docs::attrs(&service.docs);
    let wrapper_doc =
        format!(" Registers a [`{trait_name}`] implementation with a goomerang builder.");
    let trait_methods = service.methods.iter().map(|m| {
        let name = ident(&m.rust_name);
        let input = type_path(&service.package, &m.input.full_name, m.input.nesting);
        let docs = docs::attrs(&m.docs);
        let deprecated = m.deprecated.then(|| quote!(#[deprecated]));
        let (param, output) = if m.one_way {
            (quote!(message), quote!(()))
        } else {
            let output = type_path(&service.package, &m.output.full_name, m.output.nesting);
            (quote!(request), output)
        };
        quote! {
            #docs
            #deprecated
            fn #name(
                &self,
                ctx: #rt::codegen::Context,
                #param: #input,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<#output, #rt::codegen::Status>,
            > + ::core::marker::Send;
        }
    });
    let registrations = service.methods.iter().map(|m| {
        let name = ident(&m.rust_name);
        let input = type_path(&service.package, &m.input.full_name, m.input.nesting);
        let path = &m.path;
        let register = if m.one_way {
            format_ident!("one_way_method")
        } else {
            format_ident!("method")
        };
        quote! {
            let router = {
                let inner = ::std::sync::Arc::clone(&inner);
                router.#register(#path, move |ctx: #rt::codegen::Context, message: #input| {
                    let inner = ::std::sync::Arc::clone(&inner);
                    async move { <T as #trait_name>::#name(&inner, ctx, message).await }
                })
            };
        }
    });
    let service_doc = format!(
        " `{full_name}`: the scope that `middleware_for` takes to wrap every method of this service."
    );
    quote! {
        #[doc = #module_doc]
        pub mod #module {
            #[doc = #service_doc]
            pub const SERVICE: &str = #full_name;

            #trait_docs
            pub trait #trait_name: ::core::marker::Send + ::core::marker::Sync + 'static {
                #(#trait_methods)*
            }

            #[doc = #wrapper_doc]
            #[derive(Debug)]
            pub struct #wrapper<T> {
                inner: ::std::sync::Arc<T>,
            }

            impl<T: #trait_name> #wrapper<T> {
                /// Wraps an implementation.
                pub fn new(inner: T) -> Self {
                    Self::from_arc(::std::sync::Arc::new(inner))
                }

                /// Wraps an implementation that is shared elsewhere too.
                pub fn from_arc(inner: ::std::sync::Arc<T>) -> Self {
                    Self { inner }
                }
            }

            impl<T> ::core::clone::Clone for #wrapper<T> {
                fn clone(&self) -> Self {
                    Self { inner: ::std::sync::Arc::clone(&self.inner) }
                }
            }

            impl<T: #trait_name> #rt::codegen::Service for #wrapper<T> {
                #[allow(deprecated)]
                fn register(self, router: #rt::codegen::Router) -> #rt::codegen::Router {
                    let inner = self.inner;
                    #(#registrations)*
                    let _ = &inner;
                    router
                }
            }
        }
    }
}
