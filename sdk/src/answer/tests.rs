use super::*;

fn chunks(out: &StreamOutput) -> Vec<Value> {
    out.chunks.iter().map(|c| serde_json::from_slice(c).unwrap()).collect()
}

fn usage(prompt: u32, completion: u32) -> Usage {
    Usage { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
}

#[test]
fn every_chunk_keeps_the_id_model_and_created_time() {
    let mut b = ChunkBuilder::new("", "m");
    let mut out = StreamOutput::empty();
    b.set_id("ans-1");
    b.set_created(1_775_736_000);
    b.text(&mut out, "Hi");
    b.set_model("m-2");
    b.end(&mut out, FinishReason::Stop, Some(usage(3, 1)));
    let all = chunks(&out);
    assert_eq!(all.len(), 3);
    for chunk in &all {
        assert_eq!((chunk["id"].as_str(), chunk["object"].as_str()), (Some("ans-1"), Some("chat.completion.chunk")));
        assert_eq!(chunk["created"], 1_775_736_000);
    }
    assert_eq!((all[0]["model"].as_str(), all[2]["model"].as_str()), (Some("m"), Some("m-2")));
}

#[test]
fn the_role_is_sent_once_with_the_first_delta() {
    let mut b = ChunkBuilder::new("a", "m");
    let mut out = StreamOutput::empty();
    b.start(&mut out);
    b.start(&mut out);
    b.text(&mut out, "");
    b.text(&mut out, "Hello");
    let all = chunks(&out);
    assert_eq!(all.len(), 2, "a second start and an empty text emit nothing");
    assert_eq!(all[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(all[1]["choices"][0], json!({"index": 0, "delta": {"content": "Hello"}, "finish_reason": null}));
}

#[test]
fn tool_calls_are_streamed_as_openai_fragments() {
    let mut b = ChunkBuilder::new("a", "m");
    let mut out = StreamOutput::empty();
    b.tool_call_start(&mut out, 0, "call_1", "get_weather");
    b.tool_call_arguments(&mut out, 0, "{\"city\":");
    b.tool_call_arguments(&mut out, 0, "");
    b.tool_call_arguments(&mut out, 0, "\"Paris\"}");
    let all = chunks(&out);
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[0]["choices"][0]["delta"],
        json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
               "function": {"name": "get_weather", "arguments": ""}}]})
    );
    assert_eq!(
        all[2]["choices"][0]["delta"],
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})
    );
}

#[test]
fn end_emits_the_finish_then_the_usage_chunk_and_notes_both() {
    let mut b = ChunkBuilder::new("a", "m");
    let mut out = StreamOutput::empty();
    b.end(&mut out, FinishReason::ToolCalls, Some(usage(10, 5)));
    let all = chunks(&out);
    assert_eq!(all[0]["choices"], json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]));
    assert_eq!(all[1]["choices"], json!([]));
    assert_eq!(all[1]["usage"], json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}));
    assert_eq!((out.finish_reason, out.usage, out.done), (Some(FinishReason::ToolCalls), Some(usage(10, 5)), true));

    let mut out = StreamOutput::empty();
    b.end(&mut out, FinishReason::Length, None);
    assert_eq!(out.chunks.len(), 1, "no usage chunk without usage");
    assert!(out.usage.is_none());
}

#[test]
fn a_completion_carries_text_tool_calls_usage_and_finish_reason() {
    let call = json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
    let n = completion(Completion {
        id: "a".into(),
        model: "m".into(),
        text: Some("Hi".into()),
        tool_calls: vec![call.clone()],
        finish_reason: FinishReason::ToolCalls,
        usage: Some(usage(2, 1)),
        ..Completion::default()
    });
    let body: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(
        body,
        json!({"id": "a", "object": "chat.completion", "created": 0, "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi", "tool_calls": [call]},
                            "finish_reason": "tool_calls"}],
               "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})
    );
    assert_eq!((n.usage, n.finish_reason), (Some(usage(2, 1)), Some(FinishReason::ToolCalls)));

    let n = completion(Completion { finish_reason: FinishReason::Stop, ..Completion::default() });
    let body: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(body["choices"][0]["message"], json!({"role": "assistant", "content": null}));
    assert!(body.get("usage").is_none() && n.usage.is_none());
}
