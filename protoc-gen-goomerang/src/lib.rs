//! Generates goomerang service code from protobuf descriptors.
