//! Validation of OpenAI chat-completions request bodies, done before any
//! routing: a malformed request is answered at once with a 400 that lists
//! every problem found, each at a JSON path such as `messages.0.role`,
//! instead of travelling upstream to fail with a provider-specific message.
//!
//! Only the parameters of the OpenAI chat API are checked. Unknown keys, at
//! the top level or inside messages, are allowed: they are forwarded to the
//! provider untouched. Top-level parameters accept `null` where the OpenAI API
//! does; inside messages, tools and other nested objects an optional key set
//! to `null` counts as absent, since clients echo response messages back with
//! `"tool_calls": null`.
//!
//! A valid body is checked without allocating: paths are kept on the stack
//! and rendered only when a problem is recorded. At most [`MAX_ISSUES`]
//! problems are listed, so a huge invalid body cannot produce a huger answer.

use std::fmt;

use crate::json::{Json, JsonObject};

/// The most problems reported for one body; past it, a last issue at the root
/// says the list was cut.
pub const MAX_ISSUES: usize = 100;

const ROLES: &[&str] = &["system", "user", "assistant", "tool", "developer", "function"];
const ROLES_NEEDING_CONTENT: &[&str] = &["system", "user", "developer"];
const MAX_MESSAGES: usize = 2048;
const MAX_STOP_SEQUENCES: usize = 4;
const TOOL_TYPES: &[&str] = &["function"];
const TOOL_CHOICES: &[&str] = &["none", "auto", "required"];
const RESPONSE_FORMATS: &[&str] = &["text", "json_object", "json_schema"];
const REASONING_EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high"];
const MAX_FUNCTION_NAME: usize = 64;

/// One problem found in a request body: a JSON path and a message.
///
/// The path is dotted with array indices (`tools.1.function.name`); a problem
/// with the whole body has the empty path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Issue {
    /// Where the problem is, e.g. `messages.0.role`; empty for the body itself.
    pub path: String,
    /// What is wrong, e.g. `expected a number between 0 and 2, got 3`.
    pub message: String,
}

/// Validates a parsed chat request body. Returns every problem (up to
/// [`MAX_ISSUES`]), not just the first.
///
/// # Errors
///
/// The issues found, in the order the body's parameters are checked, when
/// there is at least one.
pub fn validate_chat_request(body: &Json<'_>) -> Result<(), Vec<Issue>> {
    let mut checker = Checker::default();
    checker.body(body);
    checker.finish()
}

/// Builds the human message for an `invalid_request` error: `<path>: <message>`
/// for each issue (`body` standing for the empty path), joined by `"; "`.
pub fn issues_message(issues: &[Issue]) -> String {
    let mut out = String::new();
    for (i, issue) in issues.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(if issue.path.is_empty() { "body" } else { &issue.path });
        out.push_str(": ");
        out.push_str(&issue.message);
    }
    out
}

/// A JSON path as a chain of stack frames, rendered only for an issue.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }

    /// Writes the path followed by a dot, or nothing for the root.
    fn prefix(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            _ => write!(f, "{self}."),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Path::Root => Ok(()),
            Path::Key(parent, key) => {
                parent.prefix(f)?;
                f.write_str(key)
            }
            Path::Index(parent, index) => {
                parent.prefix(f)?;
                write!(f, "{index}")
            }
        }
    }
}

/// The JSON type of a value, as named in messages.
fn kind(value: &Json<'_>) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// What a message says was found: a number itself, otherwise its type.
struct Got<'a>(&'a Json<'a>);

impl fmt::Display for Got<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Json::Number(n) => write!(f, "{n}"),
            other => f.write_str(kind(other)),
        }
    }
}

/// An integer value, whether it fits `i64` or only `u64`; `None` for a
/// fraction (including `5.0`) or a non-number.
fn as_integer(value: &Json<'_>) -> Option<i128> {
    let number = value.as_number()?;
    number.as_i64().map(i128::from).or_else(|| number.as_u64().map(i128::from))
}

/// The check for a number within `min..=max`.
fn number(min: f64, max: f64) -> impl Fn(&mut Checker, &Path<'_>, &Json<'_>) {
    move |c, path, value| c.number_between(path, value, min, max)
}

/// The check for an integer within the bounds given.
fn integer(min: Option<i64>, max: Option<i64>) -> impl Fn(&mut Checker, &Path<'_>, &Json<'_>) {
    move |c, path, value| c.integer_between(path, value, min, max)
}

/// The check for one of the `allowed` strings.
fn one_of(allowed: &'static [&'static str]) -> impl Fn(&mut Checker, &Path<'_>, &Json<'_>) {
    move |c, path, value| {
        c.one_of(path, value, allowed);
    }
}

/// Walks a body and collects its issues.
#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
    truncated: bool,
}

impl Checker {
    fn finish(mut self) -> Result<(), Vec<Issue>> {
        if self.truncated {
            self.issues.push(Issue {
                path: String::new(),
                message: format!("too many problems; only the first {MAX_ISSUES} are listed"),
            });
        }
        if self.issues.is_empty() { Ok(()) } else { Err(self.issues) }
    }

    fn is_full(&self) -> bool {
        self.issues.len() >= MAX_ISSUES
    }

    fn fail(&mut self, path: &Path<'_>, message: impl Into<String>) {
        if self.is_full() {
            self.truncated = true;
        } else {
            self.issues.push(Issue { path: path.to_string(), message: message.into() });
        }
    }

    fn wrong_type(&mut self, path: &Path<'_>, expected: &str, got: &Json<'_>) {
        self.fail(path, format!("expected {expected}, got {}", kind(got)));
    }

    // ---- The body -------------------------------------------------------

    fn body(&mut self, body: &Json<'_>) {
        let root = Path::Root;
        let Some(obj) = self.object(&root, body) else {
            return;
        };
        let root = &root;
        self.required(obj, root, "model", Self::non_empty_string);
        self.required(obj, root, "messages", Self::messages);
        self.nullable(obj, root, "stream", Self::boolean);
        self.nullable(obj, root, "stream_options", Self::stream_options);
        self.nullable(obj, root, "temperature", number(0.0, 2.0));
        self.nullable(obj, root, "top_p", number(0.0, 1.0));
        self.nullable(obj, root, "presence_penalty", number(-2.0, 2.0));
        self.nullable(obj, root, "frequency_penalty", number(-2.0, 2.0));
        self.nullable(obj, root, "max_tokens", integer(Some(1), None));
        self.nullable(obj, root, "max_completion_tokens", integer(Some(1), None));
        self.nullable(obj, root, "n", integer(Some(1), Some(128)));
        self.nullable(obj, root, "seed", integer(None, None));
        self.nullable(obj, root, "logprobs", Self::boolean);
        self.nullable(obj, root, "top_logprobs", integer(Some(0), Some(20)));
        self.nullable(obj, root, "logit_bias", |c, p, v| c.object_of(p, v, number(-100.0, 100.0)));
        self.nullable(obj, root, "stop", Self::stop);
        self.optional(obj, root, "tools", |c, p, v| c.array_of(p, v, Self::tool));
        self.optional(obj, root, "tool_choice", Self::tool_choice);
        self.optional(obj, root, "parallel_tool_calls", Self::boolean);
        self.optional(obj, root, "response_format", Self::response_format);
        self.nullable(obj, root, "reasoning_effort", one_of(REASONING_EFFORTS));
        self.optional(obj, root, "user", Self::string);
        self.nullable(obj, root, "metadata", |c, p, v| c.object_of(p, v, Self::string));
        self.nullable(obj, root, "store", Self::boolean);
        self.nullable(obj, root, "service_tier", Self::string);
        self.nullable(obj, root, "modalities", |c, p, v| c.array_of(p, v, Self::string));
    }

    fn stream_options(&mut self, path: &Path<'_>, value: &Json<'_>) {
        let Some(options) = self.object(path, value) else {
            return;
        };
        self.nullable(options, path, "include_usage", Self::boolean);
    }

    fn stop(&mut self, path: &Path<'_>, value: &Json<'_>) {
        match value {
            Json::String(_) => {}
            Json::Array(items) => {
                if items.len() > MAX_STOP_SEQUENCES {
                    let message = format!("expected at most {MAX_STOP_SEQUENCES} stop sequences, got {}", items.len());
                    self.fail(path, message);
                }
                self.each(path, items, Self::string);
            }
            other => self.wrong_type(path, "string or array of strings", other),
        }
    }

    // ---- Messages -------------------------------------------------------

    fn messages(&mut self, path: &Path<'_>, value: &Json<'_>) {
        let Some(messages) = self.array(path, value) else {
            return;
        };
        if messages.is_empty() {
            self.fail(path, "expected at least 1 message");
        } else if messages.len() > MAX_MESSAGES {
            let message = format!("expected at most {MAX_MESSAGES} messages, got {}", messages.len());
            self.fail(path, message);
        }
        self.each(path, messages, Self::message);
    }

    fn message(&mut self, path: &Path<'_>, value: &Json<'_>) {
        let Some(message) = self.object(path, value) else {
            return;
        };
        let role = self.required(message, path, "role", |c, p, v| c.one_of(p, v, ROLES)).flatten();
        let needs_content = role.is_some_and(|role| ROLES_NEEDING_CONTENT.contains(&role));
        if needs_content {
            self.required(message, path, "content", Self::content);
        } else {
            self.nullable(message, path, "content", Self::content);
        }
        if role == Some("tool") {
            self.required(message, path, "tool_call_id", Self::string);
        }
        self.nullable(message, path, "name", Self::string);
        self.nullable(message, path, "tool_calls", |c, p, v| c.array_of(p, v, Self::tool_call));
    }

    fn content(&mut self, path: &Path<'_>, value: &Json<'_>) {
        match value {
            Json::String(_) => {}
            Json::Array(parts) => self.each(path, parts, Self::content_part),
            other => self.wrong_type(path, "string or array", other),
        }
    }

    fn content_part(&mut self, path: &Path<'_>, value: &Json<'_>) {
        let Some(part) = self.object(path, value) else {
            return;
        };
        match self.required(part, path, "type", Self::string).flatten() {
            Some("text") => {
                self.required(part, path, "text", Self::string);
            }
            Some("image_url") => {
                self.required(part, path, "image_url", Self::image_url);
            }
            _ => {}
        }
    }

    fn image_url(&mut self, path: &Path<'_>, value: &Json<'_>) {
        match value {
            Json::String(_) => {}
            Json::Object(image) => {
                self.required(image, path, "url", Self::string);
            }
            other => self.wrong_type(path, "object or string", other),
        }
    }

    fn tool_call(&mut self, path: &Path<'_>, value: &Json<'_>) {
        let Some(call) = self.object(path, value) else {
            return;
        };
        self.required(call, path, "function", |c, p, v| {
            let Some(function) = c.object(p, v) else {
                return;
            };
            c.required(function, p, "name", Self::string);
            c.required(function, p, "arguments", Self::string);
        });
    }

    // ---- Tools and output format ------------------------------------------

    fn tool(&mut self, path: &Path<'_>, value: &Json<'_>) {
        let Some(tool) = self.object(path, value) else {
            return;
        };
        self.required(tool, path, "type", one_of(TOOL_TYPES));
        self.required(tool, path, "function", Self::function_definition);
    }

    fn function_definition(&mut self, path: &Path<'_>, value: &Json<'_>) {
        let Some(function) = self.object(path, value) else {
            return;
        };
        self.required(function, path, "name", Self::function_name);
        self.nullable(function, path, "description", Self::string);
        self.nullable(function, path, "parameters", |c, p, v| {
            c.object(p, v);
        });
        self.nullable(function, path, "strict", Self::boolean);
    }

    /// A function name must match `^[A-Za-z0-9_-]{1,64}$`.
    fn function_name(&mut self, path: &Path<'_>, value: &Json<'_>) {
        let Some(name) = self.string(path, value) else {
            return;
        };
        let valid = (1..=MAX_FUNCTION_NAME).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            self.fail(path, "expected 1 to 64 characters from A-Z, a-z, 0-9, _ and -");
        }
    }

    fn tool_choice(&mut self, path: &Path<'_>, value: &Json<'_>) {
        match value {
            Json::String(_) => {
                self.one_of(path, value, TOOL_CHOICES);
            }
            Json::Object(choice) => {
                self.required(choice, path, "type", one_of(TOOL_TYPES));
                self.required(choice, path, "function", |c, p, v| {
                    let Some(function) = c.object(p, v) else {
                        return;
                    };
                    c.required(function, p, "name", Self::string);
                });
            }
            other => self.wrong_type(path, "string or object", other),
        }
    }

    fn response_format(&mut self, path: &Path<'_>, value: &Json<'_>) {
        let Some(format) = self.object(path, value) else {
            return;
        };
        let kind = self.required(format, path, "type", |c, p, v| c.one_of(p, v, RESPONSE_FORMATS));
        if kind.flatten() == Some("json_schema") {
            self.required(format, path, "json_schema", |c, p, v| {
                let Some(schema) = c.object(p, v) else { return };
                c.required(schema, p, "name", Self::string);
                c.nullable(schema, p, "schema", |c, p, v| {
                    c.object(p, v);
                });
            });
        }
    }

    // ---- Keys of an object ----------------------------------------------

    /// `parent.key` must be present and not null; `check` runs on it.
    fn required<'v, R>(
        &mut self,
        obj: &'v JsonObject<'_>,
        parent: &Path<'_>,
        key: &str,
        check: impl FnOnce(&mut Self, &Path<'_>, &'v Json<'_>) -> R,
    ) -> Option<R> {
        let path = parent.key(key);
        match obj.get(key) {
            Some(value) if !value.is_null() => Some(check(self, &path, value)),
            _ => {
                self.fail(&path, "required");
                None
            }
        }
    }

    /// `parent.key` may be absent or null; otherwise `check` runs on it.
    fn nullable<'v, R>(
        &mut self,
        obj: &'v JsonObject<'_>,
        parent: &Path<'_>,
        key: &str,
        check: impl FnOnce(&mut Self, &Path<'_>, &'v Json<'_>) -> R,
    ) -> Option<R> {
        let value = obj.get(key).filter(|value| !value.is_null())?;
        Some(check(self, &parent.key(key), value))
    }

    /// `parent.key` may be absent; otherwise `check` runs on it, so `null`
    /// is reported as the wrong type.
    fn optional<'v, R>(
        &mut self,
        obj: &'v JsonObject<'_>,
        parent: &Path<'_>,
        key: &str,
        check: impl FnOnce(&mut Self, &Path<'_>, &'v Json<'_>) -> R,
    ) -> Option<R> {
        let value = obj.get(key)?;
        Some(check(self, &parent.key(key), value))
    }

    // ---- Values ---------------------------------------------------------

    fn string<'v>(&mut self, path: &Path<'_>, value: &'v Json<'_>) -> Option<&'v str> {
        let string = value.as_str();
        if string.is_none() {
            self.wrong_type(path, "string", value);
        }
        string
    }

    fn non_empty_string<'v>(&mut self, path: &Path<'_>, value: &'v Json<'_>) -> Option<&'v str> {
        let string = self.string(path, value)?;
        if string.is_empty() {
            self.fail(path, "expected a non-empty string");
            return None;
        }
        Some(string)
    }

    fn boolean(&mut self, path: &Path<'_>, value: &Json<'_>) -> Option<bool> {
        let boolean = value.as_bool();
        if boolean.is_none() {
            self.wrong_type(path, "boolean", value);
        }
        boolean
    }

    fn object<'v, 'j>(&mut self, path: &Path<'_>, value: &'v Json<'j>) -> Option<&'v JsonObject<'j>> {
        let object = value.as_object();
        if object.is_none() {
            self.wrong_type(path, "object", value);
        }
        object
    }

    fn array<'v, 'j>(&mut self, path: &Path<'_>, value: &'v Json<'j>) -> Option<&'v [Json<'j>]> {
        let array = value.as_array();
        if array.is_none() {
            self.wrong_type(path, "array", value);
        }
        array
    }

    /// An array whose items each pass `check`.
    fn array_of<'v, R>(
        &mut self,
        path: &Path<'_>,
        value: &'v Json<'_>,
        check: impl FnMut(&mut Self, &Path<'_>, &'v Json<'_>) -> R,
    ) {
        if let Some(items) = self.array(path, value) {
            self.each(path, items, check);
        }
    }

    /// An object whose values each pass `check`.
    fn object_of<'v, R>(
        &mut self,
        path: &Path<'_>,
        value: &'v Json<'_>,
        mut check: impl FnMut(&mut Self, &Path<'_>, &'v Json<'_>) -> R,
    ) {
        let Some(object) = self.object(path, value) else {
            return;
        };
        for (key, item) in object.iter() {
            if self.is_full() {
                self.truncated = true;
                return;
            }
            check(self, &path.key(key), item);
        }
    }

    /// Runs `check` on every item, at `path.<index>`.
    fn each<'v, R>(
        &mut self,
        path: &Path<'_>,
        items: &'v [Json<'_>],
        mut check: impl FnMut(&mut Self, &Path<'_>, &'v Json<'_>) -> R,
    ) {
        for (index, item) in items.iter().enumerate() {
            if self.is_full() {
                self.truncated = true;
                return;
            }
            check(self, &path.index(index), item);
        }
    }

    fn one_of<'v>(&mut self, path: &Path<'_>, value: &'v Json<'_>, allowed: &[&str]) -> Option<&'v str> {
        let string = self.string(path, value)?;
        if allowed.contains(&string) {
            return Some(string);
        }
        let message = match allowed {
            [only] => format!("expected \"{only}\""),
            _ => format!("expected one of: {}", allowed.join(", ")),
        };
        self.fail(path, message);
        None
    }

    fn number_between(&mut self, path: &Path<'_>, value: &Json<'_>, min: f64, max: f64) {
        if !value.as_number().and_then(serde_json::Number::as_f64).is_some_and(|x| (min..=max).contains(&x)) {
            let message = format!("expected a number between {min} and {max}, got {}", Got(value));
            self.fail(path, message);
        }
    }

    /// An integer (no fractional part, not even `.0`) within the bounds given.
    fn integer_between(&mut self, path: &Path<'_>, value: &Json<'_>, min: Option<i64>, max: Option<i64>) {
        let in_range = as_integer(value)
            .is_some_and(|n| min.is_none_or(|min| n >= i128::from(min)) && max.is_none_or(|max| n <= i128::from(max)));
        if in_range {
            return;
        }
        let expected = match (min, max) {
            (Some(min), Some(max)) => format!("an integer between {min} and {max}"),
            (Some(min), None) => format!("an integer >= {min}"),
            (None, Some(max)) => format!("an integer <= {max}"),
            (None, None) => "an integer".to_owned(),
        };
        self.fail(path, format!("expected {expected}, got {}", Got(value)));
    }
}

#[cfg(test)]
mod tests;
