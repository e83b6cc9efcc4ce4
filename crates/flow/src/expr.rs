//! Expressions and templates: one language (Jinja2 syntax, through minijinja) for conditions,
//! mapping values and message bodies, compiled once when workflows load.
//!
//! The dialect on top of plain minijinja, for sparse Segment payloads:
//! - a missing key anywhere in a path is *undefined*, never an error (`event.traits.plan.tier`
//!   with no `traits` is fine);
//! - `x is present` is true when `x` is defined and not null (prefer it to `x != null`, which is
//!   true for an undefined `x`); `null` is a global for `none`;
//! - filters `unix` (an ISO-8601 date or a number → Unix seconds, an error otherwise), `iso`
//!   (the same → an RFC 3339 date-time), `cents` (a number → whole cents) and `striptags` (HTML
//!   → its text);
//! - a mapping value that is exactly one `{{ expression }}` keeps its type (number, boolean,
//!   object, list); any other text renders to a string; other YAML values are taken as written,
//!   with templates inside objects and lists rendered in place.
//!
//! Workflows are code that runs on every event, so each expression is bounded: its source at
//! most [`MAX_EXPRESSION_CHARS`] (a 200,000-term sum would exhaust the parser's stack), each
//! evaluation at most [`EVALUATION_FUEL`] units of minijinja's fuel (instructions and about one
//! per 64 bytes created: a loop of 10¹⁰ steps stops within milliseconds), and each result at most
//! [`MAX_RENDERED_BYTES`]. Exceeding a limit at load is a located compile error; while planning,
//! it fails that action with the reason.

use minijinja::value::{Enumerator, Object, ObjectExt, ObjectRepr};
use minijinja::{Environment, Error, ErrorKind, Expression, Template, UndefinedBehavior, Value};
use serde_json::Value as Json;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

/// The longest expression (a condition, or one `{{ }}` or `{% %}` inside a template). Real ones
/// are a line; minijinja's parser recurses per operator, so length bounds its stack use.
pub const MAX_EXPRESSION_CHARS: usize = 2_000;
/// The work one evaluation may do, in minijinja's fuel (≈ 50,000 instructions or 3 MB created).
pub const EVALUATION_FUEL: u64 = 50_000;
/// The largest text one template or expression may produce.
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;

/// The environment every workflow shares: filters and tests only, no templates registered by
/// name, so one process-wide instance serves every load.
fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = Environment::new();
        env.set_fuel(Some(EVALUATION_FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        // Message bodies are plain text or Intercom's own HTML; escaping is the author's call.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_global("null", Value::from(()));
        env.add_test("present", |value: &Value| {
            !value.is_undefined() && !value.is_none()
        });
        env.add_filter("unix", unix_filter);
        env.add_filter("iso", |value: Value| -> Result<String, Error> {
            let seconds = unix_filter(value)?;
            chrono::DateTime::from_timestamp(seconds, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "iso: out of range"))
        });
        env.add_filter("striptags", |text: String| -> String {
            // Intercom bodies are HTML; Segment traits want the text.
            let mut plain = String::with_capacity(text.len());
            let mut in_tag = false;
            for c in text.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' if in_tag => {
                        in_tag = false;
                        plain.push(' ');
                    }
                    c if !in_tag => plain.push(c),
                    _ => {}
                }
            }
            plain.split_whitespace().collect::<Vec<_>>().join(" ")
        });
        env.add_filter("cents", |value: Value| -> Result<i64, Error> {
            let number = number_of(&value).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("cents: {value} is not a number"),
                )
            })?;
            Ok((number * 100.0).round() as i64)
        });
        env
    })
}

fn number_of(value: &Value) -> Option<f64> {
    if let Some(n) = value.as_i64() {
        return Some(n as f64);
    }
    match serde_json::to_value(value).ok()? {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn unix_filter(value: Value) -> Result<i64, Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("unix: {value} is not a date"),
        )
    };
    if let Some(text) = value.as_str() {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
            return Ok(at.timestamp());
        }
        if let Ok(day) = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
            return Ok(day
                .and_hms_opt(0, 0, 0)
                .map_or(0, |t| t.and_utc().timestamp()));
        }
        return text.trim().parse::<i64>().map_err(|_| bad());
    }
    let number = number_of(&value).ok_or_else(bad)?;
    // Milliseconds are told apart from seconds by size, as Segment's own destination does.
    Ok(if number > 1e11 {
        (number / 1000.0) as i64
    } else {
        number as i64
    })
}

/// A compile error, with the source text it came from.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    pub message: String,
}

/// An evaluation error: the expression and what went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{source_text}`: {message}")]
pub struct EvalError {
    pub source_text: String,
    pub message: String,
}

fn compile_error(error: &Error) -> CompileError {
    let mut message = error.kind().to_string();
    if let Some(detail) = error.detail() {
        message = format!("{message}: {detail}");
    }
    CompileError { message }
}

fn eval_error(source: &str, error: &Error) -> EvalError {
    let message = match error.kind() {
        ErrorKind::OutOfFuel => format!(
            "stopped after doing more work than one evaluation may ({EVALUATION_FUEL} units of fuel)"
        ),
        _ => compile_error(error).message,
    };
    EvalError {
        source_text: truncated(source),
        message,
    }
}

/// Operators from other languages that Jinja does not have. minijinja refuses most of them,
/// but not all (`a == "x" && b` slips through its lexer), so they are refused here, outside
/// string literals, with the Jinja spelling.
fn foreign_operator(expression: &str) -> Option<CompileError> {
    let mut quote: Option<char> = None;
    let chars: Vec<char> = expression.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match quote {
            Some(q) if c == q && (i == 0 || chars[i - 1] != '\\') => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None => {
                let pair: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let jinja = match pair.as_str() {
                    "&&" => "and",
                    "||" => "or",
                    _ if c == '!' && chars.get(i + 1) != Some(&'=') => "not",
                    _ => continue,
                };
                let found = if c == '!' { "!".to_owned() } else { pair };
                return Some(CompileError {
                    message: format!("`{found}` is not an operator here; write `{jinja}`"),
                });
            }
        }
    }
    None
}

/// Refuses a source whose longest expression exceeds [`MAX_EXPRESSION_CHARS`]. In a template,
/// each `{{ … }}` and `{% … %}` is measured on its own (string literals inside are skipped, so
/// a quoted `}}` cannot hide the rest); plain text between them is free.
fn check_expression_sizes(source: &str, whole_is_expression: bool) -> Result<(), CompileError> {
    let too_long = |chars: usize| CompileError {
        message: format!(
            "an expression of {chars} characters; expressions are limited to {MAX_EXPRESSION_CHARS}"
        ),
    };
    if whole_is_expression {
        let chars = source.chars().count();
        return if chars > MAX_EXPRESSION_CHARS {
            Err(too_long(chars))
        } else {
            Ok(())
        };
    }
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        let close = match (c, chars.peek()) {
            ('{', Some('{')) => '}',
            ('{', Some('%')) => '%',
            _ => continue,
        };
        chars.next();
        let mut length = 0usize;
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            length += 1;
            match quote {
                Some(_) if c == '\\' => {
                    chars.next();
                    length += 1;
                }
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c == close && chars.peek() == Some(&'}') => {
                    chars.next();
                    break;
                }
                None => {}
            }
            if length > MAX_EXPRESSION_CHARS {
                return Err(too_long(length));
            }
        }
    }
    Ok(())
}

fn compile_expression(source: &str) -> Result<Expression<'static, 'static>, CompileError> {
    check_expression_sizes(source, true)?;
    if let Some(error) = foreign_operator(source) {
        return Err(error);
    }
    environment()
        .compile_expression_owned(source.to_owned())
        .map_err(|e| compile_error(&e))
}

/// A condition: an expression whose truthiness decides (`{{ }}` around it is allowed).
#[derive(Debug)]
pub struct Condition {
    source: String,
    expression: Expression<'static, 'static>,
}

impl Condition {
    pub fn compile(source: &str) -> Result<Condition, CompileError> {
        let inner = strip_braces(source).unwrap_or(source).trim();
        let expression = compile_expression(inner)?;
        Ok(Condition {
            source: source.to_owned(),
            expression,
        })
    }

    pub fn test(&self, context: &Value) -> Result<bool, EvalError> {
        self.expression
            .eval(context.clone())
            .map(|v| v.is_true())
            .map_err(|e| eval_error(&self.source, &e))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The top-level names it reads (`event`, `traits`, `profile`, …).
    pub fn variables(&self) -> HashSet<String> {
        self.expression.undeclared_variables(false)
    }
}

/// `{{ expr }}` and nothing else → `expr`.
fn strip_braces(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    // `{{ a }} and {{ b }}` is text, not one expression.
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

/// A mapping value: typed when it is one expression, text when it mixes text and templates,
/// literal otherwise; objects and lists are rendered member by member.
#[derive(Debug)]
pub enum ValueTemplate {
    Literal(Json),
    Expression {
        source: String,
        expression: Expression<'static, 'static>,
    },
    Text {
        source: &'static str,
        template: Template<'static, 'static>,
    },
    Object(Vec<(String, ValueTemplate)>),
    Array(Vec<ValueTemplate>),
}

impl ValueTemplate {
    /// How it was written, for people: the template's text, or the literal value.
    pub fn written(&self) -> String {
        match self {
            ValueTemplate::Literal(Json::String(text)) => text.clone(),
            ValueTemplate::Literal(value) => value.to_string(),
            ValueTemplate::Expression { source, .. } => source.clone(),
            ValueTemplate::Text { source, .. } => (*source).to_owned(),
            ValueTemplate::Object(_) => "{…}".into(),
            ValueTemplate::Array(_) => "[…]".into(),
        }
    }

    pub fn compile(value: &Json) -> Result<ValueTemplate, CompileError> {
        Ok(match value {
            Json::String(text) => {
                if let Some(inner) = strip_braces(text) {
                    ValueTemplate::Expression {
                        source: text.clone(),
                        expression: compile_expression(inner)?,
                    }
                } else if text.contains("{{") || text.contains("{%") {
                    check_expression_sizes(text, false)?;
                    // Compiled templates borrow their source; workflows live as long as the
                    // process, so the text is kept for good.
                    let source: &'static str = Box::leak(text.clone().into_boxed_str());
                    ValueTemplate::Text {
                        source,
                        template: environment()
                            .template_from_str(source)
                            .map_err(|e| compile_error(&e))?,
                    }
                } else {
                    ValueTemplate::Literal(value.clone())
                }
            }
            Json::Object(members) => ValueTemplate::Object(
                members
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), ValueTemplate::compile(v)?)))
                    .collect::<Result<_, CompileError>>()?,
            ),
            Json::Array(items) => {
                ValueTemplate::Array(items.iter().map(ValueTemplate::compile).collect::<Result<
                    _,
                    CompileError,
                >>(
                )?)
            }
            other => ValueTemplate::Literal(other.clone()),
        })
    }

    /// Renders to JSON. An undefined result becomes `null`.
    pub fn render(&self, context: &Value) -> Result<Json, EvalError> {
        match self {
            ValueTemplate::Literal(value) => Ok(value.clone()),
            ValueTemplate::Expression { source, expression } => {
                let value = expression
                    .eval(context.clone())
                    .map_err(|e| eval_error(source, &e))?;
                if let Some(text) = value.as_str() {
                    check_rendered_size(source, text.len())?;
                }
                to_json(&value).map_err(|message| EvalError {
                    source_text: source.clone(),
                    message,
                })
            }
            ValueTemplate::Text { source, template } => {
                let text = template
                    .render(context.clone())
                    .map_err(|e| eval_error(source, &e))?;
                check_rendered_size(source, text.len())?;
                Ok(Json::String(text))
            }
            ValueTemplate::Object(members) => {
                let mut object = serde_json::Map::with_capacity(members.len());
                for (key, member) in members {
                    object.insert(key.clone(), member.render(context)?);
                }
                Ok(Json::Object(object))
            }
            ValueTemplate::Array(items) => items
                .iter()
                .map(|item| item.render(context))
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
        }
    }

    /// The top-level names it reads.
    pub fn variables(&self) -> HashSet<String> {
        match self {
            ValueTemplate::Literal(_) => HashSet::new(),
            ValueTemplate::Expression { expression, .. } => expression.undeclared_variables(false),
            ValueTemplate::Text { template, .. } => template.undeclared_variables(false),
            ValueTemplate::Object(members) => {
                members.iter().flat_map(|(_, m)| m.variables()).collect()
            }
            ValueTemplate::Array(items) => {
                items.iter().flat_map(ValueTemplate::variables).collect()
            }
        }
    }

    /// Renders to a string (numbers and booleans as text; null as empty).
    pub fn render_string(&self, context: &Value) -> Result<String, EvalError> {
        Ok(match self.render(context)? {
            Json::String(s) => s,
            Json::Null => String::new(),
            other => other.to_string(),
        })
    }
}

fn check_rendered_size(source: &str, bytes: usize) -> Result<(), EvalError> {
    if bytes <= MAX_RENDERED_BYTES {
        return Ok(());
    }
    Err(EvalError {
        source_text: truncated(source),
        message: format!(
            "produced {bytes} bytes of text, over the limit of {MAX_RENDERED_BYTES} bytes"
        ),
    })
}

/// An expression's source as errors quote it: at most 200 characters.
fn truncated(source: &str) -> String {
    match source.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &source[..cut]),
        None => source.to_owned(),
    }
}

/// A warning about a workflow file's templates, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Work that will probably run out of fuel, visible in the text: loops nested in loops, and
/// `range(N)` with a literal N above 10,000. A lexical scan of the whole file (templates can
/// span lines in YAML block scalars); `junction validate` prints what it finds as warnings.
pub fn lint_templates(text: &str) -> Vec<Lint> {
    let mut lints = Vec::new();
    let mut loop_depth = 0usize;
    for (offset, _) in text.match_indices("{%") {
        let statement = text[offset + 2..].trim_start_matches(['-', '+', ' ', '\t', '\n']);
        if statement.starts_with("endfor") {
            loop_depth = loop_depth.saturating_sub(1);
        } else if statement.starts_with("for ") {
            loop_depth += 1;
            if loop_depth == 2 {
                lints.push(lint_at(
                    text,
                    offset,
                    format!(
                        "a loop inside a loop: each evaluation stops after {EVALUATION_FUEL} units of fuel, so large inputs will fail the action"
                    ),
                ));
            }
        }
    }
    for (offset, _) in text.match_indices("range(") {
        let digits: String = text[offset + 6..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if digits.parse::<u64>().is_ok_and(|n| n > 10_000) || digits.len() > 18 {
            lints.push(lint_at(
                text,
                offset,
                format!(
                    "range({digits}) is more work than one evaluation may do ({EVALUATION_FUEL} units of fuel)"
                ),
            ));
        }
    }
    lints.sort_by_key(|l| (l.line, l.column));
    lints
}

fn lint_at(text: &str, offset: usize, message: String) -> Lint {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Lint {
        line,
        column,
        message,
    }
}

/// A minijinja value as JSON; undefined becomes null.
pub fn to_json(value: &Value) -> Result<Json, String> {
    if value.is_undefined() {
        return Ok(Json::Null);
    }
    if let Some(node) = value.downcast_object_ref::<JsonNode>() {
        return Ok(node.resolve().clone());
    }
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// JSON as a minijinja value (see [`JsonNode`]).
pub fn from_json(value: &Json) -> Value {
    JsonNode {
        root: Arc::new(value.clone()),
        path: Vec::new(),
    }
    .into_value()
}

/// JSON seen by expressions in place: a lookup walks the document instead of converting it
/// into minijinja values first (which cost more than the rest of planning put together), and
/// an expression that yields a whole object hands back the JSON it points at.
#[derive(Debug)]
struct JsonNode {
    root: Arc<Json>,
    path: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

impl JsonNode {
    fn resolve(&self) -> &Json {
        let mut value = &*self.root;
        for step in &self.path {
            value = match (step, value) {
                (Step::Key(key), Json::Object(map)) => &map[key.as_str()],
                (Step::Index(index), Json::Array(items)) => &items[*index],
                _ => unreachable!("paths are built from the document itself"),
            };
        }
        value
    }

    fn into_value(self) -> Value {
        match self.resolve() {
            Json::Object(_) | Json::Array(_) => Value::from_object(self),
            scalar => scalar_value(scalar),
        }
    }

    fn child(&self, step: Step) -> Value {
        let mut path = self.path.clone();
        path.push(step);
        JsonNode {
            root: Arc::clone(&self.root),
            path,
        }
        .into_value()
    }
}

fn scalar_value(value: &Json) -> Value {
    match value {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (None, Some(u), _) => Value::from(u),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::from(()),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Object(_) | Json::Array(_) => unreachable!("containers are wrapped"),
    }
}

impl Object for JsonNode {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.resolve() {
            Json::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match self.resolve() {
            Json::Object(_) => self.get_value_by_str(key.as_str()?),
            Json::Array(items) => {
                let index = key.as_usize()?;
                (index < items.len()).then(|| self.child(Step::Index(index)))
            }
            _ => None,
        }
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        match self.resolve() {
            Json::Object(map) if map.contains_key(key) => {
                Some(self.child(Step::Key(key.to_owned())))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.resolve() {
            Json::Array(items) => Enumerator::Seq(items.len()),
            Json::Object(_) => self.mapped_enumerator(|this| match this.resolve() {
                Json::Object(map) => Box::new(map.keys().map(|k| Value::from(k.as_str()))),
                _ => Box::new(std::iter::empty()),
            }),
            _ => Enumerator::Empty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(value: Json) -> Value {
        from_json(&value)
    }

    #[test]
    fn one_expression_keeps_its_type_and_text_renders_to_a_string() {
        let context = ctx(
            json!({"event": {"properties": {"score": "72", "n": 3, "ok": true, "o": {"a": 1}}}}),
        );
        let cases = [
            (json!("{{ event.properties.score | int }}"), json!(72)),
            (json!("{{ event.properties.n * 2 }}"), json!(6)),
            (json!("{{ event.properties.ok }}"), json!(true)),
            (json!("{{ event.properties.o }}"), json!({"a": 1})),
            (json!("n={{ event.properties.n }}"), json!("n=3")),
            (json!("{{ event.missing.deeper }}"), json!(null)),
            (
                json!({"text": "score {{ event.properties.score }}", "k": 5}),
                json!({"text": "score 72", "k": 5}),
            ),
            (json!(42), json!(42)),
        ];
        for (template, expected) in cases {
            let compiled = ValueTemplate::compile(&template).unwrap();
            assert_eq!(compiled.render(&context).unwrap(), expected, "{template}");
        }
    }

    #[test]
    fn the_dialect_handles_missing_and_null_values() {
        let context = ctx(json!({"traits": {"plan": null, "tier": "pro"}}));
        for (source, expected) in [
            ("traits.tier is present", true),
            ("traits.plan is present", false),
            ("traits.nothing is present", false),
            ("traits.plan == null", true),
            (
                "{{ traits.tier == 'pro' and not (traits.plan is present) }}",
                true,
            ),
            ("no.such.path is present", false),
        ] {
            assert_eq!(
                Condition::compile(source).unwrap().test(&context).unwrap(),
                expected,
                "{source}"
            );
        }
    }

    #[test]
    fn filters_convert_dates_and_money_and_refuse_nonsense() {
        let context = ctx(
            json!({"at": "2026-11-29T10:00:00Z", "ms": 1_764_410_400_000_i64, "price": 19.99, "word": "soon"}),
        );
        let render = |s: &str| ValueTemplate::compile(&json!(s)).unwrap().render(&context);
        assert_eq!(render("{{ at | unix }}").unwrap(), json!(1_795_946_400));
        assert_eq!(render("{{ ms | unix }}").unwrap(), json!(1_764_410_400));
        assert_eq!(render("{{ price | cents }}").unwrap(), json!(1999));
        let error = render("{{ word | unix }}").unwrap_err();
        assert!(error.message.contains("not a date"), "{error}");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        for (source, hint) in [
            ("traits.plan && traits.tier", "write `and`"),
            ("traits.plan == \"pro\" && traits.mrr > 100", "write `and`"),
            ("a || b", "write `or`"),
            ("!traits.vip", "write `not`"),
        ] {
            let error = Condition::compile(source).unwrap_err();
            assert!(error.message.contains(hint), "{source}: {error}");
        }
        // Inside strings they are text; `!=` is Jinja.
        assert!(Condition::compile("event.event == 'R&&D' and a != b").is_ok());
        assert!(
            Condition::compile("traits.plan ==")
                .unwrap_err()
                .message
                .contains("syntax error")
        );
        assert!(ValueTemplate::compile(&json!("{{ unclosed ")).is_err());
    }

    #[test]
    fn expressions_too_large_to_parse_safely_are_compile_errors() {
        let sum = vec!["1"; 200_000].join(" + ");
        let error = Condition::compile(&sum).unwrap_err();
        assert!(error.message.contains("limited to 2000"), "{error}");
        let error = ValueTemplate::compile(&json!(format!("{{{{ {sum} }}}}"))).unwrap_err();
        assert!(error.message.contains("limited to 2000"), "{error}");
        // Inside a text template each expression is measured, and a quoted `}}` hides nothing.
        let hidden = format!("Hi {{{{ \"}}}}\" ~ {sum} }}}}!");
        assert!(ValueTemplate::compile(&json!(hidden)).is_err());
        let statement = format!("{{% if {sum} %}}x{{% endif %}}");
        assert!(ValueTemplate::compile(&json!(statement)).is_err());
        // Long text around short expressions is fine.
        let letter = format!("{}{{{{ traits.name }}}}", "Dear customer, ".repeat(1_000));
        assert!(ValueTemplate::compile(&json!(letter)).is_ok());
    }

    #[test]
    fn runaway_evaluations_stop_with_a_clear_error() {
        let context = ctx(json!({"n": 3}));
        let nested =
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
        let error = ValueTemplate::compile(&json!(nested))
            .unwrap()
            .render(&context)
            .unwrap_err();
        assert!(error.message.contains("fuel"), "{error}");
        let error = Condition::compile("range(100000) | map('string') | join | length > 1")
            .unwrap()
            .test(&context)
            .unwrap_err();
        assert!(error.message.contains("fuel"), "{error}");
        // Big results are refused whether fuel or the size limit catches them first.
        let error = ValueTemplate::compile(&json!("{{ 'x' * 70000 }}"))
            .unwrap()
            .render(&context)
            .unwrap_err();
        assert!(
            error.message.contains("over the limit") || error.message.contains("fuel"),
            "{error}"
        );
        // Ordinary work is nowhere near the limits.
        let fine = "{% for i in range(n) %}{{ i }},{% endfor %}";
        assert_eq!(
            ValueTemplate::compile(&json!(fine))
                .unwrap()
                .render(&context)
                .unwrap(),
            json!("0,1,2,")
        );
    }

    #[test]
    fn lints_point_at_work_that_will_run_out_of_fuel() {
        let text = "steps:\n  - intercom.note:\n      body: |\n        {% for a in range(100000) %}\n          {%- for b in items %}x{% endfor %}\n        {% endfor %}\n";
        let lints = lint_templates(text);
        assert_eq!(
            lints.iter().map(|l| (l.line, l.column)).collect::<Vec<_>>(),
            [(4, 21), (5, 11)]
        );
        assert!(lints[0].message.contains("range(100000)"));
        assert!(lints[1].message.contains("a loop inside a loop"));
        assert!(
            lint_templates("{% for i in range(10) %}{% endfor %}{% for j in x %}{% endfor %}")
                .is_empty()
        );
    }
}
