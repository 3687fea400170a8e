//! The configuration reference, docs/configuration.md, is generated from the configuration
//! types' doc comments and serde attributes, and this test keeps it in step with them.
//!
//! The sources under src/ are parsed with `syn` and every type is indexed by name, wherever it
//! lives; from the three roots (the site file, a device profile, a rule file) the type graph is
//! walked in field order, and each table becomes a section with its keys (after serde's
//! renames), their TOML types, defaults (simple default functions and `Default` impls are
//! evaluated from their source), and doc comments.
//!
//! - `reference_is_up_to_date`: the generated text equals docs/configuration.md; with
//!   `PARKGUARD_BLESS=1` it writes the file instead. It also fails on a config field without a
//!   doc comment (unless in `UNDOCUMENTED`, with a reason) and on a type the generator cannot
//!   describe.
//! - `shipped_files_use_only_documented_keys`: every key written in the shipped site files,
//!   profiles and rule files is a key of the reference, so a key renamed in code, or one the
//!   generator misses, is caught.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, Fields, GenericArgument, Item, Lit, PathArguments, Type};

const BLESS: &str = "PARKGUARD_BLESS=1 cargo test --test suite config_reference::";

/// The files operators write, by the type they are read as.
const ROOTS: [Root; 3] = [
    Root {
        ty: "SiteFile",
        id: "site",
        title: "Site file",
        intro: "The file given to `parkguard run -c FILE` (examples: `firmware-config/sites/`, \
                `deploy/parkguard/site.toml`). Relative paths in it are relative to its folder.",
    },
    Root {
        ty: "Profile",
        id: "profile",
        title: "Device profiles",
        intro: "One file per device model, `<profiles_dir>/<profile id>.toml` (examples: \
                `firmware-config/profiles/`): how to decode the device's MQTT payloads or \
                Modbus registers.",
    },
    Root {
        ty: "RuleSetFile",
        id: "rules",
        title: "Rule files",
        intro: "The files listed in `[gateway] rule_files` (examples: `firmware-config/rules/`): \
                the alarm rules, bound to devices by kind, profile and quantity.",
    },
];

/// Types described once, in their own section, and linked from every key of that type.
const SHARED: [&str; 1] = ["Secret"];

/// Config fields without a doc comment, allowed for now, each with why it is tolerated. Every
/// entry is a debt: the doc comment belongs in src/. An entry whose field is documented (or
/// gone) fails the test, so that the list only shrinks. It is empty: every field has its doc
/// comment, and a new field without one fails the test.
const UNDOCUMENTED: &[(&str, &str)] = &[];

struct Root {
    ty: &'static str,
    id: &'static str,
    title: &'static str,
    intro: &'static str,
}

// ---------------------------------------------------------------------------------------------
// The index of the sources

#[derive(Clone)]
enum Def {
    Struct(syn::ItemStruct),
    Enum(syn::ItemEnum),
    Alias(Type),
}

#[derive(Default)]
struct Index {
    /// Type name -> its definitions (file, derives Deserialize, item).
    types: BTreeMap<String, Vec<(PathBuf, bool, Def)>>,
    /// Function name -> the bodies of free functions of that name.
    fns: BTreeMap<String, Vec<syn::Block>>,
    /// Const name -> its value.
    consts: BTreeMap<String, Vec<Expr>>,
    /// Type name -> the body of its `impl Default`'s `default()`.
    defaults: BTreeMap<String, Vec<syn::Block>>,
}

impl Index {
    fn load(src: &Path) -> Index {
        let mut index = Index::default();
        let mut stack = vec![src.to_path_buf()];
        let mut files = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).expect("read source");
            let file = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", path.display()));
            let relative = path.strip_prefix(src).expect("under src").to_path_buf();
            index.items(&relative, &file.items);
        }
        index
    }

    /// An index of one source text, for testing the generator itself.
    fn from_source(text: &str) -> Index {
        let mut index = Index::default();
        let file = syn::parse_file(text).expect("test source parses");
        index.items(Path::new("config/test.rs"), &file.items);
        index
    }

    fn items(&mut self, file: &Path, items: &[Item]) {
        for item in items {
            match item {
                Item::Struct(s) => self.add_type(file, &s.ident, &s.attrs, Def::Struct(s.clone())),
                Item::Enum(e) => self.add_type(file, &e.ident, &e.attrs, Def::Enum(e.clone())),
                Item::Type(t) => {
                    self.add_type(file, &t.ident, &t.attrs, Def::Alias((*t.ty).clone()))
                }
                Item::Fn(f) => self
                    .fns
                    .entry(f.sig.ident.to_string())
                    .or_default()
                    .push((*f.block).clone()),
                Item::Const(c) => self
                    .consts
                    .entry(c.ident.to_string())
                    .or_default()
                    .push((*c.expr).clone()),
                Item::Impl(imp) => {
                    let is_default = imp.trait_.as_ref().is_some_and(|(_, p, _)| {
                        p.segments.last().is_some_and(|s| s.ident == "Default")
                    });
                    let Type::Path(self_ty) = &*imp.self_ty else {
                        continue;
                    };
                    let Some(name) = self_ty.path.segments.last() else {
                        continue;
                    };
                    for inner in &imp.items {
                        if let syn::ImplItem::Fn(f) = inner {
                            if is_default && f.sig.ident == "default" {
                                self.defaults
                                    .entry(name.ident.to_string())
                                    .or_default()
                                    .push(f.block.clone());
                            }
                        }
                    }
                }
                Item::Mod(m) => {
                    let test_only = m.attrs.iter().any(|a| {
                        a.path().is_ident("cfg")
                            && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
                    });
                    if let (Some((_, inner)), false) = (&m.content, test_only) {
                        self.items(file, inner);
                    }
                }
                _ => {}
            }
        }
    }

    fn add_type(&mut self, file: &Path, ident: &syn::Ident, attrs: &[Attribute], def: Def) {
        let deserialize = derives(attrs, "Deserialize");
        self.types.entry(ident.to_string()).or_default().push((
            file.to_path_buf(),
            deserialize,
            def,
        ));
    }

    /// The definition of a type named `name`: of several, the one deriving `Deserialize`, and
    /// of those the one under config/ or decode/.
    fn get(&self, name: &str) -> Option<&Def> {
        let defs = self.types.get(name)?;
        if defs.len() == 1 {
            return Some(&defs[0].2);
        }
        let config = |p: &Path| p.starts_with("config") || p.starts_with("decode");
        let best: Vec<_> = defs
            .iter()
            .filter(|(_, de, d)| *de || matches!(d, Def::Alias(_)))
            .collect();
        let best: Vec<_> = if best.len() > 1 {
            best.into_iter().filter(|(p, _, _)| config(p)).collect()
        } else {
            best
        };
        match best.as_slice() {
            [one] => Some(&one.2),
            _ => panic!(
                "type `{name}` is defined {} times ({}): the reference cannot tell which one the \
                 configuration uses",
                defs.len(),
                defs.iter()
                    .map(|(p, _, _)| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn derives(attrs: &[Attribute], name: &str) -> bool {
    let mut found = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("derive")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.segments.last().is_some_and(|s| s.ident == name) {
                found = true;
            }
            Ok(())
        });
    }
    found
}

/// The doc comment, one line per `///` line, the one leading space removed.
fn doc(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(nv) = &attr.meta {
            if let Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            }) = &nv.value
            {
                let value = s.value();
                lines.push(
                    value
                        .strip_prefix(' ')
                        .unwrap_or(&value)
                        .trim_end()
                        .to_string(),
                );
            }
        }
    }
    lines.join("\n").trim().to_string()
}

/// `#[serde(...)]` as (name, value) pairs; nested lists as `outer.inner`.
fn serde_attrs(attrs: &[Attribute]) -> Vec<(String, Option<String>)> {
    fn collect(
        meta: ParseNestedMeta,
        prefix: &str,
        out: &mut Vec<(String, Option<String>)>,
    ) -> syn::Result<()> {
        let ident = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let name = format!("{prefix}{ident}");
        if meta.input.peek(syn::Token![=]) {
            let value: Expr = meta.value()?.parse()?;
            let text = match value {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Str(s), ..
                }) => s.value(),
                _ => String::from("?"),
            };
            out.push((name, Some(text)));
        } else if meta.input.peek(syn::token::Paren) {
            let inner = format!("{name}.");
            meta.parse_nested_meta(|m| collect(m, &inner, out))?;
        } else {
            out.push((name, None));
        }
        Ok(())
    }
    let mut out = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| collect(meta, "", &mut out))
            .unwrap_or_else(|e| panic!("#[serde(...)] the generator cannot read: {e}"));
    }
    out
}

fn serde_value(attrs: &[(String, Option<String>)], name: &str) -> Option<Option<String>> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

fn has(attrs: &[(String, Option<String>)], name: &str) -> bool {
    attrs.iter().any(|(n, _)| n == name)
}

/// serde's `rename_all` rules. `field` tells a snake_case field from a PascalCase variant.
fn rename_all(name: &str, rule: Option<&str>, field: bool) -> String {
    let Some(rule) = rule else {
        return name.to_string();
    };
    let words: Vec<String> = if field {
        name.split('_').map(str::to_lowercase).collect()
    } else {
        let mut words = Vec::new();
        let mut current = String::new();
        for c in name.chars() {
            if c.is_uppercase() && !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            current.extend(c.to_lowercase());
        }
        words.push(current);
        words
    };
    let capitalised = |w: &String| {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    match rule {
        "lowercase" => words.concat(),
        "UPPERCASE" => words.concat().to_uppercase(),
        "snake_case" => words.join("_"),
        "SCREAMING_SNAKE_CASE" => words.join("_").to_uppercase(),
        "kebab-case" => words.join("-"),
        "SCREAMING-KEBAB-CASE" => words.join("-").to_uppercase(),
        "PascalCase" => words.iter().map(capitalised).collect(),
        "camelCase" => {
            let pascal: String = words.iter().map(capitalised).collect();
            let mut c = pascal.chars();
            c.next()
                .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
        other => panic!("rename_all = \"{other}\" is not a serde rule"),
    }
}

fn field_key(field: &syn::Field, rule: Option<&str>) -> String {
    let attrs = serde_attrs(&field.attrs);
    let ident = field.ident.as_ref().expect("named field").to_string();
    let ident = ident.strip_prefix("r#").unwrap_or(&ident).to_string();
    serde_value(&attrs, "rename")
        .flatten()
        .or_else(|| serde_value(&attrs, "rename.deserialize").flatten())
        .unwrap_or_else(|| rename_all(&ident, rule, true))
}

fn variant_name(variant: &syn::Variant, rule: Option<&str>) -> String {
    let attrs = serde_attrs(&variant.attrs);
    serde_value(&attrs, "rename")
        .flatten()
        .or_else(|| serde_value(&attrs, "rename.deserialize").flatten())
        .unwrap_or_else(|| rename_all(&variant.ident.to_string(), rule, false))
}

fn container_rule(attrs: &[Attribute]) -> Option<String> {
    let attrs = serde_attrs(attrs);
    serde_value(&attrs, "rename_all")
        .flatten()
        .or_else(|| serde_value(&attrs, "rename_all.deserialize").flatten())
}

// ---------------------------------------------------------------------------------------------
// Evaluating default functions

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Arr(Vec<Val>),
    Tup(Vec<Val>),
    Map(Vec<(String, Val)>),
}

impl Val {
    fn toml(&self) -> String {
        match self {
            Val::Str(s) => format!("\"{}\"", s.escape_default()),
            Val::Int(i) => i.to_string(),
            Val::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
            Val::Float(f) => f.to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Arr(items) | Val::Tup(items) => format!(
                "[{}]",
                items.iter().map(Val::toml).collect::<Vec<_>>().join(", ")
            ),
            Val::Map(entries) if entries.is_empty() => "{}".to_string(),
            Val::Map(entries) => format!(
                "{{ {} }}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{} = {}", toml_key(k), v.toml()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("\"{}\"", key.escape_default())
    }
}

impl Index {
    /// The value of a function body or `Default` impl made of literals, arithmetic,
    /// conversions (`.into()`, `PathBuf::from`, `SocketAddr::from`, `BTreeMap::from`), calls of
    /// other such functions, enum variants and struct literals. None for anything else.
    fn eval_block(&self, block: &syn::Block, depth: u32) -> Option<Val> {
        match block.stmts.as_slice() {
            [syn::Stmt::Expr(expr, None)] => self.eval(expr, depth),
            _ => None,
        }
    }

    fn eval_fn(&self, name: &str, depth: u32) -> Option<Val> {
        let bodies = self.fns.get(name)?;
        let values: Vec<Option<Val>> = bodies
            .iter()
            .map(|b| self.eval_block(b, depth + 1))
            .collect();
        // After a split into files, several private functions may share a name; they count
        // only if they all agree.
        let first = values.first()?.clone()?;
        values
            .iter()
            .all(|v| v.as_ref() == Some(&first))
            .then_some(first)
    }

    fn eval_default_impl(&self, ty: &str, depth: u32) -> Option<Val> {
        let bodies = self.defaults.get(ty)?;
        match bodies.as_slice() {
            [one] => self.eval_block(one, depth + 1),
            _ => None,
        }
    }

    fn eval(&self, expr: &Expr, depth: u32) -> Option<Val> {
        if depth > 16 {
            return None;
        }
        match expr {
            Expr::Lit(lit) => match &lit.lit {
                Lit::Str(s) => Some(Val::Str(s.value())),
                Lit::Int(i) => i.base10_parse::<i128>().ok().map(Val::Int),
                Lit::Float(f) => f.base10_parse::<f64>().ok().map(Val::Float),
                Lit::Bool(b) => Some(Val::Bool(b.value)),
                _ => None,
            },
            Expr::Paren(p) => self.eval(&p.expr, depth),
            Expr::Group(g) => self.eval(&g.expr, depth),
            Expr::Cast(c) => self.eval(&c.expr, depth),
            Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => {
                match self.eval(&u.expr, depth)? {
                    Val::Int(i) => Some(Val::Int(-i)),
                    Val::Float(f) => Some(Val::Float(-f)),
                    _ => None,
                }
            }
            Expr::Binary(b) => {
                let (l, r) = (self.eval(&b.left, depth)?, self.eval(&b.right, depth)?);
                use syn::BinOp::*;
                match (l, r) {
                    (Val::Int(l), Val::Int(r)) => Some(Val::Int(match b.op {
                        Add(_) => l + r,
                        Sub(_) => l - r,
                        Mul(_) => l * r,
                        Div(_) if r != 0 => l / r,
                        _ => return None,
                    })),
                    (Val::Float(l), Val::Float(r)) => Some(Val::Float(match b.op {
                        Add(_) => l + r,
                        Sub(_) => l - r,
                        Mul(_) => l * r,
                        Div(_) => l / r,
                        _ => return None,
                    })),
                    _ => None,
                }
            }
            Expr::Array(a) => a
                .elems
                .iter()
                .map(|e| self.eval(e, depth))
                .collect::<Option<Vec<_>>>()
                .map(Val::Arr),
            Expr::Tuple(t) => t
                .elems
                .iter()
                .map(|e| self.eval(e, depth))
                .collect::<Option<Vec<_>>>()
                .map(Val::Tup),
            Expr::MethodCall(m)
                if m.args.is_empty()
                    && ["into", "to_string", "to_owned", "into_owned"]
                        .contains(&m.method.to_string().as_str()) =>
            {
                self.eval(&m.receiver, depth)
            }
            Expr::Call(call) => {
                let Expr::Path(func) = &*call.func else {
                    return None;
                };
                let segments: Vec<String> = func
                    .path
                    .segments
                    .iter()
                    .map(|s| s.ident.to_string())
                    .collect();
                let last = segments.last()?.as_str();
                let owner = segments.len().checked_sub(2).map(|i| segments[i].as_str());
                match (owner, last, call.args.len()) {
                    (_, name, 0) => match owner {
                        Some("Self") | None => self.eval_fn(name, depth),
                        Some(ty) if name == "default" => self.eval_default_impl(ty, depth),
                        Some(_) => self.eval_fn(name, depth),
                    },
                    (None, "Some", 1) => self.eval(&call.args[0], depth),
                    (Some(ty), "from" | "new", 1) => {
                        let arg = self.eval(&call.args[0], depth)?;
                        match (ty, arg) {
                            ("SocketAddr", Val::Tup(parts)) => match parts.as_slice() {
                                [Val::Arr(ip), Val::Int(port)] if ip.len() == 4 => {
                                    let octets: Vec<String> = ip
                                        .iter()
                                        .map(|o| match o {
                                            Val::Int(i) => Some(i.to_string()),
                                            _ => None,
                                        })
                                        .collect::<Option<_>>()?;
                                    Some(Val::Str(format!("{}:{port}", octets.join("."))))
                                }
                                _ => None,
                            },
                            ("BTreeMap" | "HashMap", Val::Arr(entries)) => entries
                                .into_iter()
                                .map(|e| match e {
                                    Val::Tup(kv) if kv.len() == 2 => match &kv[0] {
                                        Val::Str(k) => Some((k.clone(), kv[1].clone())),
                                        Val::Int(k) => Some((k.to_string(), kv[1].clone())),
                                        _ => None,
                                    },
                                    _ => None,
                                })
                                .collect::<Option<Vec<_>>>()
                                .map(Val::Map),
                            ("String" | "PathBuf", v @ Val::Str(_)) => Some(v),
                            _ => None,
                        }
                    }
                    _ => None,
                }
            }
            Expr::Path(p) => {
                let segments: Vec<String> = p
                    .path
                    .segments
                    .iter()
                    .map(|s| s.ident.to_string())
                    .collect();
                match segments.as_slice() {
                    [name] => match self.consts.get(name)?.as_slice() {
                        [one] => self.eval(one, depth + 1),
                        _ => None,
                    },
                    [.., ty, variant] => match self.get(ty)? {
                        Def::Enum(e) => {
                            let rule = container_rule(&e.attrs);
                            let v = e.variants.iter().find(|v| v.ident == variant)?;
                            Some(Val::Str(variant_name(v, rule.as_deref())))
                        }
                        _ => None,
                    },
                    _ => None,
                }
            }
            Expr::Struct(s) => {
                let ty = s.path.segments.last()?.ident.to_string();
                let ty = if ty == "Self" { return None } else { ty };
                let Def::Struct(def) = self.get(&ty)? else {
                    return None;
                };
                let rule = container_rule(&def.attrs);
                let mut entries = Vec::new();
                for fv in &s.fields {
                    let syn::Member::Named(ident) = &fv.member else {
                        return None;
                    };
                    let field = def
                        .fields
                        .iter()
                        .find(|f| f.ident.as_ref() == Some(ident))?;
                    if let Expr::Path(p) = &fv.expr {
                        if p.path.is_ident("None") {
                            continue;
                        }
                    }
                    entries.push((
                        field_key(field, rule.as_deref()),
                        self.eval(&fv.expr, depth)?,
                    ));
                }
                Some(Val::Map(entries))
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes: what a Rust type is in TOML

#[derive(Clone, Debug)]
enum Shape {
    /// A scalar: its TOML description.
    Prim(String),
    /// A unit-only enum, written as one of its variants' names.
    Values(String),
    /// A struct or data-carrying enum written as a table: a section of its own.
    Table(String),
    /// A list of those: `[[...]]`.
    Tables(String),
    /// A type of `SHARED`.
    Shared(String),
    Array(Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
    Tuple(Vec<Shape>),
    /// An untagged enum of newtype variants.
    Union(Vec<Shape>),
}

/// What a key path holds, for checking files against the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KeyKind {
    Leaf,
    /// Free keys below it (a map).
    Map,
    Table,
}

/// Strips `Option`: (inner type, was optional).
fn unwrap_option(ty: &Type) -> (&Type, bool) {
    if let Some(("Option", [inner])) = generic(ty).as_ref().map(|(n, a)| (n.as_str(), &a[..])) {
        return (inner, true);
    }
    (ty, false)
}

/// A path type's last segment and its type arguments.
fn generic(ty: &Type) -> Option<(String, Vec<&Type>)> {
    let Type::Path(p) = ty else {
        return None;
    };
    let last = p.path.segments.last()?;
    let args = match &last.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((last.ident.to_string(), args))
}

// ---------------------------------------------------------------------------------------------
// The model of the reference

struct Row {
    key: String,
    ty: String,
    default: String,
    doc: String,
}

struct Block {
    title: String,
    doc: String,
    rows: Vec<Row>,
}

struct Section {
    anchor: String,
    /// `[gateway]`, `[[mqtt]]`; empty for a root's top-level keys.
    heading: String,
    doc: String,
    rows: Vec<Row>,
    blocks: Vec<Block>,
}

struct Chapter {
    root: &'static Root,
    doc: String,
    sections: Vec<Section>,
}

#[derive(Default)]
struct Model {
    chapters: Vec<Chapter>,
    shared: Vec<Section>,
    /// Unit-only enums in order of first use.
    enums: Vec<String>,
    /// `root:key.path` -> what it holds.
    keys: BTreeMap<String, KeyKind>,
    /// The types read as tables.
    tables: BTreeSet<String>,
    /// Fields without a doc comment, as `Type.field`.
    undocumented: Vec<String>,
    /// What the generator could not describe.
    problems: Vec<String>,
}

struct Builder<'a> {
    index: &'a Index,
    model: Model,
}

impl<'a> Builder<'a> {
    fn shape(&mut self, ty: &Type, at: &str) -> Shape {
        match ty {
            Type::Reference(r) => return self.shape(&r.elem, at),
            Type::Tuple(t) => {
                return Shape::Tuple(t.elems.iter().map(|e| self.shape(e, at)).collect())
            }
            Type::Array(a) => return Shape::Array(Box::new(self.shape(&a.elem, at))),
            _ => {}
        }
        let Some((name, args)) = generic(ty) else {
            self.model
                .problems
                .push(format!("{at}: a type the generator does not know"));
            return Shape::Prim("?".into());
        };
        let prim = |s: &str| Shape::Prim(s.to_string());
        match (name.as_str(), args.as_slice()) {
            ("Option" | "Box" | "Arc" | "Rc", [inner]) => self.shape(inner, at),
            ("Vec" | "BTreeSet" | "HashSet", [inner]) => match self.shape(inner, at) {
                Shape::Table(t) => Shape::Tables(t),
                other => Shape::Array(Box::new(other)),
            },
            ("BTreeMap" | "HashMap", [k, v]) => {
                Shape::Map(Box::new(self.shape(k, at)), Box::new(self.shape(v, at)))
            }
            ("String" | "str" | "Cow", _) => prim("string"),
            ("PathBuf" | "Path", _) => prim("string (path)"),
            ("SocketAddr", _) => prim("string (`IP:port`)"),
            ("IpAddr", _) => prim("string (IP address)"),
            ("bool", _) => prim("boolean"),
            ("f32" | "f64", _) => prim("float"),
            ("u8", _) => prim("integer (0 to 255)"),
            ("u16", _) => prim("integer (0 to 65535)"),
            ("u32" | "u64" | "u128" | "usize", _) => prim("integer (0 or more)"),
            ("i8" | "i16" | "i32" | "i64" | "i128" | "isize", _) => prim("integer"),
            (user, _) => self.user_shape(user, at),
        }
    }

    fn user_shape(&mut self, name: &str, at: &str) -> Shape {
        if SHARED.contains(&name) {
            return Shape::Shared(name.to_string());
        }
        let Some(def) = self.index.get(name).cloned() else {
            self.model.problems.push(format!(
                "{at}: type `{name}` is not defined under src/ (or is not a type the generator \
                 knows)"
            ));
            return Shape::Prim(format!("`{name}`"));
        };
        match def {
            Def::Alias(ty) => self.shape(&ty, at),
            Def::Struct(s) => {
                let attrs = serde_attrs(&s.attrs);
                for via in ["from", "try_from"] {
                    if let Some(Some(inner)) = serde_value(&attrs, via) {
                        let ty: Type = syn::parse_str(&inner).expect("from type");
                        return self.shape(&ty, at);
                    }
                }
                match &s.fields {
                    Fields::Named(_) if !has(&attrs, "transparent") => {
                        Shape::Table(name.to_string())
                    }
                    Fields::Named(f) if f.named.len() == 1 => self.shape(&f.named[0].ty, at),
                    Fields::Unnamed(f) if f.unnamed.len() == 1 => self.shape(&f.unnamed[0].ty, at),
                    _ => {
                        self.model.problems.push(format!(
                            "{at}: struct `{name}` has a shape the generator does not describe"
                        ));
                        Shape::Prim(format!("`{name}`"))
                    }
                }
            }
            Def::Enum(e) => {
                let attrs = serde_attrs(&e.attrs);
                let unit = e.variants.iter().all(|v| matches!(v.fields, Fields::Unit));
                if has(&attrs, "untagged") {
                    let newtypes: Option<Vec<&Type>> = e
                        .variants
                        .iter()
                        .map(|v| match &v.fields {
                            Fields::Unnamed(f) if f.unnamed.len() == 1 => Some(&f.unnamed[0].ty),
                            _ => None,
                        })
                        .collect();
                    match newtypes {
                        Some(types) => {
                            Shape::Union(types.into_iter().map(|t| self.shape(t, at)).collect())
                        }
                        None => Shape::Table(name.to_string()),
                    }
                } else if has(&attrs, "tag") {
                    Shape::Table(name.to_string())
                } else if unit {
                    if !self.model.enums.iter().any(|n| n == name) {
                        self.model.enums.push(name.to_string());
                    }
                    Shape::Values(name.to_string())
                } else {
                    self.model.problems.push(format!(
                        "{at}: enum `{name}` is externally tagged with data, which the \
                         generator does not describe"
                    ));
                    Shape::Prim(format!("`{name}`"))
                }
            }
        }
    }

    fn enum_values(&self, name: &str) -> Vec<String> {
        let Some(Def::Enum(e)) = self.index.get(name) else {
            return Vec::new();
        };
        let rule = container_rule(&e.attrs);
        e.variants
            .iter()
            .filter(|v| !skipped(&serde_attrs(&v.attrs)))
            .map(|v| variant_name(v, rule.as_deref()))
            .collect()
    }

    /// The Markdown of a shape in the Type column.
    fn describe(&self, shape: &Shape, root: &Root, path: &str) -> String {
        match shape {
            Shape::Prim(p) => p.clone(),
            Shape::Values(name) => {
                let values = self
                    .enum_values(name)
                    .iter()
                    .map(|v| format!("`\"{v}\"`"))
                    .collect::<Vec<_>>()
                    .join(" \\| ");
                format!(
                    "one of {values} ([values](#values-{}))",
                    name.to_lowercase()
                )
            }
            Shape::Table(_) => format!("table ([`[{path}]`](#{}))", anchor(root, path)),
            Shape::Tables(_) => {
                format!("array of tables ([`[[{path}]]`](#{}))", anchor(root, path))
            }
            Shape::Shared(name) => {
                let keys = match self.index.get(name) {
                    Some(Def::Struct(s)) => {
                        let rule = container_rule(&s.attrs);
                        s.fields
                            .iter()
                            .filter(|f| !skipped(&serde_attrs(&f.attrs)))
                            .map(|f| field_key(f, rule.as_deref()))
                            .collect::<Vec<_>>()
                            .join(" \\| ")
                    }
                    _ => String::new(),
                };
                format!(
                    "{} `{{ {keys} }}` ([{}](#shared-{}))",
                    shared_title(name).to_lowercase(),
                    shared_title(name),
                    name.to_lowercase()
                )
            }
            Shape::Array(inner) => match &**inner {
                Shape::Values(_) => format!("array, each {}", self.describe(inner, root, path)),
                Shape::Prim(p) if p == "string" => "array of strings".into(),
                Shape::Prim(p) if p == "float" => "array of floats".into(),
                Shape::Prim(p) if p.starts_with("integer") => "array of integers".into(),
                other => format!("array of: {}", self.describe(other, root, path)),
            },
            Shape::Map(k, v) => {
                let key = match &**k {
                    Shape::Values(_) => format!("key {}", self.describe(k, root, path)),
                    _ => "any key".into(),
                };
                format!("table, {key} → {}", self.describe(v, root, path))
            }
            Shape::Tuple(items) => format!(
                "array [{}]",
                items
                    .iter()
                    .map(|i| self.describe(i, root, path))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Shape::Union(items) => items
                .iter()
                .map(|i| self.describe(i, root, path))
                .collect::<Vec<_>>()
                .join(", or "),
        }
    }

    fn kind(&self, shape: &Shape) -> KeyKind {
        match shape {
            Shape::Table(_) | Shape::Tables(_) | Shape::Shared(_) => KeyKind::Table,
            Shape::Map(..) => KeyKind::Map,
            Shape::Union(items) if items.iter().any(|i| self.kind(i) != KeyKind::Leaf) => {
                KeyKind::Map
            }
            _ => KeyKind::Leaf,
        }
    }

    /// The Default column for a field.
    fn default_of(&self, field: &syn::Field, shape: &Shape, optional: bool) -> String {
        let attrs = serde_attrs(&field.attrs);
        match serde_value(&attrs, "default") {
            Some(Some(func)) => {
                let name = func.rsplit("::").next().unwrap_or(&func);
                match self.index.eval_fn(name, 0) {
                    Some(v) => format!("`{}`", v.toml()),
                    None => format!("see `{name}()`"),
                }
            }
            Some(None) if optional => "—".into(),
            Some(None) => self.type_default(&field.ty, shape),
            None if optional => "—".into(),
            None => "**required**".into(),
        }
    }

    fn type_default(&self, ty: &Type, shape: &Shape) -> String {
        let name = generic(ty).map(|(n, _)| n).unwrap_or_default();
        match shape {
            Shape::Prim(p) if p == "boolean" => "`false`".into(),
            Shape::Prim(p) if p == "float" => "`0.0`".into(),
            Shape::Prim(p) if p.starts_with("integer") => "`0`".into(),
            Shape::Prim(p) if p.starts_with("string") => "`\"\"`".into(),
            Shape::Array(_) | Shape::Tables(_) => "`[]`".into(),
            Shape::Map(..) => "`{}`".into(),
            Shape::Values(e) => match self.index.get(e) {
                Some(Def::Enum(def)) => {
                    let rule = container_rule(&def.attrs);
                    let marked = def
                        .variants
                        .iter()
                        .find(|v| v.attrs.iter().any(|a| a.path().is_ident("default")));
                    match marked {
                        Some(v) => format!("`\"{}\"`", variant_name(v, rule.as_deref())),
                        None => match self.index.eval_default_impl(e, 0) {
                            Some(v) => format!("`{}`", v.toml()),
                            None => format!("see `{e}::default()`"),
                        },
                    }
                }
                _ => format!("see `{e}::default()`"),
            },
            Shape::Table(t) => {
                let every_key_defaults = match self.index.get(t) {
                    Some(Def::Struct(s)) => s.fields.iter().all(|f| {
                        let a = serde_attrs(&f.attrs);
                        has(&a, "default") || unwrap_option(&f.ty).1
                    }),
                    _ => false,
                };
                if every_key_defaults {
                    "each key's default".into()
                } else {
                    match self.index.eval_default_impl(t, 0) {
                        Some(v) => format!("`{}`", v.toml()),
                        None => format!("see `{t}::default()`"),
                    }
                }
            }
            _ => format!("see `{name}::default()`"),
        }
    }

    /// The rows of a struct's fields at `path`, and the tables below them.
    fn struct_rows(
        &mut self,
        root: &'static Root,
        path: &str,
        def: &syn::ItemStruct,
        rows: &mut Vec<Row>,
        below: &mut Vec<(String, Shape)>,
    ) {
        let rule = container_rule(&def.attrs);
        let container = serde_attrs(&def.attrs);
        let all_default = has(&container, "default");
        for field in &def.fields {
            let attrs = serde_attrs(&field.attrs);
            if skipped(&attrs) {
                continue;
            }
            let ident = field.ident.as_ref().expect("named").to_string();
            let source = format!("{}.{ident}", def.ident);
            if has(&attrs, "flatten") {
                let (inner, _) = unwrap_option(&field.ty);
                match self.shape(inner, &source) {
                    Shape::Table(t) => match self.index.get(&t).cloned() {
                        Some(Def::Struct(s)) => self.struct_rows(root, path, &s, rows, below),
                        _ => self.model.problems.push(format!(
                            "{source}: flattened `{t}` is not a struct the generator describes"
                        )),
                    },
                    Shape::Map(..) => rows.push(Row {
                        key: "*(any other key)*".into(),
                        ty: "any".into(),
                        default: "—".into(),
                        doc: doc(&field.attrs),
                    }),
                    _ => self
                        .model
                        .problems
                        .push(format!("{source}: flatten of a type that is not a table")),
                }
                continue;
            }
            let key = field_key(field, rule.as_deref());
            let mut aliases = Vec::new();
            for (name, value) in &attrs {
                if name == "alias" {
                    aliases.extend(value.clone());
                }
            }
            let row = self.field_row(root, path, &key, field, &source, all_default, below);
            let mut row = row;
            if !aliases.is_empty() {
                let list = aliases
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                row.doc = format!("{} (Also accepted as {list}.)", row.doc)
                    .trim()
                    .to_string();
                let kind = self.model.keys[&key_id(root, &join(path, &key))];
                for a in aliases {
                    self.model.keys.insert(key_id(root, &join(path, &a)), kind);
                }
            }
            rows.push(row);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn field_row(
        &mut self,
        root: &'static Root,
        path: &str,
        key: &str,
        field: &syn::Field,
        source: &str,
        all_default: bool,
        below: &mut Vec<(String, Shape)>,
    ) -> Row {
        let (inner, optional) = unwrap_option(&field.ty);
        let shape = self.shape(inner, source);
        let full = join(path, key);
        let kind = self.kind(&shape);
        self.model.keys.insert(key_id(root, &full), kind);
        if let Shape::Shared(name) = &shape {
            if let Some(Def::Struct(s)) = self.index.get(name) {
                let rule = container_rule(&s.attrs);
                for f in &s.fields {
                    let k = field_key(f, rule.as_deref());
                    self.model
                        .keys
                        .insert(key_id(root, &join(&full, &k)), KeyKind::Leaf);
                }
            }
        }
        if matches!(shape, Shape::Table(_) | Shape::Tables(_)) {
            below.push((full.clone(), shape.clone()));
        }
        let text = doc(&field.attrs);
        let own = match &shape {
            Shape::Table(_) => Some(format!("[{full}]")),
            Shape::Tables(_) => Some(format!("[[{full}]]")),
            _ => None,
        };
        if text.is_empty() && !self.model.undocumented.iter().any(|u| u == source) {
            self.model.undocumented.push(source.to_string());
        }
        let default = if all_default && self.default_of(field, &shape, optional) == "**required**" {
            "from the table's `Default`".to_string()
        } else {
            self.default_of(field, &shape, optional)
        };
        Row {
            key: key.to_string(),
            ty: self.describe(&shape, root, &full),
            default,
            doc: match own {
                Some(own) => strip_own_name(&text, &own),
                None => text,
            },
        }
    }

    /// The section of the table of type `ty` at `path`, then the sections below it.
    fn section(&mut self, root: &'static Root, path: &str, shape: &Shape, out: &mut Vec<Section>) {
        let (ty, array) = match shape {
            Shape::Table(t) => (t.clone(), false),
            Shape::Tables(t) => (t.clone(), true),
            _ => unreachable!("only tables have sections"),
        };
        if out.len() > 200 || path.split('.').count() > 12 {
            self.model
                .problems
                .push(format!("{path}: the type graph is too deep (a cycle?)"));
            return;
        }
        let heading = match (path.is_empty(), array) {
            (true, _) => String::new(),
            (false, true) => format!("[[{path}]]"),
            (false, false) => format!("[{path}]"),
        };
        let mut rows = Vec::new();
        let mut blocks = Vec::new();
        let mut below = Vec::new();
        self.model.tables.insert(ty.clone());
        let def = self
            .index
            .get(&ty)
            .cloned()
            .expect("tables are known types");
        let doc_text = match &def {
            Def::Struct(s) => {
                self.struct_rows(root, path, s, &mut rows, &mut below);
                doc(&s.attrs)
            }
            Def::Enum(e) => {
                self.enum_table(root, path, e, &mut rows, &mut blocks, &mut below);
                doc(&e.attrs)
            }
            Def::Alias(_) => unreachable!("aliases are resolved"),
        };
        if !heading.is_empty() {
            // A doc that starts by naming its table must name this one.
            if let Some(named) = doc_text.strip_prefix('`').and_then(|d| d.split('`').next()) {
                if named.starts_with('[') && named != heading {
                    self.model.problems.push(format!(
                        "`{ty}`'s doc comment says it is `{named}`, but it is read as `{heading}`"
                    ));
                }
            }
        }
        let doc_text = if heading.is_empty() {
            doc_text
        } else {
            strip_own_name(&doc_text, &heading)
        };
        out.push(Section {
            anchor: anchor(root, path),
            heading,
            doc: capitalise(&doc_text),
            rows,
            blocks,
        });
        for (sub, shape) in below {
            self.section(root, &sub, &shape, out);
        }
    }

    /// An internally tagged or untagged enum read as a table: the tag's row, then a block of
    /// keys per variant.
    fn enum_table(
        &mut self,
        root: &'static Root,
        path: &str,
        e: &syn::ItemEnum,
        rows: &mut Vec<Row>,
        blocks: &mut Vec<Block>,
        below: &mut Vec<(String, Shape)>,
    ) {
        let attrs = serde_attrs(&e.attrs);
        let rule = container_rule(&e.attrs);
        let tag = serde_value(&attrs, "tag").flatten();
        let fields_rule = serde_value(&attrs, "rename_all_fields").flatten();
        if let Some(tag) = &tag {
            let values: Vec<String> = e
                .variants
                .iter()
                .filter(|v| !skipped(&serde_attrs(&v.attrs)))
                .map(|v| format!("`\"{}\"`", variant_name(v, rule.as_deref())))
                .collect();
            self.model
                .keys
                .insert(key_id(root, &join(path, tag)), KeyKind::Leaf);
            rows.push(Row {
                key: tag.clone(),
                ty: format!("one of {}", values.join(" \\| ")),
                default: "**required**".into(),
                doc: "Which of the forms below this is; each has its own keys.".into(),
            });
        }
        for v in &e.variants {
            if skipped(&serde_attrs(&v.attrs)) {
                continue;
            }
            let name = variant_name(v, rule.as_deref());
            let title = match &tag {
                Some(tag) => format!("`{tag} = \"{name}\"`"),
                // Untagged: the variant's name is not written, only its keys.
                None => format!("Form {}", blocks.len() + 1),
            };
            let mut block_rows = Vec::new();
            match &v.fields {
                Fields::Unit => {}
                Fields::Named(named) => {
                    for field in &named.named {
                        let fattrs = serde_attrs(&field.attrs);
                        if skipped(&fattrs) {
                            continue;
                        }
                        let source = format!(
                            "{}::{}.{}",
                            e.ident,
                            v.ident,
                            field.ident.as_ref().expect("named")
                        );
                        let key = field_key(field, fields_rule.as_deref());
                        let row = self.field_row(root, path, &key, field, &source, false, below);
                        block_rows.push(row);
                    }
                }
                Fields::Unnamed(f) if f.unnamed.len() == 1 => {
                    let source = format!("{}::{}", e.ident, v.ident);
                    match self.shape(&f.unnamed[0].ty, &source) {
                        Shape::Table(t) => match self.index.get(&t).cloned() {
                            Some(Def::Struct(s)) => {
                                self.struct_rows(root, path, &s, &mut block_rows, below)
                            }
                            _ => self
                                .model
                                .problems
                                .push(format!("{source}: newtype of `{t}` not described")),
                        },
                        _ => self
                            .model
                            .problems
                            .push(format!("{source}: a newtype variant of a non-table")),
                    }
                }
                Fields::Unnamed(_) => self.model.problems.push(format!(
                    "{}::{}: tuple variants are not described",
                    e.ident, v.ident
                )),
            }
            blocks.push(Block {
                title,
                doc: doc(&v.attrs),
                rows: block_rows,
            });
        }
    }
}

fn skipped(attrs: &[(String, Option<String>)]) -> bool {
    has(attrs, "skip") || has(attrs, "skip_deserializing")
}

fn shared_title(name: &str) -> &'static str {
    match name {
        "Secret" => "Secret",
        _ => "Shared table",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn key_id(root: &Root, path: &str) -> String {
    format!("{}:{path}", root.ty)
}

fn anchor(root: &Root, path: &str) -> String {
    if path.is_empty() {
        return root.id.to_string();
    }
    let mut out = format!("{}-", root.id);
    for c in path.chars() {
        out.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        });
    }
    out
}

/// A doc that starts by naming the table it documents (`` `[web]`: the web UI ``), without
/// that name, which the heading or the link already shows.
fn strip_own_name(doc: &str, table: &str) -> String {
    let Some(rest) = doc.strip_prefix(&format!("`{table}`")) else {
        return doc.to_string();
    };
    match rest.chars().next() {
        None => String::new(),
        Some(':' | ',') => capitalise(rest[1..].trim_start()),
        Some(_) => doc.to_string(),
    }
}

fn capitalise(text: &str) -> String {
    let mut c = text.chars();
    match c.next() {
        Some(f) if f.is_lowercase() => f.to_uppercase().collect::<String>() + c.as_str(),
        _ => text.to_string(),
    }
}

fn build(index: &Index) -> Model {
    let mut builder = Builder {
        index,
        model: Model::default(),
    };
    for root in &ROOTS {
        let def = match index.get(root.ty) {
            Some(Def::Struct(s)) => s.clone(),
            _ => panic!("root type `{}` is not a struct under src/", root.ty),
        };
        let mut sections = Vec::new();
        builder.section(root, "", &Shape::Table(root.ty.to_string()), &mut sections);
        builder.model.chapters.push(Chapter {
            root,
            doc: doc(&def.attrs),
            sections,
        });
    }
    // The shared types' keys are recorded where they are used, not at the top level.
    let keys = builder.model.keys.clone();
    for name in SHARED {
        if let Some(Def::Struct(s)) = index.get(name).cloned() {
            let mut rows = Vec::new();
            let mut below = Vec::new();
            builder.struct_rows(&ROOTS[0], "", &s, &mut rows, &mut below);
            if !below.is_empty() {
                builder
                    .model
                    .problems
                    .push(format!("shared `{name}` has tables inside, not described"));
            }
            builder.model.shared.push(Section {
                anchor: format!("shared-{}", name.to_lowercase()),
                heading: shared_title(name).to_string(),
                doc: doc(&s.attrs),
                rows,
                blocks: Vec::new(),
            });
        }
    }
    builder.model.keys = keys;
    builder.model
}

// ---------------------------------------------------------------------------------------------
// Markdown

/// Escapes what Markdown would misread: `|` in tables and `<` (HTML) outside code spans.
fn escape(text: &str, in_table: bool) -> String {
    let mut out = String::new();
    let mut code = false;
    for c in text.chars() {
        match c {
            '`' => {
                code = !code;
                out.push(c);
            }
            '|' if in_table => out.push_str("\\|"),
            '<' if !code => out.push_str("&lt;"),
            _ => out.push(c),
        }
    }
    out
}

/// A doc comment in one table cell: lines joined, paragraphs split by `<br><br>`.
fn cell(doc: &str) -> String {
    doc.split("\n\n")
        .map(|p| {
            escape(
                &p.lines().map(str::trim).collect::<Vec<_>>().join(" "),
                true,
            )
        })
        .collect::<Vec<_>>()
        .join("<br><br>")
}

fn paragraphs(doc: &str) -> String {
    escape(doc, false)
}

fn table(out: &mut String, rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    out.push_str("| Key | Type | Default | Description |\n");
    out.push_str("| --- | --- | --- | --- |\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            row.key,
            row.ty,
            row.default,
            cell(&row.doc)
        );
    }
    out.push('\n');
}

fn section_md(out: &mut String, section: &Section, level: &str) {
    if !section.heading.is_empty() {
        let _ = writeln!(out, "<a id=\"{}\"></a>\n", section.anchor);
        if section.heading.starts_with('[') {
            let _ = writeln!(out, "{level} `{}`\n", section.heading);
        } else {
            let _ = writeln!(out, "{level} {}\n", section.heading);
        }
        if !section.doc.is_empty() {
            let _ = writeln!(out, "{}\n", paragraphs(&section.doc));
        }
    }
    table(out, &section.rows);
    for block in &section.blocks {
        let _ = writeln!(out, "#{level} {}\n", block.title);
        if !block.doc.is_empty() {
            let _ = writeln!(out, "{}\n", paragraphs(&block.doc));
        }
        table(out, &block.rows);
    }
}

fn render(index: &Index, model: &Model) -> String {
    let mut out = String::new();
    out.push_str(
        "# Configuration reference\n\n\
         <!-- Generated by `PARKGUARD_BLESS=1 cargo test --test suite config_reference::` from the doc \
         comments in src/config and src/decode: edit those, not this file. -->\n\n\
         This file is generated by `PARKGUARD_BLESS=1 cargo test --test suite config_reference::` from \
         the doc comments and serde attributes of the configuration types in `src/config/` and \
         `src/decode/`. To change it, edit those doc comments, not this file; the test fails \
         when the two differ.\n\n\
         All configuration is TOML. Each section below is one table, with its keys:\n\n\
         - **Default** `**required**`: the key must be given; `—`: it may be left out, and the \
         description says what its absence means; otherwise the value used when it is left \
         out.\n\
         - Tables (`[name]`) and arrays of tables (`[[name]]`) may also be written inline: \
         `tls = { ca = \"certs/ca.crt\" }`.\n",
    );
    let lenient: Vec<&String> = model
        .tables
        .iter()
        .filter(|t| match index.get(t) {
            Some(Def::Struct(s)) => !has(&serde_attrs(&s.attrs), "deny_unknown_fields"),
            Some(Def::Enum(e)) => !has(&serde_attrs(&e.attrs), "deny_unknown_fields"),
            _ => false,
        })
        .collect();
    if lenient.is_empty() {
        out.push_str(
            "- An unknown key anywhere is an error (`parkguard check` names it with its file, \
             line and column), so a misspelt key never goes unnoticed.\n",
        );
    } else {
        let _ = writeln!(
            out,
            "- An unknown key is an error (`parkguard check` names it with its file, line and \
             column), except in the tables of {}, which ignore it.",
            lenient
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out.push_str("\nContents:\n\n");
    for chapter in &model.chapters {
        let _ = writeln!(out, "- [{}](#{})", chapter.root.title, chapter.root.id);
        for s in chapter.sections.iter().filter(|s| !s.heading.is_empty()) {
            let _ = writeln!(out, "  - [`{}`](#{})", s.heading, s.anchor);
        }
    }
    out.push_str("- [Shared tables](#shared)\n- [Values](#values)\n\n");
    for chapter in &model.chapters {
        let _ = writeln!(out, "<a id=\"{}\"></a>\n", chapter.root.id);
        let _ = writeln!(out, "## {}\n", chapter.root.title);
        let _ = writeln!(out, "{}\n", paragraphs(chapter.root.intro));
        if !chapter.doc.is_empty() {
            let _ = writeln!(out, "{}\n", paragraphs(&capitalise(&chapter.doc)));
        }
        out.push_str("Top-level keys:\n\n");
        for section in &chapter.sections {
            section_md(&mut out, section, "###");
        }
    }
    out.push_str("<a id=\"shared\"></a>\n\n## Shared tables\n\n");
    for section in &model.shared {
        section_md(&mut out, section, "###");
    }
    out.push_str(
        "<a id=\"values\"></a>\n\n## Values\n\nThe values of keys that take one of a fixed set \
         of strings.\n\n",
    );
    for name in &model.enums {
        let Some(Def::Enum(e)) = index.get(name) else {
            continue;
        };
        let _ = writeln!(out, "<a id=\"values-{}\"></a>\n", name.to_lowercase());
        let _ = writeln!(out, "### `{name}`\n");
        let d = doc(&e.attrs);
        if !d.is_empty() {
            let _ = writeln!(out, "{}\n", paragraphs(&d));
        }
        let rule = container_rule(&e.attrs);
        for v in &e.variants {
            if skipped(&serde_attrs(&v.attrs)) {
                continue;
            }
            let vd = doc(&v.attrs);
            let default = if v.attrs.iter().any(|a| a.path().is_ident("default")) {
                " (default)"
            } else {
                ""
            };
            let _ = write!(out, "- `\"{}\"`{default}", variant_name(v, rule.as_deref()));
            if vd.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, ": {}", cell(&vd).replace("<br><br>", " "));
            }
        }
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The tests

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate() -> (Model, String) {
    let index = Index::load(&manifest().join("src"));
    let model = build(&index);
    let text = render(&index, &model);
    (model, text)
}

#[test]
fn reference_is_up_to_date() {
    let (model, text) = generate();
    let mut failures = Vec::new();
    if !model.problems.is_empty() {
        failures.push(format!(
            "The generator cannot describe:\n  {}",
            model.problems.join("\n  ")
        ));
    }
    let allowed: BTreeMap<&str, &str> = UNDOCUMENTED.iter().copied().collect();
    let missing: Vec<&String> = model
        .undocumented
        .iter()
        .filter(|u| !allowed.contains_key(u.as_str()))
        .collect();
    if !missing.is_empty() {
        failures.push(format!(
            "Config fields without a doc comment (write one in src/; the reference shows it to \
             operators):\n  {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    let stale: Vec<&str> = allowed
        .keys()
        .copied()
        .filter(|a| !model.undocumented.iter().any(|u| u == a))
        .collect();
    if !stale.is_empty() {
        failures.push(format!(
            "UNDOCUMENTED entries whose field is documented now, or gone (remove them):\n  {}",
            stale.join("\n  ")
        ));
    }
    let file = manifest().join("docs/configuration.md");
    let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
    if on_disk.trim_end() != text.trim_end() {
        if std::env::var_os("PARKGUARD_BLESS").is_some() {
            std::fs::write(&file, format!("{text}\n")).expect("write docs/configuration.md");
            eprintln!("wrote {}", file.display());
        } else {
            let (old, new): (Vec<&str>, Vec<&str>) =
                (on_disk.lines().collect(), text.lines().collect());
            let first = old
                .iter()
                .zip(&new)
                .position(|(a, b)| a != b)
                .unwrap_or(old.len().min(new.len()));
            let show = |lines: &[&str]| {
                lines
                    .iter()
                    .skip(first)
                    .take(3)
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            failures.push(format!(
                "docs/configuration.md is out of date: it differs from line {} on ({} lines on \
                 disk, {} generated).\n  on disk:\n{}\n  generated:\n{}\n  Regenerate it with \
                 `{BLESS}` and commit it.",
                first + 1,
                old.len(),
                new.len(),
                show(&old),
                show(&new)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n\n"));
}

/// Every key path in `value`, for the type `root`, that the reference does not have.
fn unknown_keys(
    value: &toml::Value,
    root: &Root,
    path: &str,
    keys: &BTreeMap<String, KeyKind>,
    out: &mut Vec<String>,
) {
    let toml::Value::Table(table) = value else {
        return;
    };
    for (k, v) in table {
        let full = join(path, k);
        match keys.get(&key_id(root, &full)) {
            None => out.push(full),
            Some(KeyKind::Leaf | KeyKind::Map) => {}
            Some(KeyKind::Table) => match v {
                toml::Value::Array(items) => {
                    for item in items {
                        unknown_keys(item, root, &full, keys, out);
                    }
                }
                other => unknown_keys(other, root, &full, keys, out),
            },
        }
    }
}

#[test]
fn shipped_files_use_only_documented_keys() {
    let (model, _) = generate();
    let base = manifest();
    let mut files: Vec<(PathBuf, &Root)> =
        vec![(base.join("deploy/parkguard/site.toml"), &ROOTS[0])];
    for (dir, root) in [
        ("firmware-config/sites", &ROOTS[0]),
        ("firmware-config/profiles", &ROOTS[1]),
        ("firmware-config/rules", &ROOTS[2]),
    ] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(base.join(dir))
            .expect("config folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        found.sort();
        assert!(!found.is_empty(), "no .toml files in {dir}");
        files.extend(found.into_iter().map(|p| (p, root)));
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for (file, root) in &files {
        let text = std::fs::read_to_string(file).expect("read config file");
        let value: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: not TOML: {e}", file.display()));
        let mut unknown = Vec::new();
        unknown_keys(&value, root, "", &model.keys, &mut unknown);
        unknown.sort();
        unknown.dedup();
        checked += 1;
        for key in unknown {
            failures.push(format!(
                "{}: `{key}` is not in the reference ({})",
                file.strip_prefix(&base).unwrap_or(file).display(),
                root.title
            ));
        }
    }
    assert!(checked >= 5, "too few files checked: {checked}");
    assert!(
        failures.is_empty(),
        "keys used in shipped files but missing from docs/configuration.md (renamed in code, or \
         missed by the generator):\n  {}",
        failures.join("\n  ")
    );
}

/// The generator itself, on serde constructs the real configuration does not use yet.
#[test]
fn generator_follows_serde_attributes() {
    let index = Index::from_source(
        r#"
        /// Root.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct SiteFile {
            /// Renamed by the container's rule.
            #[serde(default = "default_limit")]
            pub max_items: u32,
            /// Flattened: its keys are this table's.
            #[serde(flatten)]
            pub common: Common,
            /// Skipped.
            #[serde(skip)]
            pub cache: u32,
            /// Either form.
            pub source: Source,
            /// With an old name.
            #[serde(alias = "old_name", default)]
            pub new_name: Option<String>,
            /// A secret.
            pub password: Secret,
        }
        fn default_limit() -> u32 { 4 * 1024 }
        /// Common keys.
        #[derive(Deserialize)]
        pub struct Common {
            /// The label.
            #[serde(default = "default_label")]
            pub label: String,
        }
        fn default_label() -> String { "x".into() }
        /// A source.
        #[derive(Deserialize)]
        #[serde(untagged)]
        pub enum Source {
            /// A path.
            Path { path: String },
            /// A URL.
            Url { url: String, #[serde(default)] retries: u8 },
        }
        /// A secret.
        #[derive(Deserialize)]
        pub struct Secret {
            /// Variable.
            pub env: Option<String>,
        }
        "#,
    );
    let mut builder = Builder {
        index: &index,
        model: Model::default(),
    };
    let mut sections = Vec::new();
    builder.section(
        &ROOTS[0],
        "",
        &Shape::Table("SiteFile".into()),
        &mut sections,
    );
    let model = builder.model;
    assert!(model.problems.is_empty(), "{:?}", model.problems);
    let keys: Vec<&str> = model
        .keys
        .keys()
        .map(|k| k.strip_prefix("SiteFile:").expect("site key"))
        .collect();
    assert_eq!(
        keys,
        [
            "label",
            "maxItems",
            "newName",
            "old_name",
            "password",
            "password.env",
            "source",
            "source.path",
            "source.retries",
            "source.url"
        ]
    );
    let root = &sections[0];
    let row = |key: &str| {
        root.rows
            .iter()
            .find(|r| r.key == key)
            .unwrap_or_else(|| panic!("no row {key}"))
    };
    assert_eq!(row("maxItems").default, "`4096`");
    assert_eq!(row("label").default, "`\"x\"`");
    assert!(row("newName").doc.contains("`old_name`"));
    assert!(row("password").ty.contains("secret"));
    let source = &sections[1];
    assert_eq!(source.heading, "[source]");
    assert_eq!(source.blocks.len(), 2);
    assert_eq!(source.blocks[1].rows[1].default, "`0`");
}
