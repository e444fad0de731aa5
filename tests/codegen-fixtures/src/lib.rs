//! Every fixture's generated code, compiled: if a snapshot's code stopped compiling, this crate would.
#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]

pub mod fixtures {
    pub mod features {
        pub mod v1 {
            goomerang::include_proto!("fixtures.features.v1");
        }
    }
    // A package with messages and no service: `include_proto!` works for it too.
    pub mod other {
        pub mod v1 {
            goomerang::include_proto!("fixtures.other.v1");
        }
    }
    pub mod hazards {
        goomerang::include_proto!("fixtures.hazards");
        pub mod greeting {
            goomerang::include_proto!("fixtures.hazards.greeting");
        }
    }
    pub mod shared {
        pub mod v1 {
            goomerang::include_proto!("fixtures.shared.v1");
        }
    }
}

pub mod nopackage {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
    include!(concat!(env!("OUT_DIR"), "/_.goomerang.rs"));
}

pub mod outer {
    pub mod inner {
        pub mod deep {
            goomerang::include_proto!("outer.inner.deep");
        }
    }
    pub mod other {
        goomerang::include_proto!("outer.other");
    }
}
