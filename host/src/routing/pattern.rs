//! Route names as glob patterns and target models with placeholders: the
//! matching, the filling in and the load-time checks. Pure string work,
//! imported by the router and by the configuration's validation alike.
//!
//! A `*` in a route name stands for any characters but `/` (a name with a
//! `/` is a concrete `<provider>/<model>` id, never a route). A target's
//! model may hold `{model}` (the whole requested name) and `{1}`, `{2}`, …
//! (what the route name's first, second, … `*` matched).

/// Replaces `{model}` with `requested` and `{N}` with the N-th capture
/// (empty when there is none; load-time validation rules that out).
pub fn fill_placeholders(template: &str, requested: &str, captures: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + requested.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        if name == "model" {
            out.push_str(requested);
        } else if let Some(text) = name.parse::<usize>().ok().and_then(|n| captures.get(n.wrapping_sub(1))) {
            out.push_str(text);
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether a route name is a glob pattern.
pub fn is_glob(name: &str) -> bool {
    name.contains('*')
}

/// Matches `name` against a glob whose `*` stands for any characters but
/// `/`; returns what each `*` matched. Each `*` but the last takes the
/// shortest text that lets the next literal follow (leftmost match), the
/// last takes what remains before the final literal.
pub fn glob_match<'n>(pattern: &str, name: &'n str) -> Option<Vec<&'n str>> {
    if name.contains('/') {
        return None;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return (pattern == name).then(Vec::new);
    }
    let body = name.strip_prefix(first)?;
    if body.len() < last.len() || !body.ends_with(last) {
        return None;
    }
    let body = &body[..body.len() - last.len()];
    let mut captures = Vec::with_capacity(parts.len() - 1);
    let mut at = 0;
    for literal in &parts[1..parts.len() - 1] {
        let found = body[at..].find(literal)?;
        captures.push(&body[at..at + found]);
        at += found + literal.len();
    }
    captures.push(&body[at..]);
    Some(captures)
}

/// Checks a route's name and targets at load: a glob's targets may only
/// refer to as many captures as it has stars; `{model}` and `{N}` appear
/// only in a target's model part; nothing else is in braces. The error
/// names the offending target.
pub fn validate_route(name: &str, targets: &[String]) -> Result<(), String> {
    let stars = name.matches('*').count();
    if name.contains("**") {
        return Err("a route name may not hold `**` (one `*` already matches any characters but `/`)".into());
    }
    for target in targets {
        let model = target.split_once('/').map(|(_, m)| m);
        let provider = target.split_once('/').map_or(target.as_str(), |(p, _)| p);
        if provider.contains(['{', '}', '*']) {
            return Err(format!("target {target:?}: a placeholder or `*` may only stand in the model part"));
        }
        let Some(model) = model else { continue };
        let mut rest = model;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("target {target:?}: unmatched `}}`"));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| format!("target {target:?}: unclosed `{{`"))?;
            let placeholder = &after[..close];
            match placeholder.parse::<usize>() {
                _ if placeholder == "model" => {}
                Ok(n) if n >= 1 && n <= stars => {}
                Ok(n) => {
                    return Err(format!(
                        "target {target:?}: {{{n}}} needs a route name with at least {n} `*` (it has {stars})"
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "target {target:?}: unknown placeholder {{{placeholder}}} (use {{model}} or {{1}}, {{2}}, …)"
                    ));
                }
            }
            rest = &after[close + 1..];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_matches_any_characters_but_a_slash_and_returns_its_captures() {
        assert_eq!(glob_match("team-*", "team-alpha"), Some(vec!["alpha"]));
        assert_eq!(glob_match("team-*", "team-"), Some(vec![""]));
        assert_eq!(glob_match("team-*", "teams"), None);
        assert_eq!(glob_match("*", "anything-at-all"), Some(vec!["anything-at-all"]));
        assert_eq!(glob_match("*", "groq/llama"), None, "a concrete id never matches a glob");
        assert_eq!(glob_match("*-chat-*", "qwen-chat-7b"), Some(vec!["qwen", "7b"]));
        assert_eq!(glob_match("a*b*c", "axxbyybzzc"), Some(vec!["xx", "yybzz"]), "leftmost for all but the last");
        assert_eq!(glob_match("*-fast", "fast"), None);
        assert_eq!(glob_match("exact", "exact"), Some(vec![]));
    }

    #[test]
    fn placeholders_are_filled_with_the_requested_name_and_captures() {
        assert_eq!(fill_placeholders("{model}", "team-alpha", &["alpha"]), "team-alpha");
        assert_eq!(fill_placeholders("{1}-instruct", "team-alpha", &["alpha"]), "alpha-instruct");
        assert_eq!(fill_placeholders("{2}/{1}", "x", &["a", "b"]), "b/a");
        assert_eq!(fill_placeholders("plain", "x", &[]), "plain");
        assert_eq!(fill_placeholders("{3}", "x", &["a"]), "", "a missing capture is empty");
        assert_eq!(fill_placeholders("{0}", "x", &["a"]), "", "captures count from 1");
        assert_eq!(fill_placeholders("odd{", "x", &[]), "odd{");
    }

    #[test]
    fn route_targets_are_checked_at_load_and_the_error_names_the_target() {
        let ok = |name: &str, targets: &[&str]| {
            validate_route(name, &targets.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>())
        };
        assert!(ok("team-*", &["lab/{model}", "groq/llama-3.3-70b-versatile", "lab/{1}", "groq"]).is_ok());
        assert!(ok("chat", &["lab/{model}"]).is_ok());
        let err = ok("chat", &["lab/{1}"]).unwrap_err();
        assert!(err.contains("\"lab/{1}\"") && err.contains("at least 1"), "{err}");
        let err = ok("team-*", &["lab/{name}"]).unwrap_err();
        assert!(err.contains("unknown placeholder {name}"), "{err}");
        assert!(ok("team-*", &["lab/{model"]).unwrap_err().contains("unclosed"));
        assert!(ok("team-*", &["lab/model}"]).unwrap_err().contains("unmatched"));
        assert!(ok("team-*", &["{model}/x"]).unwrap_err().contains("model part"));
        assert!(ok("team-*", &["{model}"]).unwrap_err().contains("model part"));
        assert!(ok("team-**", &["lab"]).unwrap_err().contains("**"));
    }
}
