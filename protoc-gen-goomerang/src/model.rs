//! The service model: what the emitters need, read from a descriptor pool (extension options included).

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{DescriptorPool, MessageDescriptor, MethodDescriptor, Value};

use crate::Error;
use crate::docs;

/// Which side implements a service (`goomerang.v1.side`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

#[derive(Debug)]
pub(crate) struct Service {
    /// The protobuf name, e.g. `Greeter`.
    pub(crate) name: String,
    /// e.g. `helloworld.v1.Greeter`.
    pub(crate) full_name: String,
    pub(crate) package: String,
    /// The .proto file declaring it, e.g. `chat/v1/chat.proto`.
    pub(crate) file: String,
    pub(crate) side: Side,
    pub(crate) docs: Vec<String>,
    pub(crate) methods: Vec<Method>,
}

#[derive(Debug)]
pub(crate) struct Method {
    /// The protobuf name, e.g. `SayHello`.
    pub(crate) name: String,
    /// What the wire calls it: `package.Service/Method`.
    pub(crate) path: String,
    /// The Rust name of the trait and stub methods (see [`crate::names::method`]).
    pub(crate) rust_name: String,
    /// The Rust name of the stub's form returning the whole `Response`.
    pub(crate) rust_full_name: String,
    pub(crate) input: TypeRef,
    pub(crate) output: TypeRef,
    pub(crate) one_way: bool,
    pub(crate) deprecated: bool,
    pub(crate) docs: Vec<String>,
}

/// A message type: its full name and how many trailing name components are messages.
#[derive(Debug, Clone)]
pub(crate) struct TypeRef {
    pub(crate) full_name: String,
    pub(crate) nesting: usize,
    /// The .proto file declaring it.
    pub(crate) file: String,
}

impl TypeRef {
    fn new(message: &MessageDescriptor) -> TypeRef {
        let mut nesting = 1;
        let mut parent = message.parent_message();
        while let Some(p) = parent {
            nesting += 1;
            parent = p.parent_message();
        }
        TypeRef {
            full_name: message.full_name().to_owned(),
            nesting,
            file: message.parent_file().name().to_owned(),
        }
    }
}

/// The services of `files` grouped by protobuf package (in name order), as
/// prost-build groups messages: one output file per package, including the
/// packages that have no services. Every rule broken anywhere is reported at once.
pub(crate) fn services_by_package(
    pool: &DescriptorPool,
    files: &[String],
) -> Result<BTreeMap<String, Vec<Service>>, Error> {
    let side_ext = pool.get_extension_by_name("goomerang.v1.side");
    let one_way_ext = pool.get_extension_by_name("goomerang.v1.one_way");
    let mut out: BTreeMap<String, Vec<Service>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file_name in files {
        let file = pool
            .get_file_by_name(file_name)
            .ok_or_else(|| Error::Input(format!("file {file_name} is not in the request")))?;
        out.entry(file.package_name().to_owned()).or_default();
        let comments = docs::Comments::new(file.file_descriptor_proto());
        for service in file.services() {
            let side = match side_ext
                .as_ref()
                .map(|ext| service.options().get_extension(ext).into_owned())
            {
                Some(Value::EnumNumber(2)) => Side::Client,
                _ => Side::Server,
            };
            let methods: Vec<Method> = service
                .methods()
                .filter_map(|m| {
                    method(&m, one_way_ext.as_ref(), &comments)
                        .map_err(|problem| problems.push(problem))
                        .ok()
                })
                .collect();
            problems.extend(rust_name_clashes(service.full_name(), &methods));
            out.entry(service.package_name().to_owned())
                .or_default()
                .push(Service {
                    name: service.name().to_owned(),
                    full_name: service.full_name().to_owned(),
                    package: service.package_name().to_owned(),
                    file: file_name.clone(),
                    side,
                    docs: comments.get(service.path()),
                    methods,
                });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Error::Services(problems))
    }
}

/// The method's model, or the rule it breaks.
fn method(
    m: &MethodDescriptor,
    one_way_ext: Option<&prost_reflect::ExtensionDescriptor>,
    comments: &docs::Comments,
) -> Result<Method, String> {
    if m.is_client_streaming() || m.is_server_streaming() {
        return Err(format!(
            "{}: streaming methods are not supported; use one-way messages or pub/sub",
            m.full_name()
        ));
    }
    let options = m.options();
    let one_way = one_way_ext
        .map(|ext| matches!(options.get_extension(ext).as_ref(), Value::Bool(true)))
        .unwrap_or(false);
    let deprecated = options
        .get_field_by_name("deprecated")
        .is_some_and(|v| matches!(v.as_ref(), Value::Bool(true)));
    let (rust_name, rust_full_name) = crate::names::method(m.name());
    Ok(Method {
        name: m.name().to_owned(),
        path: format!("{}/{}", m.parent_service().full_name(), m.name()),
        rust_name,
        rust_full_name,
        input: TypeRef::new(&m.input()),
        output: TypeRef::new(&m.output()),
        one_way,
        deprecated,
        docs: comments.get(m.path()),
    })
}

/// Two methods of one service must not get one Rust name (the plain form or
/// the `_full` form of either). Any number of them may share message types:
/// calls are routed by method.
fn rust_name_clashes(service: &str, methods: &[Method]) -> Vec<String> {
    let mut by_ident: HashMap<&str, &str> = HashMap::new();
    let mut problems = Vec::new();
    for m in methods {
        let names = [m.rust_name.as_str()]
            .into_iter()
            .chain((!m.one_way).then_some(m.rust_full_name.as_str()));
        let mut clashed_with = Vec::new();
        for name in names {
            if let Some(other) = by_ident.insert(name, &m.name)
                && !clashed_with.contains(&other)
            {
                clashed_with.push(other);
                problems.push(format!(
                    "{service}: methods {other} and {} both become `{name}` in Rust; rename one",
                    m.name
                ));
            }
        }
    }
    problems
}
