//! `#[handler]`: parse the attribute and the fn, validate, expand — re-emitting the fn on error.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Path, ReturnType, Type};

/// The attribute's options.
struct Args {
    krate: Path,
}

impl syn::parse::Parse for Args {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        let mut krate: Path = syn::parse_quote!(::goomerang);
        let pairs = input.parse_terminated(syn::MetaNameValue::parse, syn::Token![,])?;
        for pair in pairs {
            if pair.path.is_ident("crate") {
                krate = match pair.value {
                    syn::Expr::Path(p) => p.path,
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`crate` takes a path, e.g. `crate = my_app::goomerang`",
                        ));
                    }
                };
            } else {
                return Err(syn::Error::new_spanned(
                    &pair.path,
                    format!(
                        "unknown `handler` option `{}`; the only option is `crate = path`",
                        pair.path.to_token_stream()
                    ),
                ));
            }
        }
        Ok(Args { krate })
    }
}

/// What the return type says the handler is.
enum Kind {
    OneWay,
    Request,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        // Not a function at all: let the compiler's own error stand, plus ours.
        Err(err) => {
            let err = syn::Error::new(err.span(), "#[goomerang::handler] goes on an `async fn`");
            return with_error(err, item);
        }
    };
    let args: Args = match syn::parse2(args) {
        Ok(args) => args,
        Err(err) => return with_error(err, item),
    };
    match validate(&function) {
        Ok(kind) => generate(&args, function, kind),
        // A variadic `fn` is not Rust outside `extern` blocks: the input would
        // only add the compiler's errors to ours, so it is dropped.
        Err(err) if function.sig.variadic.is_some() => err.to_compile_error(),
        Err(err) => with_error(err, item),
    }
}

/// The error, followed by the untouched input so that uses of it do not cascade.
fn with_error(err: syn::Error, item: TokenStream) -> TokenStream {
    let err = err.to_compile_error();
    quote!(#err #item)
}

fn validate(function: &ItemFn) -> syn::Result<Kind> {
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "a goomerang handler must be an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a goomerang handler cannot be generic: the message type must be concrete, \
             since it decides which messages the handler receives",
        ));
    }
    if let Some(receiver) = sig.inputs.iter().find(|a| matches!(a, FnArg::Receiver(_))) {
        return Err(syn::Error::new_spanned(
            receiver,
            "a goomerang handler is a free function; it cannot take `self`",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            variadic,
            "a goomerang handler cannot be variadic",
        ));
    }
    if sig.inputs.len() != 2 {
        let span = if sig.inputs.is_empty() {
            sig.paren_token.span.join()
        } else {
            sig.inputs.span()
        };
        return Err(syn::Error::new(
            span,
            format!(
                "a goomerang handler takes two arguments, `(ctx: goomerang::Context, message: YourMessage)`; found {}",
                sig.inputs.len()
            ),
        ));
    }
    match &sig.output {
        ReturnType::Default => Ok(Kind::OneWay),
        ReturnType::Type(_, ty) if is_unit(ty) => Ok(Kind::OneWay),
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Some(ok) if is_unit(ok) => Ok(Kind::OneWay),
            Some(_) => Ok(Kind::Request),
            None => Err(syn::Error::new_spanned(
                ty,
                "a goomerang handler returns `Result<Reply, goomerang::Status>` (requests) \
                 or nothing / `Result<(), goomerang::Status>` (one-way messages)",
            )),
        },
    }
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// `T` of a `Result<T, E>` (by the last path segment's name, whatever its path).
fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        syn::GenericArgument::Type(ok) if args.args.len() == 2 => Some(ok),
        _ => None,
    }
}

fn generate(args: &Args, function: ItemFn, kind: Kind) -> TokenStream {
    let krate = &args.krate;
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    let name = sig.ident.clone();
    sig.ident = syn::Ident::new("call", Span::call_site());
    let register = match kind {
        Kind::OneWay => quote_spanned!(name.span()=> message),
        Kind::Request => quote_spanned!(name.span()=> request),
    };
    let doc_attrs = attrs.iter().filter(|a| a.path().is_ident("doc"));
    let other_attrs = attrs.iter().filter(|a| !a.path().is_ident("doc"));
    quote! {
        #(#doc_attrs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        impl #name {
            /// The handler function itself.
            #(#other_attrs)*
            #vis #sig #block
        }

        impl #krate::Service for #name {
            fn register(self, router: #krate::Router) -> #krate::Router {
                router.#register(#name::call)
            }
        }
    }
}
