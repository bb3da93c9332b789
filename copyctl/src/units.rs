//! Byte rates as people type them: `50MB/s`, `10M`, `1.5GiB/s`, `800k`.
//! The daemon's parser (the `parse-size` crate's), so that a size means the
//! same in copyd's configuration and on copyctl's command line.

pub use copyd_service::units::parse_rate;
