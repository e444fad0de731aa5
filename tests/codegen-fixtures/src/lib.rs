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
    pub mod other {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/fixtures.other.v1.rs"));
        }
    }
    pub mod hazards {
        goomerang::include_proto!("fixtures.hazards");
        pub mod greeting {
            include!(concat!(env!("OUT_DIR"), "/fixtures.hazards.greeting.rs"));
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
        include!(concat!(env!("OUT_DIR"), "/outer.other.rs"));
    }
}
