use serde_json::{Value, json};

use super::*;

fn minimal() -> Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
}

/// The minimal body with `key` set to `value`.
fn with(key: &str, value: Value) -> Value {
    let mut body = minimal();
    if let Value::Object(obj) = &mut body {
        obj.insert(key.to_owned(), value);
    }
    body
}

/// The minimal body with one message replaced.
fn with_message(message: Value) -> Value {
    with("messages", json!([message]))
}

/// Validates `body` as the gateway reads it: from its text.
fn validate(body: &Value) -> Result<(), Vec<Issue>> {
    let text = body.to_string();
    validate_chat_request(&Json::parse(&text).expect("JSON"))
}

fn issues(body: &Value) -> Vec<(String, String)> {
    match validate(body) {
        Ok(()) => Vec::new(),
        Err(issues) => issues.into_iter().map(|i| (i.path, i.message)).collect(),
    }
}

/// Asserts the body has exactly one issue, at `path`, and returns its message.
#[track_caller]
fn only_issue(body: &Value, path: &str) -> String {
    let found = issues(body);
    assert_eq!(found.len(), 1, "expected one issue, got {found:?}");
    assert_eq!(found[0].0, path, "{found:?}");
    found[0].1.clone()
}

#[track_caller]
fn assert_valid(body: &Value) {
    assert_eq!(issues(body), Vec::<(String, String)>::new());
}

#[test]
fn minimal_body_is_valid() {
    assert_valid(&minimal());
}

#[test]
fn body_with_every_field_valid_is_accepted() {
    let body = json!({
        "model": "groq/llama-3.1-8b-instant",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "system", "content": [{"type": "text", "text": "really"}]},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
            {"role": "function", "name": "look", "content": "a cat"},
            {"role": "assistant", "content": "A cat.", "tool_calls": null, "refusal": null}
        ],
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0.7,
        "top_p": 1,
        "presence_penalty": -2,
        "frequency_penalty": 2.0,
        "max_tokens": 100,
        "max_completion_tokens": 1_000_000,
        "n": 128,
        "seed": u64::MAX,
        "logprobs": true,
        "top_logprobs": 20,
        "logit_bias": {"50256": -100, "13": 100, "7": 0.5},
        "stop": ["\n", "END", "###", "."],
        "tools": [{"type": "function", "function": {
            "name": "look_At-2",
            "description": "look at a thing",
            "parameters": {"type": "object", "properties": {}},
            "strict": true
        }}],
        "tool_choice": {"type": "function", "function": {"name": "look_At-2"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
        "reasoning_effort": "minimal",
        "user": "user-1",
        "metadata": {"team": "a"},
        "store": false,
        "service_tier": "auto",
        "modalities": ["text"]
    });
    assert_valid(&body);
}

#[test]
fn nullable_parameters_accept_null() {
    for key in [
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "seed",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "stop",
        "reasoning_effort",
        "metadata",
        "store",
        "service_tier",
        "modalities",
    ] {
        assert_valid(&with(key, Value::Null));
    }
}

#[test]
fn non_nullable_parameters_reject_null() {
    assert_eq!(
        only_issue(&with("parallel_tool_calls", Value::Null), "parallel_tool_calls"),
        "expected boolean, got null"
    );
    assert_eq!(only_issue(&with("tools", Value::Null), "tools"), "expected array, got null");
    assert_eq!(only_issue(&with("user", Value::Null), "user"), "expected string, got null");
}

#[test]
fn unknown_top_level_and_message_fields_are_accepted() {
    let mut body = with("x_provider_hint", json!({"anything": [1, 2]}));
    body["messages"][0]["cache_control"] = json!({"type": "ephemeral"});
    assert_valid(&body);
}

#[test]
fn non_object_body_is_rejected_at_the_root() {
    assert_eq!(only_issue(&json!([1]), ""), "expected object, got array");
    assert_eq!(only_issue(&Value::Null, ""), "expected object, got null");
}

#[test]
fn missing_model_is_required() {
    let mut body = minimal();
    body.as_object_mut().map(|obj| obj.remove("model"));
    assert_eq!(only_issue(&body, "model"), "required");
    assert_eq!(only_issue(&with("model", Value::Null), "model"), "required");
}

#[test]
fn empty_model_is_rejected() {
    assert_eq!(only_issue(&with("model", json!("")), "model"), "expected a non-empty string");
    assert_eq!(only_issue(&with("model", json!(7)), "model"), "expected string, got number");
}

#[test]
fn missing_messages_is_required() {
    let mut body = minimal();
    body.as_object_mut().map(|obj| obj.remove("messages"));
    assert_eq!(only_issue(&body, "messages"), "required");
}

#[test]
fn empty_messages_is_rejected() {
    assert_eq!(only_issue(&with("messages", json!([])), "messages"), "expected at least 1 message");
    assert_eq!(only_issue(&with("messages", json!("hi")), "messages"), "expected array, got string");
}

#[test]
fn more_than_2048_messages_is_rejected() {
    let message = json!({"role": "user", "content": "hi"});
    assert_valid(&with("messages", Value::Array(vec![message.clone(); 2048])));
    let body = with("messages", Value::Array(vec![message; 2049]));
    assert_eq!(only_issue(&body, "messages"), "expected at most 2048 messages, got 2049");
}

#[test]
fn unknown_role_is_rejected() {
    let body = with_message(json!({"role": "robot", "content": "hi"}));
    assert_eq!(
        only_issue(&body, "messages.0.role"),
        "expected one of: system, user, assistant, tool, developer, function"
    );
    let body = with_message(json!({"content": "hi"}));
    assert_eq!(only_issue(&body, "messages.0.role"), "required");
}

#[test]
fn message_that_is_not_an_object_is_rejected() {
    let body = with_message(json!("hi"));
    assert_eq!(only_issue(&body, "messages.0"), "expected object, got string");
}

#[test]
fn tool_message_without_tool_call_id_is_rejected() {
    let body = with_message(json!({"role": "tool", "content": "42"}));
    assert_eq!(only_issue(&body, "messages.0.tool_call_id"), "required");
    let body = with_message(json!({"role": "tool", "content": "42", "tool_call_id": 1}));
    assert_eq!(only_issue(&body, "messages.0.tool_call_id"), "expected string, got number");
}

#[test]
fn user_message_without_content_is_rejected() {
    for role in ["user", "system", "developer"] {
        let body = with_message(json!({"role": role}));
        assert_eq!(only_issue(&body, "messages.0.content"), "required");
        let body = with_message(json!({"role": role, "content": null}));
        assert_eq!(only_issue(&body, "messages.0.content"), "required");
    }
    let body = with_message(json!({"role": "user", "content": 5}));
    assert_eq!(only_issue(&body, "messages.0.content"), "expected string or array, got number");
}

#[test]
fn assistant_message_with_tool_calls_and_no_content_is_accepted() {
    let body = with_message(json!({"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]}));
    assert_valid(&body);
}

#[test]
fn tool_call_without_arguments_is_rejected() {
    let body = with_message(json!({"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}},
        {"id": "d", "type": "function"}
    ]}));
    assert_eq!(
        issues(&body),
        vec![
            ("messages.0.tool_calls.0.function.arguments".into(), "expected string, got object".into()),
            ("messages.0.tool_calls.1.function".into(), "required".into()),
        ]
    );
}

#[test]
fn content_part_without_type_is_rejected() {
    let body = with_message(json!({"role": "user", "content": [{"text": "hi"}]}));
    assert_eq!(only_issue(&body, "messages.0.content.0.type"), "required");
    let body = with_message(json!({"role": "user", "content": [{"type": "text"}]}));
    assert_eq!(only_issue(&body, "messages.0.content.0.text"), "required");
    let body = with_message(json!({"role": "user", "content": ["hi"]}));
    assert_eq!(only_issue(&body, "messages.0.content.0"), "expected object, got string");
}

#[test]
fn image_part_with_url_object_or_string_is_accepted() {
    let body = with_message(json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": "https://x/y.png"}
    ]}));
    assert_valid(&body);
}

#[test]
fn image_part_without_url_is_rejected() {
    let body = with_message(json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"detail": "high"}},
        {"type": "image_url", "image_url": 3},
        {"type": "image_url"}
    ]}));
    assert_eq!(
        issues(&body),
        vec![
            ("messages.0.content.0.image_url.url".into(), "required".into()),
            ("messages.0.content.1.image_url".into(), "expected object or string, got number".into()),
            ("messages.0.content.2.image_url".into(), "required".into()),
        ]
    );
}

#[test]
fn temperature_above_two_is_rejected() {
    let message = only_issue(&with("temperature", json!(3)), "temperature");
    assert_eq!(message, "expected a number between 0 and 2, got 3");
    let message = only_issue(&with("temperature", json!(-0.5)), "temperature");
    assert_eq!(message, "expected a number between 0 and 2, got -0.5");
    assert_valid(&with("temperature", json!(2)));
    assert_valid(&with("temperature", json!(0)));
}

#[test]
fn temperature_of_the_wrong_type_is_rejected() {
    let message = only_issue(&with("temperature", json!("0.5")), "temperature");
    assert_eq!(message, "expected a number between 0 and 2, got string");
}

#[test]
fn other_sampling_parameters_are_range_checked() {
    assert_eq!(only_issue(&with("top_p", json!(1.5)), "top_p"), "expected a number between 0 and 1, got 1.5");
    let message = only_issue(&with("presence_penalty", json!(-3)), "presence_penalty");
    assert_eq!(message, "expected a number between -2 and 2, got -3");
    let message = only_issue(&with("logit_bias", json!({"50256": 101})), "logit_bias.50256");
    assert_eq!(message, "expected a number between -100 and 100, got 101");
    let message = only_issue(&with("top_logprobs", json!(21)), "top_logprobs");
    assert_eq!(message, "expected an integer between 0 and 20, got 21");
    assert_eq!(only_issue(&with("n", json!(0)), "n"), "expected an integer between 1 and 128, got 0");
    assert_eq!(only_issue(&with("seed", json!(1.5)), "seed"), "expected an integer, got 1.5");
}

#[test]
fn max_tokens_zero_is_rejected() {
    let message = only_issue(&with("max_tokens", json!(0)), "max_tokens");
    assert_eq!(message, "expected an integer >= 1, got 0");
    assert_valid(&with("max_tokens", json!(1)));
}

#[test]
fn max_tokens_with_a_fraction_is_rejected() {
    let message = only_issue(&with("max_tokens", json!(1.5)), "max_tokens");
    assert_eq!(message, "expected an integer >= 1, got 1.5");
    let message = only_issue(&with("max_completion_tokens", json!(5.0)), "max_completion_tokens");
    assert_eq!(message, "expected an integer >= 1, got 5.0");
    let message = only_issue(&with("max_tokens", json!("10")), "max_tokens");
    assert_eq!(message, "expected an integer >= 1, got string");
}

#[test]
fn stop_with_five_entries_is_rejected() {
    let body = with("stop", json!(["a", "b", "c", "d", "e"]));
    assert_eq!(only_issue(&body, "stop"), "expected at most 4 stop sequences, got 5");
    assert_valid(&with("stop", json!("END")));
    assert_eq!(only_issue(&with("stop", json!(["a", 1])), "stop.1"), "expected string, got number");
    assert_eq!(only_issue(&with("stop", json!(1)), "stop"), "expected string or array of strings, got number");
}

#[test]
fn tool_with_non_function_type_is_rejected() {
    let body = with("tools", json!([{"type": "retrieval", "function": {"name": "f"}}]));
    assert_eq!(only_issue(&body, "tools.0.type"), "expected \"function\"");
    let body = with("tools", json!([{"type": "function"}]));
    assert_eq!(only_issue(&body, "tools.0.function"), "required");
}

#[test]
fn tool_with_bad_name_is_rejected() {
    let expected = "expected 1 to 64 characters from A-Z, a-z, 0-9, _ and -";
    for name in ["has space", "", "é", &"x".repeat(65)] {
        let body = with("tools", json!([{"type": "function", "function": {"name": name}}]));
        assert_eq!(only_issue(&body, "tools.0.function.name"), expected, "name {name:?}");
    }
    let body = with("tools", json!([{"type": "function", "function": {"name": &"x".repeat(64)}}]));
    assert_valid(&body);
}

#[test]
fn tool_choice_strings_and_object_are_accepted() {
    for choice in ["none", "auto", "required"] {
        assert_valid(&with("tool_choice", json!(choice)));
    }
    assert_valid(&with("tool_choice", json!({"type": "function", "function": {"name": "f"}})));
}

#[test]
fn bad_tool_choice_is_rejected() {
    let message = only_issue(&with("tool_choice", json!("any")), "tool_choice");
    assert_eq!(message, "expected one of: none, auto, required");
    let body = with("tool_choice", json!({"type": "function", "function": {}}));
    assert_eq!(only_issue(&body, "tool_choice.function.name"), "required");
    let message = only_issue(&with("tool_choice", json!(true)), "tool_choice");
    assert_eq!(message, "expected string or object, got boolean");
}

#[test]
fn json_schema_response_format_without_name_is_rejected() {
    let body = with("response_format", json!({"type": "json_schema", "json_schema": {"schema": {}}}));
    assert_eq!(only_issue(&body, "response_format.json_schema.name"), "required");
    let body = with("response_format", json!({"type": "json_schema"}));
    assert_eq!(only_issue(&body, "response_format.json_schema"), "required");
    assert_valid(&with("response_format", json!({"type": "json_object"})));
    let body = with("response_format", json!({"type": "xml"}));
    assert_eq!(only_issue(&body, "response_format.type"), "expected one of: text, json_object, json_schema");
}

#[test]
fn unknown_reasoning_effort_is_rejected() {
    let message = only_issue(&with("reasoning_effort", json!("max")), "reasoning_effort");
    assert_eq!(message, "expected one of: none, minimal, low, medium, high");
}

#[test]
fn metadata_with_a_non_string_value_is_rejected() {
    let body = with("metadata", json!({"team": "a", "count": 2}));
    assert_eq!(only_issue(&body, "metadata.count"), "expected string, got number");
}

#[test]
fn multiple_issues_are_reported_together_with_paths() {
    let body = json!({
        "model": "",
        "messages": [
            {"role": "user", "content": "ok"},
            {"role": "wizard", "content": "hi"},
            {"role": "tool", "content": "x"}
        ],
        "temperature": 3,
        "tools": [
            {"type": "function", "function": {"name": "ok"}},
            {"type": "function", "function": {"name": "bad name"}}
        ],
        "stream": "yes"
    });
    assert_eq!(
        issues(&body),
        vec![
            ("model".into(), "expected a non-empty string".into()),
            ("messages.1.role".into(), "expected one of: system, user, assistant, tool, developer, function".into()),
            ("messages.2.tool_call_id".into(), "required".into()),
            ("stream".into(), "expected boolean, got string".into()),
            ("temperature".into(), "expected a number between 0 and 2, got 3".into()),
            ("tools.1.function.name".into(), "expected 1 to 64 characters from A-Z, a-z, 0-9, _ and -".into()),
        ]
    );
}

#[test]
fn issue_list_is_cut_at_the_maximum() {
    let body = with("messages", Value::Array(vec![json!(1); 500]));
    let Err(found) = validate(&body) else { panic!("expected issues") };
    assert_eq!(found.len(), MAX_ISSUES + 1);
    assert_eq!(found[MAX_ISSUES - 1].path, format!("messages.{}", MAX_ISSUES - 1));
    assert_eq!(found[MAX_ISSUES].path, "");
    assert_eq!(found[MAX_ISSUES].message, "too many problems; only the first 100 are listed");
}

#[test]
fn issues_message_joins_paths_and_messages() {
    let issues = [
        Issue { path: String::new(), message: "expected object, got array".into() },
        Issue { path: "messages.0.role".into(), message: "required".into() },
    ];
    assert_eq!(issues_message(&issues), "body: expected object, got array; messages.0.role: required");
    assert_eq!(issues_message(&[]), "");
}

#[test]
fn issue_serializes_as_path_and_message() {
    let issue = Issue { path: "model".into(), message: "required".into() };
    let json = serde_json::to_value(&issue).ok();
    assert_eq!(json, Some(json!({"path": "model", "message": "required"})));
}
