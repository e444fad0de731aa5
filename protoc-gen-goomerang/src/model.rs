//! The service model: what the emitters need, read from a descriptor pool (extension options included).

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{
    DescriptorPool, MessageDescriptor, MethodDescriptor, ServiceDescriptor, Value,
};

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
    pub(crate) side: Side,
    pub(crate) docs: Vec<String>,
    pub(crate) methods: Vec<Method>,
}

#[derive(Debug)]
pub(crate) struct Method {
    /// The protobuf name, e.g. `SayHello`.
    pub(crate) name: String,
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
        }
    }
}

/// The services of `files` grouped by protobuf package (in name order), as
/// prost-build groups messages: one output file per package.
pub(crate) fn services_by_package(
    pool: &DescriptorPool,
    files: &[String],
) -> Result<BTreeMap<String, Vec<Service>>, Error> {
    let side_ext = pool.get_extension_by_name("goomerang.v1.side");
    let one_way_ext = pool.get_extension_by_name("goomerang.v1.one_way");
    let mut out: BTreeMap<String, Vec<Service>> = BTreeMap::new();
    for file_name in files {
        let file = pool
            .get_file_by_name(file_name)
            .ok_or_else(|| Error::Input(format!("file {file_name} is not in the request")))?;
        let comments = docs::Comments::new(file.file_descriptor_proto());
        for service in file.services() {
            let side = match side_ext
                .as_ref()
                .map(|ext| service.options().get_extension(ext).into_owned())
            {
                Some(Value::EnumNumber(2)) => Side::Client,
                _ => Side::Server,
            };
            let methods = service
                .methods()
                .map(|m| method(&m, one_way_ext.as_ref(), &comments))
                .collect::<Result<Vec<_>, _>>()?;
            check_unique_routes(&service, &methods)?;
            out.entry(service.package_name().to_owned())
                .or_default()
                .push(Service {
                    name: service.name().to_owned(),
                    full_name: service.full_name().to_owned(),
                    package: service.package_name().to_owned(),
                    side,
                    docs: comments.get(service.path()),
                    methods,
                });
        }
    }
    Ok(out)
}

fn method(
    m: &MethodDescriptor,
    one_way_ext: Option<&prost_reflect::ExtensionDescriptor>,
    comments: &docs::Comments,
) -> Result<Method, Error> {
    if m.is_client_streaming() || m.is_server_streaming() {
        return Err(Error::Unsupported(format!(
            "{}: streaming methods are not supported; use one-way messages or pub/sub",
            m.full_name()
        )));
    }
    let options = m.options();
    let one_way = one_way_ext
        .map(|ext| matches!(options.get_extension(ext).as_ref(), Value::Bool(true)))
        .unwrap_or(false);
    let deprecated = options
        .get_field_by_name("deprecated")
        .is_some_and(|v| matches!(v.as_ref(), Value::Bool(true)));
    Ok(Method {
        name: m.name().to_owned(),
        input: TypeRef::new(&m.input()),
        output: TypeRef::new(&m.output()),
        one_way,
        deprecated,
        docs: comments.get(m.path()),
    })
}

/// goomerang routes by message type, so within one service each input type
/// may belong to one method only; and two methods must not map to one Rust name.
fn check_unique_routes(service: &ServiceDescriptor, methods: &[Method]) -> Result<(), Error> {
    let mut by_input: HashMap<&str, &str> = HashMap::new();
    let mut by_ident: HashMap<String, &str> = HashMap::new();
    for m in methods {
        if let Some(other) = by_input.insert(&m.input.full_name, &m.name) {
            return Err(Error::Input(format!(
                "{}: methods {other} and {} both take {}; goomerang routes messages by type, \
                 so give each method its own input message",
                service.full_name(),
                m.name,
                m.input.full_name
            )));
        }
        if let Some(other) = by_ident.insert(crate::names::snake(&m.name), &m.name) {
            return Err(Error::Input(format!(
                "{}: methods {other} and {} both become `{}` in Rust",
                service.full_name(),
                m.name,
                crate::names::snake(&m.name)
            )));
        }
    }
    Ok(())
}
