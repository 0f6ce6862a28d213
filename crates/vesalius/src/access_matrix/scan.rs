//! The scan of the router sources that keeps [`ROUTES`] complete: every `.route(…)` the
//! application's routers declare must be in the table, and no other file may declare routes
//! unnoticed.

use super::routes::ROUTES;

/// A router source file and the prefix its routes are mounted under (`nest` in serve.rs).
struct Source {
    path: &'static str,
    text: &'static str,
    /// `(fn name, prefix)`: routes declared inside that function get the prefix.
    prefixes: &'static [(&'static str, &'static str)],
}

/// The files that declare the application's routes. A router in another file is found by
/// [`undeclared_router_files`] and fails the test until it is listed here.
const SOURCES: &[Source] = &[
    Source {
        path: "crates/api/src/lib.rs",
        text: include_str!("../../../api/src/lib.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/api/src/session.rs",
        text: include_str!("../../../api/src/session.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/api/src/pages.rs",
        text: include_str!("../../../api/src/pages.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/api/src/oidc.rs",
        text: include_str!("../../../api/src/oidc.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/dicomweb/src/lib.rs",
        text: include_str!("../../../dicomweb/src/lib.rs"),
        prefixes: &[("router", "/dicom-web")],
    },
    Source {
        path: "crates/exchange/src/http.rs",
        text: include_str!("../../../exchange/src/http.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/exchange/src/api.rs",
        text: include_str!("../../../exchange/src/api.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/exchange/src/remote.rs",
        text: include_str!("../../../exchange/src/remote.rs"),
        prefixes: &[("proxy_router", "/dicom-web")],
    },
    Source {
        path: "crates/api/src/admin.rs",
        text: include_str!("../../../api/src/admin.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/api/src/events.rs",
        text: include_str!("../../../api/src/events.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/web/src/lib.rs",
        text: include_str!("../../../web/src/lib.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/web/src/ohif.rs",
        text: include_str!("../../../web/src/ohif.rs"),
        prefixes: &[],
    },
    Source {
        path: "crates/vesalius/src/serve.rs",
        text: include_str!("../serve.rs"),
        prefixes: &[],
    },
];

/// The production part of a source file: everything before its first `#[cfg(test)]`.
fn production(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// The index of the `)` closing the `(` just before `from`.
fn closing(text: &str, from: usize) -> usize {
    let mut depth = 1usize;
    let mut in_str = false;
    let b = text.as_bytes();
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'(' if !in_str => depth += 1,
            b')' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced parentheses after byte {from}");
}

/// The value of `const NAME: &str = "…"` or `let NAME = "…"` in `text`.
fn string_binding(text: &str, name: &str) -> Option<String> {
    for pat in [
        format!("const {name}: &str = \""),
        format!("let {name} = \""),
    ] {
        if let Some(i) = text.find(&pat) {
            let rest = &text[i + pat.len()..];
            return rest.find('"').map(|j| rest[..j].to_owned());
        }
    }
    None
}

/// A path argument: `"…"`, `&format!("{base}…")` or a constant's name.
fn path_argument(text: &str, arg: &str) -> String {
    let arg = arg.trim();
    if let Some(lit) = arg.strip_prefix('"') {
        return lit.trim_end_matches('"').to_owned();
    }
    if let Some(f) = arg.strip_prefix("&format!(\"") {
        let f = f.trim_end_matches(')').trim_end_matches('"');
        let mut out = String::new();
        let mut rest = f;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            if rest[i..].starts_with("{{") {
                let j = rest[i..].find("}}").expect("closing }}") + i;
                out.push('{');
                out.push_str(&rest[i + 2..j]);
                out.push('}');
                rest = &rest[j + 2..];
            } else {
                let j = rest[i..].find('}').expect("closing }") + i;
                let name = &rest[i + 1..j];
                out.push_str(
                    &string_binding(text, name)
                        .unwrap_or_else(|| panic!("cannot resolve {{{name}}} in a route path")),
                );
                rest = &rest[j + 1..];
            }
        }
        out.push_str(rest);
        return out;
    }
    string_binding(text, arg).unwrap_or_else(|| panic!("cannot resolve route path {arg}"))
}

/// The methods of a method router expression (`get(a).post(b)`, `axum::routing::get(…)`):
/// calls at the top level of the expression only.
fn methods(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            c if depth == 0 && c.is_ascii_lowercase() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_lowercase() || b[i] == b'_') {
                    i += 1;
                }
                let word = &expr[start..i];
                let boundary = start == 0 || !(b[start - 1].is_ascii_alphanumeric());
                if boundary
                    && i < b.len()
                    && b[i] == b'('
                    && ["get", "post", "put", "delete", "patch", "head", "options"].contains(&word)
                {
                    out.push(word.to_uppercase());
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The name of the last `fn NAME` declared before byte `at`.
fn enclosing_fn(text: &str, at: usize) -> &str {
    let head = &text[..at];
    let Some(i) = head.rfind("fn ") else {
        return "";
    };
    let rest = &head[i + 3..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Every `(METHOD, path)` the router sources declare, with nesting prefixes applied.
pub fn declared_routes() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for src in SOURCES {
        let text = production(src.text);
        for bad in [".route_service(", ".nest_service(", ".fallback("] {
            assert!(
                !text.contains(bad),
                "{}: `{bad}` is not understood by the access matrix: teach scan.rs about it",
                src.path
            );
        }
        let mut from = 0;
        while let Some(i) = text[from..].find(".route(") {
            let open = from + i + ".route(".len();
            let close = closing(text, open);
            let args = &text[open..close];
            let comma = top_level_comma(args)
                .unwrap_or_else(|| panic!("{}: .route( without a comma", src.path));
            let path = path_argument(text, &args[..comma]);
            let prefix = src
                .prefixes
                .iter()
                .find(|(f, _)| *f == enclosing_fn(text, open))
                .map_or("", |(_, p)| *p);
            for m in methods(&args[comma + 1..]) {
                out.push((m, format!("{prefix}{path}")));
            }
            from = close;
        }
    }
    out.sort();
    out
}

fn top_level_comma(args: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    for (i, c) in args.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '(' | '[' | '{' if !in_str => depth += 1,
            ')' | ']' | '}' if !in_str => depth = depth.saturating_sub(1),
            ',' if !in_str && depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// Production source files under `crates/*/src` that declare routes (`.route(`, `.nest(`) but
/// are not in [`SOURCES`]: a new router the table would not see.
pub fn undeclared_router_files() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    let mut stack = vec![root.join("crates")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                // Integration tests and build output never serve the application.
                if !matches!(name, "tests" | "target" | "benches" | "examples") {
                    stack.push(p);
                }
                continue;
            }
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let rel = p
                .strip_prefix(&root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            // This module quotes the patterns it looks for.
            if rel.starts_with("crates/vesalius/src/access_matrix") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            let text = production(&text);
            let routes = text.contains(".route(") || text.contains(".nest(");
            if routes && !SOURCES.iter().any(|s| s.path == rel) {
                found.push(rel);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn route_table_lists_every_route_in_the_source() {
    let declared = declared_routes();
    let mut table: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    table.sort();
    let mut dup = table.clone();
    dup.dedup();
    assert_eq!(dup.len(), table.len(), "a route is listed twice in ROUTES");
    let missing: Vec<_> = declared.iter().filter(|d| !table.contains(d)).collect();
    let stale: Vec<_> = table.iter().filter(|t| !declared.contains(t)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the access matrix must list every route (docs/testing.md, \"Access matrix\").\n\
         Declared in the routers but missing from ROUTES: {missing:#?}\n\
         In ROUTES but no longer declared: {stale:#?}"
    );
    let extra = undeclared_router_files();
    assert!(
        extra.is_empty(),
        "these files declare routes the access matrix does not scan: add them to SOURCES in \
         crates/vesalius/src/access_matrix/scan.rs and their routes to ROUTES: {extra:?}"
    );
}
