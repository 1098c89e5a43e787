use serde_json::{Value, json};

use super::*;
use crate::openai_compat::{forward_request_to, map_request_to};
use crate::{CallContext, ChatRequest, FailureKind};

fn ctx(is_stream: bool) -> CallContext {
    CallContext { request_id: "r".into(), upstream_model: "up-model".into(), is_stream }
}

fn text(body: &[u8]) -> String {
    String::from_utf8(body.to_vec()).unwrap()
}

#[test]
fn an_untouched_body_is_written_back_byte_for_byte() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"h\u00e9llo \"q\" \n","x":{"deep":[1,2.50,1e3]}},{"role":"assistant","content":null}],"temperature":0.70,"extra":{"a":[true,null]}}"#;
    let req = ForwardRequest::parse(body).unwrap();
    assert_eq!(text(&req.to_vec(0).unwrap()), text(body));
    assert_eq!(req.messages.len(), 2);
    assert_eq!(req.messages[0].string("role").as_deref(), Some("user"));
}

#[test]
fn whitespace_between_fields_goes_and_values_keep_theirs() {
    let body = b" { \"model\" : \"m\" ,\n \"messages\" : [ { \"role\" : \"user\" , \"content\" : [ 1 , 2 ] } ] } ";
    let req = ForwardRequest::parse(body).unwrap();
    assert_eq!(text(&req.to_vec(0).unwrap()), r#"{"model":"m","messages":[{"role":"user","content":[ 1 , 2 ]}]}"#);
}

#[test]
fn keys_with_escapes_are_read_and_written_escaped() {
    let body = br#"{"mo\u0064el":"m","messages":[{"ro\"le":"x","role":"tool"}],"a\nb":1}"#;
    let req = ForwardRequest::parse(body).unwrap();
    assert_eq!(req.fields.string("model").as_deref(), Some("m"));
    assert_eq!(req.messages[0].string("ro\"le").as_deref(), Some("x"));
    let out: Value = serde_json::from_slice(&req.to_vec(0).unwrap()).unwrap();
    assert_eq!(out, json!({"model":"m","messages":[{"ro\"le":"x","role":"tool"}],"a\nb":1}));
}

#[test]
fn a_repeated_key_keeps_the_last_value_at_the_first_place() {
    let body = br#"{"model":"a","messages":[{"role":"user","content":"1","role":"tool"}],"model":"b","t":1}"#;
    let req = ForwardRequest::parse(body).unwrap();
    assert_eq!(text(&req.to_vec(0).unwrap()), r#"{"model":"b","messages":[{"role":"tool","content":"1"}],"t":1}"#);
    // The same reading as serde_json's ordered map, which the host validates with.
    let expected: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(serde_json::to_string(&expected).unwrap(), text(&req.to_vec(0).unwrap()));
}

#[test]
fn a_large_object_with_repeated_keys_reads_like_serde_json() {
    // Past the linear look-up: 40 keys, each twice, interleaved.
    let mut body = String::from(r#"{"messages":[],"#);
    for round in 0..2 {
        for k in 0..40 {
            body.push_str(&format!(r#""k{k}":[{round},{k}],"#));
        }
    }
    body.push_str(r#""messages":[{"role":"user"}]}"#);
    let req = ForwardRequest::parse(body.as_bytes()).unwrap();
    let expected: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(serde_json::to_string(&expected).unwrap(), text(&req.to_vec(0).unwrap()));
    assert_eq!(req.fields.len(), 41);
    assert_eq!(req.messages.len(), 1, "the last messages win");
}

#[test]
fn a_hostile_object_of_many_keys_is_read_in_near_linear_time() {
    // 200,000 distinct keys: a quadratic merge would take minutes.
    let mut body = String::from(r#"{"messages":[],"#);
    for k in 0..200_000 {
        body.push_str(&format!(r#""k{k}":0,"#));
    }
    body.push_str(r#""end":0}"#);
    let req = ForwardRequest::parse(body.as_bytes()).unwrap();
    assert_eq!(req.fields.len(), 200_002);
}

#[test]
fn fields_are_read_set_removed_and_renamed_in_place() {
    let body = br#"{"model":"m","messages":[],"n":2,"seed":7,"random_seed":1,"tool_choice":"required"}"#;
    let mut req = ForwardRequest::parse(body).unwrap();
    assert_eq!(req.fields.get::<u64>("n").unwrap(), Some(2));
    assert_eq!(req.fields.get::<u64>("absent").unwrap(), None);
    assert!(req.fields.get::<String>("n").is_err(), "a number is not a string");
    assert_eq!(req.fields.string("tool_choice").as_deref(), Some("required"));
    assert!(req.fields.raw("messages").is_none(), "the messages live apart");
    assert!(req.fields.contains("messages"));
    req.fields.set("tool_choice", &"any").unwrap();
    req.fields.set("new", &json!({"a": 1})).unwrap();
    assert!(req.fields.remove("n"));
    assert!(!req.fields.remove("n"));
    assert!(req.fields.rename("seed", "random_seed"), "replaces the one already there");
    assert!(req.fields.rename("model", "renamed"));
    assert!(!req.fields.rename("absent", "x"));
    assert!(req.fields.rename("new", "new"), "a rename to itself changes nothing");
    let keys: Vec<&str> = req.fields.keys().collect();
    assert_eq!(keys, ["renamed", "messages", "random_seed", "tool_choice", "new"]);
    req.messages.push(ForwardRequest::parse(br#"{"messages":[],"role":"user","name":"n"}"#).unwrap().fields);
    req.messages[0].retain(|key| key != "messages" && key != "name");
    assert_eq!(req.messages[0].keys().collect::<Vec<_>>(), ["role"]);
    assert_eq!(
        text(&req.to_vec(0).unwrap()),
        r#"{"renamed":"m","messages":[{"role":"user"}],"random_seed":7,"tool_choice":"any","new":{"a":1}}"#
    );
}

#[test]
fn strings_are_borrowed_unless_escaped() {
    let req = ForwardRequest::parse(br#"{"messages":[],"a":"x\ny","b":3,"c":"plain","d":"t\u006fol"}"#).unwrap();
    assert_eq!(req.fields.string("a").as_deref(), Some("x\ny"));
    assert_eq!(req.fields.string("b"), None, "not a string");
    assert_eq!(req.fields.string("absent"), None);
    assert!(matches!(req.fields.string("c"), Some(Cow::Borrowed("plain"))));
    assert!(matches!(req.fields.string("d"), Some(Cow::Owned(s)) if s == "tool"));
}

#[test]
fn messages_can_be_replaced_or_dropped_through_the_fields() {
    let mut req = ForwardRequest::parse(br#"{"model":"m","messages":[{"role":"user"}]}"#).unwrap();
    req.fields.set("messages", &json!([])).unwrap();
    assert_eq!(text(&req.to_vec(0).unwrap()), r#"{"model":"m","messages":[]}"#);
    assert!(req.fields.remove("messages"));
    assert_eq!(text(&req.to_vec(0).unwrap()), r#"{"model":"m"}"#);
}

#[test]
fn what_is_not_a_chat_request_object_is_refused() {
    for body in [
        &b""[..],
        b"{",
        b"[]",
        b"null",
        br#"{"model":"m"}"#,
        br#"{"messages":{}}"#,
        br#"{"messages":["text"]}"#,
        br#"{"messages":[{"role":}]}"#,
        br#"{"messages":[]} trailing"#,
        br#"{"messages":[],"a":tru}"#,
        b"{\"messages\":[],\"a\":\"\xff\"}",
        // Keys are borrowed without a second UTF-8 check: the scan's must
        // refuse every key that is not UTF-8.
        b"{\"messages\":[],\"\xff\":1}",
        b"{\"messages\":[],\"a\xc3\":1}",
        b"{\"messages\":[],\"\x80a\":1}",
        b"{\"messages\":[{\"role\xe2\x82\":\"user\"}]}",
        b"{\"messages\":[{\"\xed\xa0\x80\":\"user\"}]}",
    ] {
        assert!(ForwardRequest::parse(body).is_err(), "{}", String::from_utf8_lossy(body));
    }
}

/// The forward path and the parsed path map every body to the same JSON,
/// keys in the same order.
#[test]
fn forwarding_maps_like_the_parsed_path() {
    let bodies = [
        r#"{"model":"groq/x","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"groq/x","messages":[{"role":"user","content":"hi"}],"stream":true,"n":1,"logprobs":true}"#,
        r#"{"messages":[{"role":"user","content":"hi"}],"stream":false,"model":"x","logit_bias":{"1":2}}"#,
        r#"{"model":"x","stream":null,"messages":[],"temperature":0.5,"tools":[{"type":"function"}]}"#,
        r#"{"model":"x","messages":[{"role":"user","content":[{"type":"text","text":"a\u00e9"}]}],"user":"u"}"#,
    ];
    for body in bodies {
        for is_stream in [false, true] {
            let drop = ["logprobs", "logit_bias", "n"];
            let parsed = ChatRequest::from_slice(body.as_bytes()).unwrap();
            let old = map_request_to(&ctx(is_stream), parsed, "/p", &drop).unwrap();
            let new = forward_request_to(&ctx(is_stream), body.as_bytes(), "/p", &drop, |_| Ok(())).unwrap();
            let (old_json, new_json): (Value, Value) = (
                serde_json::from_slice(old.body.as_bytes().unwrap()).unwrap(),
                serde_json::from_slice(new.body.as_bytes().unwrap()).unwrap(),
            );
            assert_eq!(
                serde_json::to_string(&new_json).unwrap(),
                serde_json::to_string(&old_json).unwrap(),
                "{body} (stream: {is_stream})"
            );
            assert_eq!((new.path, new.method, new.headers), (old.path, old.method, old.headers));
        }
    }
}

#[test]
fn forwarding_refuses_a_model_or_stream_of_the_wrong_type() {
    for body in [r#"{"model":1,"messages":[]}"#, r#"{"model":"m","messages":[],"stream":"yes"}"#, r#"{"model":"m"}"#] {
        let failure = forward_request_to(&ctx(false), body.as_bytes(), "/p", &[], |_| Ok(())).unwrap_err();
        assert_eq!(failure.kind, FailureKind::RequestInvalid, "{body}");
        assert!(failure.message.starts_with("invalid chat request body"), "{}", failure.message);
    }
}

#[test]
fn the_edit_runs_and_its_failure_is_returned() {
    let body = br#"{"model":"m","messages":[{"role":"user","name":"a"},{"role":"tool","name":"b"}]}"#;
    let up = forward_request_to(&ctx(false), body, "/p", &[], |req| {
        for message in &mut req.messages {
            if message.string("role").as_deref() != Some("tool") {
                message.remove("name");
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        text(up.body.as_bytes().expect("a whole body")),
        r#"{"model":"up-model","messages":[{"role":"user"},{"role":"tool","name":"b"}]}"#
    );
    let failure =
        forward_request_to(&ctx(false), body, "/p", &[], |_| Err(crate::Failure::unsupported("no"))).unwrap_err();
    assert_eq!(failure.kind, FailureKind::Unsupported);
}

#[test]
fn null_empty_lists_and_moved_fields_are_read_as_the_adapters_need() {
    let body = br#"{"messages":[],"a":null,"b":[ ],"c":[1],"d":0,"from":5,"to":null,"x":1,"y":2,"n":null,"m":3}"#;
    let mut req = ForwardRequest::parse(body).unwrap();
    let f = &mut req.fields;
    assert!(f.non_null("a").is_none() && f.non_null("absent").is_none());
    assert_eq!(f.non_null("d").map(RawJson::get), Some("0"));
    assert!(!f.is_set("a") && !f.is_set("b") && !f.is_set("absent"), "null, [ ] and absent ask for nothing");
    assert!(f.is_set("c") && f.is_set("d"));
    f.move_unless_set("from", "to"); // `to` is null: `from` moves to `to`'s place
    f.move_unless_set("x", "y"); // `y` is set: it wins, `x` goes
    f.move_unless_set("n", "m"); // a null `from` goes
    f.move_unless_set("absent", "d");
    assert_eq!(text(&req.to_vec(0).unwrap()), r#"{"messages":[],"a":null,"b":[ ],"c":[1],"d":0,"to":5,"y":2,"m":3}"#);
}

#[test]
fn keys_outside_ascii_are_read_as_written() {
    let body = "{\"messages\":[{\"r\u{f4}le\":\"user\",\"\u{1f600}\":1}],\"m\u{e9}ta\":2}";
    let req = ForwardRequest::parse(body.as_bytes()).unwrap();
    assert_eq!(req.fields.keys().collect::<Vec<_>>(), ["messages", "m\u{e9}ta"]);
    assert_eq!(req.messages[0].keys().collect::<Vec<_>>(), ["r\u{f4}le", "\u{1f600}"]);
    assert_eq!(text(&req.to_vec(0).unwrap()), body);
}

/// Within a `map-request` call, long values of the call's body are named
/// by their place in it; assembled, the body is exactly the copied one.
/// A renamed field keeps its value named; a body the adapter made itself
/// is copied.
#[test]
fn within_a_call_long_values_are_named_and_the_assembled_body_is_the_copied_one() {
    use crate::splice::{CallBody, SPLICE_FROM};
    use crate::{PieceSource, RequestBody};

    let long = "a line with \\\"quotes\\\" and caf\\u00e9; ".repeat(2 * SPLICE_FROM / 30);
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"system","content":"short"}},{{"role":"user","content":"{long}"}},{{"role":"user","content":"{long}","name":"ann"}}],"x_vendor":"{long}","stream":true}}"#
    );
    let edit = |req: &mut ForwardRequest<'_>| {
        req.messages[2].remove("name");
        req.fields.rename("x_vendor", "vendor");
        Ok(())
    };
    let copied = forward_request_to(&ctx(false), body.as_bytes(), "/p", &[], edit).unwrap().body;
    let copied = copied.as_bytes().expect("outside a call the body is whole").to_vec();

    let call = CallBody::register(body.as_bytes());
    let spliced = forward_request_to(&ctx(false), body.as_bytes(), "/p", &[], edit).unwrap().body;
    // A body the adapter made itself is not the call's: copied.
    let other = body.clone();
    let own = forward_request_to(&ctx(false), other.as_bytes(), "/p", &[], edit).unwrap().body;
    drop(call);

    assert_eq!(own.as_bytes(), Some(copied.as_slice()));
    let RequestBody::Spliced(ref parts) = spliced else { panic!("a long prompt was copied: {spliced:?}") };
    let named: Vec<_> = parts.pieces.iter().filter(|p| p.source == PieceSource::Client).collect();
    // The two long messages and what lies between them are one range (the
    // text between them is the client's own); the renamed field's value is
    // a second.
    assert_eq!(named.len(), 2, "{:?}", parts.pieces);
    assert!(parts.written.len() < 200, "only the short parts were written: {}", parts.written.len());
    assert_eq!(text(&spliced.assemble(body.as_bytes()).unwrap()), text(&copied));
    let sent: Value = serde_json::from_slice(&copied).unwrap();
    assert_eq!(sent["model"], "up-model");
    assert_eq!(sent["messages"][2].get("name"), None);
    assert!(sent["vendor"].as_str().is_some_and(|v| v.len() > SPLICE_FROM));
}

/// Spliced and copied bodies agree: conversations made at random (turns
/// short and long, with escapes, compact or spaced as clients write them,
/// extra fields), each mapped with random edits inside a `map-request`
/// call and outside one; assembled, the spliced body is byte for byte the
/// copied one.
#[test]
fn spliced_bodies_assemble_to_the_copied_ones_on_random_conversations() {
    use crate::splice::{CallBody, SPLICE_FROM};
    use crate::test_random::below;

    let mut next = below(0x853c_49e6_748f_ea9b);
    let mut spliced_seen = 0;
    for round in 0..400 {
        let (colon, comma) = if next(3) == 0 { (": ", ", ") } else { (":", ",") };
        let turns: Vec<String> = (0..1 + next(8))
            .map(|i| {
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                let long = next(2) == 0;
                let content = words(&mut next, if long { 3 * SPLICE_FROM } else { 80 });
                let name = if next(4) == 0 { format!(r#"{comma}"name"{colon}"n{i}""#) } else { String::new() };
                format!(r#"{{"role"{colon}"{role}"{comma}"content"{colon}"{content}"{name}}}"#)
            })
            .collect();
        let extra = if next(2) == 0 {
            format!(r#"{comma}"x_note"{colon}"{}""#, words(&mut next, 2 * SPLICE_FROM))
        } else {
            String::new()
        };
        let body = format!(
            r#"{{"model"{colon}"m"{comma}"messages"{colon}[{}]{extra}{comma}"temperature"{colon}0.5}}"#,
            turns.join(comma)
        );
        let (drop_name, rename, set) = (next(2) == 0, [None, Some("note"), Some("x_nope")][next(3)], next(3) == 0);
        let edit = |req: &mut ForwardRequest<'_>| {
            if drop_name {
                for message in &mut req.messages {
                    message.remove("name");
                }
            }
            // A key of another length, or of the same length (only the
            // text itself tells the client's from the adapter's).
            if let Some(to) = rename {
                req.fields.rename("x_note", to);
            }
            if set {
                req.fields.set("temperature", &1)?;
            }
            Ok(())
        };
        let stream = next(2) == 0;
        let copied = forward_request_to(&ctx(stream), body.as_bytes(), "/p", &["n"], edit).unwrap().body;
        let copied = copied.as_bytes().expect("whole outside a call").to_vec();
        let call = CallBody::register(body.as_bytes());
        let mapped = forward_request_to(&ctx(stream), body.as_bytes(), "/p", &["n"], edit).unwrap().body;
        drop(call);
        if matches!(mapped, crate::RequestBody::Spliced(_)) {
            spliced_seen += 1;
        }
        assert_eq!(text(&mapped.assemble(body.as_bytes()).unwrap()), text(&copied), "round {round}: {body}");
    }
    assert!(spliced_seen > 100, "only {spliced_seen} of 400 bodies were spliced");
}

/// JSON string text of about `max` bytes at random (escapes and multi-byte
/// characters among the words).
fn words(next: &mut impl FnMut(usize) -> usize, max: usize) -> String {
    const WORDS: [&str; 7] = ["lorem", "caf\\u00e9", "\\\"q\\\"", "\\n", "ipsum dolor", "😀", "a\\\\b"];
    let target = next(max);
    let mut text = String::new();
    while text.len() < target {
        text.push_str(WORDS[next(WORDS.len())]);
        text.push(' ');
    }
    text
}
