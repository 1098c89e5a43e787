//! End-to-end: `freellm plugin bench` times real components' `map-request`
//! (and `normalize-response`, given an answer; the stream normalizer per
//! event, given a streamed answer) in turns and reports each round and the
//! medians, and how each component's mapped body is made (whole, or
//! spliced from the client's); a body, answer or stream the adapter refuses, a stream with no
//! event, or a file that is not a component, is a clear error.

use std::process::Output;

use freellm_e2e::*;

fn bench(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let Output { status, stdout, stderr } = plugin_command("bench").args(args).output().expect("freellm runs");
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

/// `text` (a report, or one of its tables) has `rounds` round lines, each
/// with a positive time for each of `components`.
fn assert_rounds(text: &str, rounds: usize, components: usize) {
    let lines: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().skip(1).map(|t| t.parse().expect("a time")).collect())
        .collect();
    assert_eq!(lines.len(), rounds, "{text}");
    assert!(lines.iter().all(|r| r.len() == components && r.iter().all(|&t| t > 0.0)), "{text}");
}

#[test]
fn two_components_are_timed_in_turns_and_compared_with_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    let content = "a long user turn ".repeat(4096);
    std::fs::write(
        &body,
        format!(r#"{{"model":"groq/llama-3.3-70b-versatile","messages":[{{"role":"user","content":"{content}"}}]}}"#),
    )
    .unwrap();
    let groq = component_path("freellm-provider-groq");
    let mistral = component_path("freellm-provider-mistral");
    let (ok, out, err) = bench(&[
        groq.as_os_str(),
        mistral.as_os_str(),
        "--body".as_ref(),
        body.as_os_str(),
        "--calls".as_ref(),
        "20".as_ref(),
        "--rounds".as_ref(),
        "3".as_ref(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("20 calls a round, 3 rounds"), "{out}");
    assert!(out.contains("groq llama-3.3-70b-versatile") && out.contains("mistral"), "{out}");
    // Three rounds, each with a positive time for both components.
    assert_rounds(&out, 3, 2);
    let median = out.lines().find(|l| l.starts_with("median")).expect("a median line");
    assert!(median.contains("× [1])"), "{out}");
    assert!(out.contains("map-request") && !out.contains("normalize-response"), "no answer, no second table: {out}");
    // How each component's body is made: groq names the long turn as a
    // range of the client's body (contract 0.3).
    let groq_body = out.lines().nth(2).expect("groq's body line");
    assert!(groq_body.trim_start().starts_with("map-request's body: spliced, "), "{out}");
    let named: u64 =
        groq_body.split("spliced, ").nth(1).and_then(|t| t.split(' ').next()?.parse().ok()).expect("bytes named");
    assert!(named >= content.len() as u64, "{out}");

    // A 0.2 component's body is whole.
    let v02 = component_path("freellm-test-adapter-v02");
    let (ok, out, err) = bench(&[
        v02.as_os_str(),
        "--body".as_ref(),
        body.as_os_str(),
        "--calls".as_ref(),
        "5".as_ref(),
        "--rounds".as_ref(),
        "1".as_ref(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("map-request's body: whole, "), "{out}");

    // With an upstream answer, normalize-response is timed too.
    let answer = dir.path().join("answer.json");
    std::fs::write(&answer, completion("m", "hi").to_string()).unwrap();
    let (ok, out, err) = bench(&[
        groq.as_os_str(),
        "--body".as_ref(),
        body.as_os_str(),
        "--answer".as_ref(),
        answer.as_os_str(),
        "--calls".as_ref(),
        "20".as_ref(),
        "--rounds".as_ref(),
        "2".as_ref(),
    ]);
    assert!(ok, "{out}{err}");
    let tables: Vec<&str> = out.split("\nmap-request\n").collect();
    assert_eq!(tables.len(), 2, "{out}");
    let (map, normalize) = tables[1].split_once("\nnormalize-response\n").expect("a normalize-response table");
    for table in [map, normalize] {
        assert_eq!(table.lines().filter(|l| l.starts_with("median")).count(), 1, "{out}");
        assert_eq!(
            table.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count(),
            2,
            "{out}"
        );
    }
}

#[test]
fn a_body_the_adapter_refuses_or_a_file_that_is_no_component_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, br#"{"model":"x","messages":"not a list"}"#).unwrap();
    let groq = component_path("freellm-provider-groq");
    let (ok, out, err) = bench(&[groq.as_os_str(), "--body".as_ref(), body.as_os_str()]);
    assert!(!ok, "{out}");
    assert!(err.contains("map-request refused the body (request-invalid): invalid chat request body"), "{err}");

    // An answer the adapter cannot read is refused by name.
    let good = dir.path().join("good.json");
    std::fs::write(&good, br#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    let bad_answer = dir.path().join("bad-answer.json");
    std::fs::write(&bad_answer, b"not json").unwrap();
    let (ok, out, err) =
        bench(&[groq.as_os_str(), "--body".as_ref(), good.as_os_str(), "--answer".as_ref(), bad_answer.as_os_str()]);
    assert!(!ok, "{out}");
    assert!(err.contains("normalize-response refused the answer (transient): malformed upstream answer"), "{err}");

    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, b"not a component").unwrap();
    let (ok, out, err) = bench(&[not_wasm.as_os_str(), "--body".as_ref(), body.as_os_str()]);
    assert!(!ok, "{out}");
    assert!(err.contains("not.wasm"), "{err}");

    let (ok, _, err) = bench(&[groq.as_os_str(), "--body".as_ref(), dir.path().join("missing.json").as_os_str()]);
    assert!(!ok);
    assert!(err.contains("cannot read") && err.contains("missing.json"), "{err}");
}

#[test]
fn a_streamed_answer_is_framed_as_the_adapter_declares_and_timed_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, br#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    let stream = dir.path().join("stream.sse");
    let mut sse: String = (0..40).map(|i| format!("data: {}\r\n\r\n", chunk(&format!("word{i} "), None))).collect();
    sse.push_str(&format!(": a comment\n\ndata: {}\n\ndata: [DONE]\n\n", chunk("", Some("stop"))));
    std::fs::write(&stream, sse).unwrap();
    let groq = component_path("freellm-provider-groq");
    let (ok, out, err) = bench(&[
        groq.as_os_str(),
        groq.as_os_str(),
        "--body".as_ref(),
        body.as_os_str(),
        "--stream-answer".as_ref(),
        stream.as_os_str(),
        "--calls".as_ref(),
        "5".as_ref(),
        "--rounds".as_ref(),
        "2".as_ref(),
    ]);
    assert!(ok, "{out}{err}");
    // 40 chunks, the finishing chunk and [DONE]; the comment is no event.
    assert_eq!(out.matches("the streamed answer frames into 42 events").count(), 2, "{out}");
    let (_, table) = out.split_once("\nstream-normalizer (open, push per event, finish)\n").expect("a stream table");
    assert!(table.starts_with("round  [1] µs/event  [2] µs/event"), "{out}");
    assert_rounds(table, 2, 2);

    // A stream that reports an error is refused by name; one that frames
    // into no event is said to.
    let failing = dir.path().join("failing.sse");
    std::fs::write(&failing, "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n").unwrap();
    let (ok, out, err) = bench(&[
        groq.as_os_str(),
        "--body".as_ref(),
        body.as_os_str(),
        "--stream-answer".as_ref(),
        failing.as_os_str(),
    ]);
    assert!(!ok, "{out}");
    assert!(err.contains("refused the streamed answer") && err.contains("overloaded"), "{err}");
    let empty = dir.path().join("empty.sse");
    std::fs::write(&empty, ": only a comment\n\n").unwrap();
    let (ok, out, err) =
        bench(&[groq.as_os_str(), "--body".as_ref(), body.as_os_str(), "--stream-answer".as_ref(), empty.as_os_str()]);
    assert!(!ok, "{out}");
    assert!(err.contains("the streamed answer frames into no event"), "{err}");
}
