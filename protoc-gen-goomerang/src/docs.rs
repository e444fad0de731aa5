//! Proto comments to rustdoc: looked up by descriptor path, made safe for rustdoc.

use std::collections::HashMap;

use proc_macro2::TokenStream;
use prost_reflect::prost_types::FileDescriptorProto;
use quote::quote;

/// Leading comments of one file, by source-location path.
pub(crate) struct Comments(HashMap<Vec<i32>, String>);

impl Comments {
    pub(crate) fn new(file: &FileDescriptorProto) -> Comments {
        let map = file
            .source_code_info
            .iter()
            .flat_map(|info| &info.location)
            .filter_map(|loc| {
                loc.leading_comments
                    .as_ref()
                    .map(|c| (loc.path.clone(), c.clone()))
            })
            .collect();
        Comments(map)
    }

    /// The comment lines at `path`, sanitized for rustdoc.
    pub(crate) fn get(&self, path: &[i32]) -> Vec<String> {
        self.0.get(path).map(|c| sanitize(c)).unwrap_or_default()
    }
}

/// Turns a proto comment into rustdoc lines: brackets escaped (they would be
/// intra-doc links), indentation that would start a code block removed, and
/// code fences marked `text` so rustdoc never compiles them as doctests.
fn sanitize(comment: &str) -> Vec<String> {
    let mut in_fence = false;
    let mut lines: Vec<String> = comment
        .lines()
        .map(|line| {
            let line = line.trim();
            if line.starts_with("```") {
                in_fence = !in_fence;
                return if in_fence { "```text" } else { "```" }.to_owned();
            }
            if in_fence {
                line.to_owned()
            } else {
                line.replace('[', "\\[").replace(']', "\\]")
            }
        })
        .collect();
    if in_fence {
        lines.push("```".to_owned());
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// `#[doc = "..."]` attributes, one per line.
pub(crate) fn attrs(lines: &[String]) -> TokenStream {
    let lines = lines.iter().map(|l| format!(" {l}"));
    quote!(#(#[doc = #lines])*)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_indents_and_fences_are_made_safe() {
        let lines = sanitize(" Sends [a] message.\n     indented\n ```\n let x = 1;\n ```\n");
        assert_eq!(
            lines,
            [
                "Sends \\[a\\] message.",
                "indented",
                "```text",
                "let x = 1;",
                "```"
            ]
        );
    }
}
