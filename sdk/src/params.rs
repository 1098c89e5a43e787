//! Request parameters OpenAI lets a client write several ways, read once
//! into the one value a provider takes:
//!
//! * [`max_output_tokens`]: `max_completion_tokens` (current name) or
//!   `max_tokens` (legacy);
//! * [`stop_sequences`]: `stop` as a string or a list of strings.
//!
//! A value of the wrong type is the client's mistake: a `request-invalid`
//! failure naming the field, so the router does not try other providers.

use serde_json::Value;

use crate::{ChatRequest, Failure};

/// The completion token limit: `max_completion_tokens` when set, else
/// `max_tokens`; `None` when neither is (a `null` counts as not set). It must
/// be a whole number from 1 to `u32::MAX`.
pub fn max_output_tokens(req: &ChatRequest) -> Result<Option<u32>, Failure> {
    let given = |value: &Option<Value>| value.as_ref().filter(|v| !v.is_null()).cloned();
    let (field, value) = match (given(&req.max_completion_tokens), given(&req.max_tokens)) {
        (Some(value), _) => ("max_completion_tokens", value),
        (None, Some(value)) => ("max_tokens", value),
        (None, None) => return Ok(None),
    };
    match value.as_u64().map(u32::try_from) {
        Some(Ok(n)) if n > 0 => Ok(Some(n)),
        _ => Err(Failure::request_invalid(format!(
            "`{field}` must be a whole number from 1 to {}, got {value}",
            u32::MAX
        ))),
    }
}

/// The stop sequences: `stop` as a string (one sequence) or a list of
/// strings; empty strings are dropped; none when absent or `null`.
pub fn stop_sequences(req: &ChatRequest) -> Result<Vec<String>, Failure> {
    let invalid =
        |value: &Value| Failure::request_invalid(format!("`stop` must be a string or a list of strings, got {value}"));
    match &req.stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(stop)) => Ok([stop.clone()].into_iter().filter(|s| !s.is_empty()).collect()),
        Some(Value::Array(list)) => list
            .iter()
            .filter(|item| item.as_str() != Some(""))
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| invalid(item)))
            .collect(),
        Some(other) => Err(invalid(other)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::FailureKind;

    fn request(fields: Value) -> ChatRequest {
        let mut body = json!({"model": "m", "messages": []});
        if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
            body.extend(fields.clone());
        }
        ChatRequest::from_slice(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        assert_eq!(max_output_tokens(&request(json!({"max_tokens": 100}))), Ok(Some(100)));
        assert_eq!(max_output_tokens(&request(json!({"max_tokens": 100, "max_completion_tokens": 50}))), Ok(Some(50)));
        assert_eq!(
            max_output_tokens(&request(json!({"max_tokens": 100, "max_completion_tokens": null}))),
            Ok(Some(100))
        );
        assert_eq!(max_output_tokens(&request(json!({"max_tokens": null}))), Ok(None));
        assert_eq!(max_output_tokens(&request(json!({}))), Ok(None));
    }

    #[test]
    fn a_bad_token_limit_is_the_clients_mistake_and_names_the_field() {
        for (fields, field) in [
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": -1}), "max_tokens"),
            (json!({"max_tokens": 1.5}), "max_tokens"),
            (json!({"max_tokens": "100"}), "max_tokens"),
            (json!({"max_completion_tokens": 5_000_000_000_u64}), "max_completion_tokens"),
        ] {
            let f = max_output_tokens(&request(fields.clone())).unwrap_err();
            assert_eq!(f.kind, FailureKind::RequestInvalid, "{fields}");
            assert!(f.message.starts_with(&format!("`{field}`")), "{}", f.message);
        }
    }

    #[test]
    fn stop_is_a_string_or_a_list() {
        assert_eq!(stop_sequences(&request(json!({"stop": "END"}))), Ok(vec!["END".to_owned()]));
        assert_eq!(stop_sequences(&request(json!({"stop": ["a", "", "b"]}))), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(stop_sequences(&request(json!({"stop": ""}))), Ok(vec![]));
        assert_eq!(stop_sequences(&request(json!({"stop": null}))), Ok(vec![]));
        assert_eq!(stop_sequences(&request(json!({}))), Ok(vec![]));
        for bad in [json!({"stop": 3}), json!({"stop": ["a", 1]}), json!({"stop": {"x": 1}})] {
            assert_eq!(stop_sequences(&request(bad)).unwrap_err().kind, FailureKind::RequestInvalid);
        }
    }
}
