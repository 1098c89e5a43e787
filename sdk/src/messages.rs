//! Reading OpenAI chat messages for a provider that wants them in another
//! shape: the text of a message whatever its content form, the system and
//! developer instructions pulled out of the conversation, consecutive turns
//! of one role merged (for providers that require alternating roles), and
//! checks for tool and image parts (to refuse what a provider cannot do).
//!
//! Messages stay [`serde_json::Value`]s, as in [`ChatRequest`](crate::ChatRequest):
//! these helpers never fail on an odd message, they read what is there.

use serde_json::{Value, json};

/// Content-part types that carry text (`text` in chat completions,
/// `input_text` in the newer OpenAI shapes).
const TEXT_PART_TYPES: &[&str] = &["text", "input_text"];

/// Content-part types that carry an image.
const IMAGE_PART_TYPES: &[&str] = &["image_url", "input_image", "image"];

/// The role of `message` (`""` when it has none).
pub fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

/// The text of a message's `content`: a string as is; the text parts of a
/// content-part list, joined with nothing between them (OpenAI splits one
/// text across parts that way); `""` for `null` or anything else.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(part_text).collect(),
        _ => String::new(),
    }
}

/// The text of `message` (see [`content_text`]).
pub fn message_text(message: &Value) -> String {
    message.get("content").map(content_text).unwrap_or_default()
}

/// The text of one content part, when it is a text part.
fn part_text(part: &Value) -> Option<&str> {
    let kind = part.get("type").and_then(Value::as_str)?;
    TEXT_PART_TYPES.contains(&kind).then(|| part.get("text").and_then(Value::as_str)).flatten()
}

/// A message's `content` as a content-part list: a string becomes one text
/// part, a list is kept, anything else is empty.
pub fn content_parts(content: &Value) -> Vec<Value> {
    match content {
        Value::String(text) => vec![json!({"type": "text", "text": text})],
        Value::Array(parts) => parts.clone(),
        _ => Vec::new(),
    }
}

/// Removes the `system` and `developer` messages from `messages`, wherever
/// they stand, and returns their text joined by a blank line (`None` when
/// there were none or all were empty). For providers that take the
/// instructions apart from the conversation.
pub fn take_system(messages: &mut Vec<Value>) -> Option<String> {
    let mut texts = Vec::new();
    messages.retain(|message| {
        if matches!(role(message), "system" | "developer") {
            texts.push(message_text(message));
            false
        } else {
            true
        }
    });
    let joined = texts.into_iter().filter(|t| !t.trim().is_empty()).collect::<Vec<_>>().join("\n\n");
    (!joined.is_empty()).then_some(joined)
}

/// Merges consecutive `user`, `assistant` or `system` messages into one, for
/// providers that require alternating roles. Two string contents join with
/// a blank line; otherwise the content parts are concatenated. Messages
/// that call or answer tools, or carry a `name`, are never merged.
pub fn merge_consecutive(messages: Vec<Value>) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(messages.len());
    for message in messages {
        match merged.last_mut() {
            Some(last) if mergeable(last) && mergeable(&message) && role(last) == role(&message) => {
                let content = match (last.get("content"), message.get("content")) {
                    (Some(Value::String(a)), Some(Value::String(b))) => Value::String(format!("{a}\n\n{b}")),
                    (a, b) => {
                        let mut parts = a.map(content_parts).unwrap_or_default();
                        parts.extend(b.map(content_parts).unwrap_or_default());
                        Value::Array(parts)
                    }
                };
                last["content"] = content;
            }
            _ => merged.push(message),
        }
    }
    merged
}

fn mergeable(message: &Value) -> bool {
    let Some(object) = message.as_object() else {
        return false;
    };
    matches!(role(message), "user" | "assistant" | "system")
        && !["tool_calls", "function_call", "tool_call_id", "name"].iter().any(|k| object.contains_key(*k))
}

/// Whether the conversation uses tools: a `tool` (or legacy `function`)
/// message, or an assistant message with `tool_calls` / `function_call`.
pub fn has_tool_parts(messages: &[Value]) -> bool {
    messages.iter().any(|message| {
        matches!(role(message), "tool" | "function")
            || message.get("tool_calls").is_some_and(|calls| !calls.is_null())
            || message.get("function_call").is_some_and(|call| !call.is_null())
    })
}

/// Whether any message has an image part (`image_url`, `input_image`,
/// `image`).
pub fn has_image_parts(messages: &[Value]) -> bool {
    messages
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .any(|part| part.get("type").and_then(Value::as_str).is_some_and(|kind| IMAGE_PART_TYPES.contains(&kind)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_comes_from_a_string_or_the_text_parts() {
        assert_eq!(content_text(&json!("Hi")), "Hi");
        assert_eq!(
            content_text(&json!([
                {"type": "text", "text": "Look "},
                {"type": "image_url", "image_url": {"url": "data:"}},
                {"type": "input_text", "text": "here"},
                {"type": "text"},
                "stray",
            ])),
            "Look here"
        );
        assert_eq!(content_text(&Value::Null), "");
        assert_eq!(message_text(&json!({"role": "assistant", "tool_calls": []})), "");
        assert_eq!(content_parts(&json!("x")), [json!({"type": "text", "text": "x"})]);
        assert!(content_parts(&json!(7)).is_empty());
    }

    #[test]
    fn system_and_developer_messages_are_taken_out_wherever_they_stand() {
        let mut messages = vec![
            json!({"role": "system", "content": "Be terse."}),
            json!({"role": "user", "content": "Hi"}),
            json!({"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]}),
            json!({"role": "system", "content": "  "}),
            json!({"role": "assistant", "content": "Salut"}),
        ];
        assert_eq!(take_system(&mut messages).as_deref(), Some("Be terse.\n\nAnswer in French."));
        assert_eq!(messages.iter().map(role).collect::<Vec<_>>(), ["user", "assistant"]);
        assert_eq!(take_system(&mut messages), None);
    }

    #[test]
    fn consecutive_turns_of_one_role_merge_but_tool_turns_do_not() {
        let merged = merge_consecutive(vec![
            json!({"role": "user", "content": "a"}),
            json!({"role": "user", "content": "b"}),
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}),
            json!({"role": "assistant", "content": "x"}),
            json!({"role": "tool", "tool_call_id": "1", "content": "r1"}),
            json!({"role": "tool", "tool_call_id": "2", "content": "r2"}),
            json!("not a message"),
            json!({"role": "user", "content": "c"}),
        ]);
        assert_eq!(merged.len(), 7);
        assert_eq!(
            merged[0],
            json!({"role": "user", "content": [
                {"type": "text", "text": "a\n\nb"},
                {"type": "image_url", "image_url": {"url": "u"}}
            ]})
        );
        assert_eq!(merged[2], json!({"role": "assistant", "content": "x"}));
        let merged = merge_consecutive(vec![
            json!({"role": "assistant", "content": "x"}),
            json!({"role": "assistant", "content": "y"}),
        ]);
        assert_eq!(merged, [json!({"role": "assistant", "content": "x\n\ny"})]);
    }

    #[test]
    fn tool_and_image_parts_are_detected() {
        let plain = [json!({"role": "user", "content": "hi"})];
        assert!(!has_tool_parts(&plain) && !has_image_parts(&plain));
        assert!(has_tool_parts(&[json!({"role": "tool", "tool_call_id": "1", "content": "r"})]));
        assert!(has_tool_parts(&[json!({"role": "assistant", "tool_calls": [{"id": "1"}]})]));
        assert!(!has_tool_parts(&[json!({"role": "assistant", "content": "x", "tool_calls": null})]));
        assert!(has_image_parts(&[json!({"role": "user", "content": [{"type": "image_url", "image_url": {}}]})]));
        assert!(!has_image_parts(&[json!({"role": "user", "content": [{"type": "text", "text": "image_url"}]})]));
    }
}
