//! Rust names for protobuf names, matching what prost-build generates for the messages.

use heck::{ToSnakeCase, ToUpperCamelCase};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// Makes `ident` a usable Rust identifier the way prost-build does: raw
/// identifiers for keywords, a `_` suffix for the ones that cannot be raw.
pub(crate) fn sanitize(ident: &str) -> String {
    match ident {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => format!("r#{ident}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{ident}_"),
        s if s.starts_with(|c: char| c.is_numeric()) => format!("_{ident}"),
        _ => ident.to_owned(),
    }
}

/// `lower_snake` identifier text (prost-build's `to_snake`).
pub(crate) fn snake(name: &str) -> String {
    sanitize(&name.to_snake_case())
}

/// Method names of traits every type may implement (the prelude's, `Debug`,
/// `Hash`, `Borrow`, `Any`) plus the stub's own methods. An RPC named like one
/// of them would shadow it on a stub (`stock.clone()` calling the RPC) or make
/// calls ambiguous on a server type that also implements the trait (E0034),
/// so its Rust name gets a `_` suffix: RPC `Clone` is `clone_`.
const TAKEN: &[&str] = &[
    "as_mut",
    "as_ref",
    "borrow",
    "borrow_mut",
    "clamp",
    "clone",
    "clone_from",
    "clone_into",
    "cmp",
    "default",
    "drop",
    "eq",
    "extend",
    "fmt",
    "from",
    "from_iter",
    "ge",
    "gt",
    "hash",
    "into",
    "into_future",
    "into_iter",
    "into_peer",
    "le",
    "lt",
    "max",
    "min",
    "ne",
    "new",
    "next",
    "partial_cmp",
    "peer",
    "poll",
    "to_owned",
    "to_string",
    "try_from",
    "try_into",
    "type_id",
];

/// The Rust names of an RPC: the trait/stub method, and the stub's form that
/// returns the whole `Response` (`<name>_full`). Keywords become raw
/// identifiers (`r#type`), names in [`TAKEN`] get a `_` suffix (`clone_`).
pub(crate) fn method(name: &str) -> (String, String) {
    let snake = name.to_snake_case();
    let plain = if TAKEN.contains(&snake.as_str()) {
        format!("{snake}_")
    } else {
        sanitize(&snake)
    };
    let base = snake.trim_start_matches('_');
    let full = if base.is_empty() || base.starts_with(|c: char| c.is_numeric()) {
        format!("_{base}_full")
    } else {
        format!("{base}_full")
    };
    (plain, full)
}

/// `UpperCamel` identifier text (prost-build's `to_upper_camel`).
pub(crate) fn upper_camel(name: &str) -> String {
    sanitize(&name.to_upper_camel_case())
}

/// An identifier token from sanitized text (handles the `r#` prefix).
pub(crate) fn ident(text: &str) -> proc_macro2::Ident {
    match text.strip_prefix("r#") {
        Some(raw) => proc_macro2::Ident::new_raw(raw, proc_macro2::Span::call_site()),
        None => format_ident!("{}", text),
    }
}

/// The path, from inside a generated `<svc>_server`/`<svc>_client` module
/// of package `package`, to the prost type for fully-qualified protobuf name
/// `full_name` (e.g. `chat.v1.Envelope.Part`). `nesting` tells how many
/// trailing components of `full_name` are message names (1 for a top-level message).
pub(crate) fn type_path(package: &str, full_name: &str, nesting: usize) -> TokenStream {
    if full_name == "google.protobuf.Empty" {
        return quote!(());
    }
    if let Some(wkt) = full_name.strip_prefix("google.protobuf.")
        && !wkt.contains('.')
        && package != "google.protobuf"
    {
        let name = ident(&upper_camel(wkt));
        return quote!(::prost_types::#name);
    }
    let local: Vec<&str> = package.split('.').filter(|s| !s.is_empty()).collect();
    let target: Vec<&str> = full_name.split('.').collect();
    let (modules, type_name) = target.split_at(target.len() - 1);
    let type_package_len = target.len() - nesting;
    let mut common = 0;
    while common < local.len() && common < type_package_len && local[common] == modules[common] {
        common += 1;
    }
    // One `super` leaves the generated module; one more per package level not shared.
    let supers = (0..=(local.len() - common)).map(|_| quote!(super));
    let downs = modules[common..].iter().map(|m| ident(&snake(m)));
    let name = ident(&upper_camel(type_name[0]));
    quote!(#(#supers::)* #(#downs::)* #name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(package: &str, full: &str, nesting: usize) -> String {
        type_path(package, full, nesting)
            .to_string()
            .replace(' ', "")
    }

    #[test]
    fn same_package() {
        assert_eq!(path("chat.v1", "chat.v1.Hello", 1), "super::Hello");
    }

    #[test]
    fn no_package() {
        assert_eq!(path("", "Hello", 1), "super::Hello");
    }

    #[test]
    fn sibling_and_nested_packages() {
        assert_eq!(path("a.b.c", "a.x.Msg", 1), "super::super::super::x::Msg");
        assert_eq!(path("a", "a.b.Msg", 1), "super::b::Msg");
    }

    #[test]
    fn nested_messages() {
        assert_eq!(
            path("chat.v1", "chat.v1.Outer.Inner", 2),
            "super::outer::Inner"
        );
    }

    #[test]
    fn well_known_types() {
        assert_eq!(path("chat.v1", "google.protobuf.Empty", 1), "()");
        assert_eq!(
            path("chat.v1", "google.protobuf.Timestamp", 1),
            "::prost_types::Timestamp"
        );
    }

    #[test]
    fn method_names_keep_trait_methods_usable() {
        assert_eq!(method("Clone"), ("clone_".into(), "clone_full".into()));
        assert_eq!(method("Drop"), ("drop_".into(), "drop_full".into()));
        assert_eq!(method("Type"), ("r#type".into(), "type_full".into()));
        assert_eq!(method("Self"), ("self_".into(), "self_full".into()));
        assert_eq!(method("New"), ("new_".into(), "new_full".into()));
        assert_eq!(
            method("SayHello"),
            ("say_hello".into(), "say_hello_full".into())
        );
    }

    #[test]
    fn keywords() {
        assert_eq!(snake("type"), "r#type");
        assert_eq!(snake("Self"), "self_");
        assert_eq!(upper_camel("Self"), "Self_");
        assert_eq!(snake("Clone"), "clone");
    }
}
