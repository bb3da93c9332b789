//! Interface descriptions from introspection XML, for comparing the live
//! objects with dbus/org.example.Copyd1.xml.

use std::collections::BTreeMap;

/// One argument: name, type, direction ("in"/"out"; signals: "out").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub ty: String,
    pub direction: String,
}

impl std::fmt::Display for Arg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.direction, self.ty, self.name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub methods: BTreeMap<String, Vec<Arg>>,
    pub signals: BTreeMap<String, Vec<Arg>>,
    /// name -> (type, access)
    pub properties: BTreeMap<String, (String, String)>,
}

/// Parses introspection XML into interfaces by name. Panics on malformed
/// XML, naming `what`.
pub fn parse(xml: &str, what: &str) -> BTreeMap<String, Interface> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(xml, opts)
        .unwrap_or_else(|e| panic!("{what}: not well-formed XML: {e}\n{xml}"));
    let mut out = BTreeMap::new();
    for iface in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("interface"))
    {
        let name = iface
            .attribute("name")
            .unwrap_or_else(|| panic!("{what}: interface without name"));
        let mut i = Interface::default();
        for m in iface.children().filter(|n| n.is_element()) {
            let mname = m.attribute("name").unwrap_or("").to_string();
            let is_signal = m.has_tag_name("signal");
            let args = || -> Vec<Arg> {
                m.children()
                    .filter(|a| a.has_tag_name("arg"))
                    .map(|a| Arg {
                        name: a.attribute("name").unwrap_or("").to_string(),
                        ty: a.attribute("type").unwrap_or("").to_string(),
                        direction: a
                            .attribute("direction")
                            .unwrap_or(if is_signal { "out" } else { "in" })
                            .to_string(),
                    })
                    .collect()
            };
            match m.tag_name().name() {
                "method" => {
                    i.methods.insert(mname, args());
                }
                "signal" => {
                    i.signals.insert(mname, args());
                }
                "property" => {
                    i.properties.insert(
                        mname,
                        (
                            m.attribute("type").unwrap_or("").to_string(),
                            m.attribute("access").unwrap_or("").to_string(),
                        ),
                    );
                }
                _ => {}
            }
        }
        out.insert(name.to_string(), i);
    }
    out
}

fn fmt_args(a: &[Arg]) -> String {
    format!(
        "({})",
        a.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Differences between the contract's and the live description of one
/// interface, one readable line each ("- contract", "+ live").
pub fn diff(iface: &str, want: &Interface, got: &Interface) -> Vec<String> {
    let mut d = Vec::new();
    fn members<V: PartialEq>(
        d: &mut Vec<String>,
        iface: &str,
        kind: &str,
        want: &BTreeMap<String, V>,
        got: &BTreeMap<String, V>,
        show: impl Fn(&V) -> String,
    ) {
        for (name, w) in want {
            match got.get(name) {
                None => d.push(format!("{iface}: {kind} {name}{} is missing (contract has it)", show(w))),
                Some(g) if g != w => d.push(format!(
                    "{iface}: {kind} {name} differs:\n      contract: {name}{}\n      live:     {name}{}",
                    show(w),
                    show(g)
                )),
                _ => {}
            }
        }
        for (name, g) in got {
            if !want.contains_key(name) {
                d.push(format!(
                    "{iface}: {kind} {name}{} is live but not in the contract",
                    show(g)
                ));
            }
        }
    }
    members(&mut d, iface, "method", &want.methods, &got.methods, |a| {
        fmt_args(a)
    });
    members(&mut d, iface, "signal", &want.signals, &got.signals, |a| {
        fmt_args(a)
    });
    members(
        &mut d,
        iface,
        "property",
        &want.properties,
        &got.properties,
        |(t, a)| format!(" {t} {a}"),
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_finds_differences() {
        let xml = std::fs::read_to_string(crate::contract_xml_path()).unwrap();
        let want = parse(&xml, "contract");
        let m = &want["org.example.Copyd1.Manager"];
        assert!(m.methods.contains_key("Copy"));
        assert_eq!(
            m.methods["Copy"][0],
            Arg {
                name: "sources".into(),
                ty: "aay".into(),
                direction: "in".into()
            }
        );
        assert!(diff("m", m, m).is_empty());
        let mut other = m.clone();
        other.methods.get_mut("Copy").unwrap()[1].ty = "s".into();
        other
            .properties
            .insert("Extra".into(), ("s".into(), "read".into()));
        other.methods.remove("Plan");
        let d = diff("m", m, &other);
        assert_eq!(d.len(), 3, "{d:#?}");
        let j = &want["org.example.Copyd1.Job"];
        assert_eq!(
            j.signals["Completed"]
                .iter()
                .map(|a| a.ty.as_str())
                .collect::<String>(),
            "bss"
        );
    }
}
