//! Sizes and rates as people type them (`64KB`, `64KiB`, `100GB`,
//! `1.5GiB`, `50MB/s`, a plain number of bytes), for copyd's configuration
//! and copyctl's `--rate-limit` alike: one parser, the `parse-size` crate's.
//!
//! KB, MB... are powers of 1000 and KiB, MiB... powers of 1024, as
//! parse-size reads them. A lone K, M, G or T is a power of 1024 (as in
//! rsync, which is what people typing `--rate-limit 10M` expect); that is the
//! one rewrite done here before handing the text to the crate.

/// Bytes in `text`: a plain number, or a number and a unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let lone_unit = trimmed
        .strip_suffix(['k', 'K', 'm', 'M', 'g', 'G', 't', 'T'])
        .filter(|number| number.ends_with(|c: char| c.is_ascii_digit() || c == ' '));
    let spelled = match lone_unit {
        Some(number) => format!("{number}{}iB", &trimmed[number.len()..]),
        None => trimmed.to_owned(),
    };
    parse_size::Config::new()
        .parse_size(&spelled)
        .map_err(|err| format!("{text:?} is not a size (e.g. 64KB, 64KiB, 1.5GiB, 4096): {err}"))
}

/// Bytes per second in `text`: a size, optionally followed by `/s` or `ps`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("ps"))
        .unwrap_or(trimmed);
    parse_size(body).map_err(|_| format!("{text:?} is not a rate (e.g. 50MB/s, 10MiB/s, 800K)"))
}

/// A size in a configuration file: a number of bytes or a string with a
/// unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size: a number of bytes or a string such as \"64KB\" or \"1.5GiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_people_type() {
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("100GB"), Ok(100_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("800k"), Ok(800 * 1024));
        assert!(parse_size("fast").is_err());
        assert!(parse_size("12XB").is_err());
    }

    #[test]
    fn rates_people_type() {
        assert_eq!(parse_rate("50MB/s"), Ok(50_000_000));
        assert_eq!(parse_rate("10MiB/s"), Ok(10 << 20));
        assert_eq!(parse_rate("10M"), Ok(10 << 20));
        assert_eq!(parse_rate("800k"), Ok(800 * 1024));
        assert_eq!(parse_rate("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_rate("4096"), Ok(4096));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5 parsecs").is_err());
    }
}

/// A duration in `text`: a number and `ms` or `s` (`200ms`, `1.5s`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let trimmed = text.trim();
    let (number, scale) = match trimmed.strip_suffix("ms") {
        Some(number) => (number, 1e-3),
        None => match trimmed.strip_suffix('s') {
            Some(number) => (number, 1.0),
            None => return Err(format!("{text:?} is not a duration (e.g. 200ms, 1.5s)")),
        },
    };
    match number.trim().parse::<f64>() {
        Ok(value) if value >= 0.0 && value.is_finite() => {
            Ok(std::time::Duration::from_secs_f64(value * scale))
        }
        _ => Err(format!("{text:?} is not a duration (e.g. 200ms, 1.5s)")),
    }
}

/// A duration in a configuration file: a string such as "200ms" or "2s",
/// or a number of milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Millis(pub std::time::Duration);

impl<'de> serde::Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Millis;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration: a string such as \"200ms\" or \"2s\", or milliseconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Millis, E> {
                Ok(Millis(std::time::Duration::from_millis(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Millis, E> {
                u64::try_from(v)
                    .map(|ms| Millis(std::time::Duration::from_millis(ms)))
                    .map_err(|_| E::custom(format!("a duration cannot be negative ({v})")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Millis, E> {
                parse_duration(v).map(Millis).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
