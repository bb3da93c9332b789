//! The engine must not know D-Bus or async runtimes (DESIGN.md §1). The
//! engine is its own crate, so the compiler enforces it as long as its
//! manifest does not pull them in: this test keeps that manifest honest.

#[test]
fn engine_crate_depends_on_neither_zbus_nor_tokio() {
    let manifest = include_str!("../engine/Cargo.toml");
    let parsed: toml::Table = manifest.parse().expect("the engine manifest parses");
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(deps) = parsed.get(section).and_then(|d| d.as_table()) else {
            continue;
        };
        for forbidden in ["zbus", "tokio", "async-std", "futures", "zbus_macros"] {
            assert!(
                !deps.contains_key(forbidden),
                "copyd-engine [{section}] must not depend on {forbidden}"
            );
        }
    }
}
