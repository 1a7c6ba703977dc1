//! The names of the endpoints with a parameter in the metrics: the
//! patterns they had when actix-router matched them (`dynamic.rs` matches
//! them now), so series, dashboards and alerts keep their labels.

pub const NARINFO: &str = "/{hash}.narinfo";
pub const LISTING: &str = "/{hash}.ls";
pub const NAR: &str = "/nar/{file}";
pub const LOG: &str = "/log/{drv}";
pub const SERVE: &str = "/serve/{hash}";
pub const SERVE_TAIL: &str = "/serve/{hash}/{tail:.*}";
